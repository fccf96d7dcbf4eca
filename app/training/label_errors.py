"""The per-sample label-error columns a train job stores with its predictions.

For each item of the run: the AUM (train only), the combined score (ranked within each
split), whether the flagged set holds it, its suggested class and its review priority.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from app.scoring.combined import combined_score
from app.scoring.flagged import flag_label_errors
from app.scoring.priority import review_priority

if TYPE_CHECKING:
    from app.training.aum import AUMCallback
    from app.training.data import TrainingData


@dataclass
class LabelErrorColumns:
    aum: np.ndarray
    combined: np.ndarray
    flagged: np.ndarray
    suggested: np.ndarray  # class index, -1: none
    priority: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)  # the run's "aum" and "flagged" records


def label_error_columns(
    P: np.ndarray, data: TrainingData, aum_cb: AUMCallback, out_of_fold: bool, notice: Callable[[str], None]
) -> LabelErrorColumns:
    """The columns for every item of `data` from the probabilities P (the flagged set and the
    suggestions are train's; the combined score and priority rank within each split)."""
    items, train = data.items, data.train
    y, split = items["y"].to_numpy(), items["split"].to_numpy()
    positions = pd.Series(np.arange(len(items)), index=items.index)[train.index].to_numpy()
    info: dict[str, Any] = {}
    aum = np.full(len(items), np.nan)
    values = aum_cb.aum()
    if len(values) == len(train):
        aum[positions] = values
        info["aum"] = {"epochs": aum_cb.epochs, "skipped_batches": aum_cb.skipped_batches, "unseen": int(np.isnan(values).sum())}
    else:
        notice(f"AUM not recorded: the train loader iterated over {len(values)} rows, not the {len(train)} train samples")
    combined = np.full(len(items), np.nan)
    for name in np.unique(split):
        rows = np.flatnonzero(split == name)
        combined[rows] = combined_score(P[rows], y[rows], aum[rows])

    flagged = np.zeros(len(items), dtype=bool)
    suggested = np.full(len(items), -1, dtype=np.int64)
    if not out_of_fold:
        notice(
            "the flagged label errors come from in-sample probabilities (scoring in_sample): a model that "
            "memorised a wrong label no longer finds it, so out_of_fold scoring flags more of them"
        )
    # Which samples to flag comes from the combined score (it carries the AUM); how many, from the counts.
    found = flag_label_errors(P[positions], y[positions], score=combined[positions])
    flagged[positions] = found.mask
    suggested[positions] = found.suggested
    info["flagged"] = {
        "count": found.count,
        "method": found.method,
        "out_of_fold": out_of_fold,
        "pairs": found.pairs(data.classes),
    }
    priority = np.full(len(items), np.nan)
    for name in np.unique(split):
        rows = np.flatnonzero(split == name)
        priority[rows] = review_priority(P[rows], y[rows], flagged[rows], combined[rows])
    return LabelErrorColumns(aum, combined, flagged, suggested, priority, info)
