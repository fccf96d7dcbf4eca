"""The per-sample label-error columns a train job stores with its predictions.

For each item of the run: the AUM (train only), the combined score (ranked within each
split), whether the flagged set holds it, its suggested class, the expected gain of reviewing
it (train only, for a run with embeddings) and its review priority.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from app.scoring.combined import combined_score
from app.scoring.flagged import flag_label_errors
from app.scoring.neighbours import twin_suggestions
from app.scoring.priority import review_priority
from app.scoring.review_gain import expected_gain, gain_priority

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
    info: dict[str, Any] = field(default_factory=dict)  # the run's "aum", "flagged" and "review_order" records
    review_gain: np.ndarray | None = None  # app.scoring.review_gain; NaN where not computed


def label_error_columns(
    P: np.ndarray, data: TrainingData, aum_cb: AUMCallback, out_of_fold: bool, notice: Callable[[str], None],
    group: np.ndarray | None = None, Z: np.ndarray | None = None,
) -> LabelErrorColumns:
    """The columns for every item of `data` from the probabilities P and the AUM the callback
    recorded on train (the flagged set and the suggestions are train's; the combined score and
    priority rank within each split)."""
    items, train = data.items, data.train
    positions = pd.Series(np.arange(len(items)), index=items.index)[train.index].to_numpy()
    aum = np.full(len(items), np.nan)
    aum_info = None
    values = aum_cb.aum()
    if len(values) == len(train):
        aum[positions] = values
        aum_info = {"epochs": aum_cb.epochs, "skipped_batches": aum_cb.skipped_batches, "unseen": int(np.isnan(values).sum())}
    else:
        notice(f"AUM not recorded: the train loader iterated over {len(values)} rows, not the {len(train)} train samples")
    if not out_of_fold:
        notice(
            "the flagged label errors come from in-sample probabilities (scoring in_sample): a model that "
            "memorised a wrong label no longer finds it, so out_of_fold scoring flags more of them"
        )
    columns = columns_from(P, items["y"].to_numpy(), items["split"].to_numpy(), data.classes, out_of_fold,
                           aum=aum if aum_info is not None else None, group=group, Z=Z)
    if aum_info is not None:
        columns.info = {"aum": aum_info, **columns.info}
    return columns


def columns_from(P: np.ndarray, y: np.ndarray, split: np.ndarray, classes: list[str], out_of_fold: bool,
                 aum: np.ndarray | None = None, group: np.ndarray | None = None,
                 Z: np.ndarray | None = None) -> LabelErrorColumns:
    """The label-error columns of n items from their probabilities P (n, k), given class
    indexes y (-1 unlabelled), splits and, when the run recorded it, the AUM (NaN where
    absent; None for a run without training dynamics, such as an external run). The flagged
    set and the suggestions are the train split's; the combined score and the priority rank
    within each split. With duplicate groups (app.scoring.neighbours; -1 outside any), a train
    sample whose model prefers a twin's different label to its own is flagged too, suggesting
    the twin's label (info["flagged"]["twin_conflicts"] counts them). With embeddings Z (rows as
    P's), the train split's review priority is the gain order (app.scoring.review_gain: the
    flagged set by expected gain); without, or for the other splits, app.scoring.priority's."""
    n = len(y)
    aum_values = np.full(n, np.nan) if aum is None else np.asarray(aum, dtype=np.float64)
    combined = np.full(n, np.nan)
    for name in np.unique(split):
        rows = np.flatnonzero(split == name)
        combined[rows] = combined_score(P[rows], y[rows], None if aum is None else aum_values[rows])
    flagged = np.zeros(n, dtype=bool)
    suggested = np.full(n, -1, dtype=np.int64)
    positions = np.flatnonzero((split == "train") & (y >= 0))
    # Which samples to flag comes from the combined score (it carries the AUM); how many, from the counts.
    found = flag_label_errors(P[positions], y[positions], score=combined[positions])
    flagged[positions] = found.mask
    suggested[positions] = found.suggested
    twins = 0
    if group is not None:
        twin = twin_suggestions(P, y, group)
        extra = (twin >= 0) & (split == "train") & ~flagged
        flagged[extra] = True
        suggested[extra] = twin[extra]
        twins = int(extra.sum())
    info: dict[str, Any] = {"flagged": {
        "count": found.count + twins,
        "method": found.method,
        "out_of_fold": out_of_fold,
        "pairs": found.pairs(classes),
        "twin_conflicts": twins,
    }}
    gain = np.full(n, np.nan)
    train_gain = expected_gain(P[positions], y[positions], None if Z is None else np.asarray(Z)[positions])
    if train_gain is not None:
        gain[positions] = train_gain
    info["review_order"] = {"order": "gain" if train_gain is not None else "priority",
                            "reason": "embeddings" if train_gain is not None else "no embeddings"}
    priority = np.full(n, np.nan)
    for name in np.unique(split):
        rows = np.flatnonzero(split == name)
        if name == "train" and train_gain is not None:
            priority[rows] = gain_priority(P[rows], y[rows], flagged[rows], combined[rows], gain[rows])
        else:
            priority[rows] = review_priority(P[rows], y[rows], flagged[rows], combined[rows])
    return LabelErrorColumns(aum_values, combined, flagged, suggested, priority, info, gain)
