"""The review order: which labelled sample an annotator should see first to fix the most per review.

Finding label errors and choosing which of them to fix first are two questions. The combined
score (app.scoring.combined) answers the first best: it ranks label errors above clean samples
better than any single score (bench/results/label_errors.md, AUPRC). The second is what the
review queue is for: after a budget of reviews the model is retrained, and what counts is how
much the fixes bought. The curation simulation of the same bench retrains after each budget,
and there the errors fixed first should be the ones the out-of-fold models find least likely
under their given label (lowest self-confidence p[y]); ordering the same errors by the margin
or the AUM bought less test accuracy per relabel.

So the review priority is:

1. the run's flagged set (the likely errors, chosen with the combined score), lowest
   self-confidence first;
2. then every other labelled sample by the combined score, most suspicious first.

It is stored as each sample's position in that order, scaled to (0, 1) like the other rank
scores: low = review first; NaN for unlabelled samples. Ties keep the input order.
"""

from __future__ import annotations

import numpy as np

from app.scoring.scores import _check, self_confidence


def review_priority(P: np.ndarray, y: np.ndarray, flagged: np.ndarray, combined: np.ndarray) -> np.ndarray:
    """Position of each labelled sample in the review order, scaled to (0, 1); NaN when unlabelled.

    P: (n, k) out-of-fold probabilities; y: given class index or -1; flagged: (n,) bool, the
    flagged set; combined: (n,) the combined score (low = suspicious; NaN ranks last among the
    unflagged samples).
    """
    P, y = _check(P, y)
    n = len(y)
    flagged = np.asarray(flagged, dtype=bool)
    combined = np.asarray(combined, dtype=np.float64)
    if flagged.shape != (n,) or combined.shape != (n,):
        raise ValueError(f"flagged and combined must have one value per row of P ({n}), "
                         f"got shapes {flagged.shape} and {combined.shape}")
    labelled = y >= 0
    if (flagged & ~labelled).any():
        raise ValueError("an unlabelled sample cannot be flagged")
    sc = self_confidence(P, y)
    # Sort keys, first to last: group (flagged 0, the rest 1), then the key within the group.
    group = np.where(flagged, 0, 1)
    within = np.where(flagged, sc, np.where(np.isnan(combined), np.inf, combined))
    return positions(np.lexsort((within, group)), labelled)


def positions(order: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """Each labelled row's place in `order` (row indexes, all rows), scaled to (0, 1); NaN for
    the unlabelled rows, which are left out of the count."""
    order = order[labelled[order]]
    out = np.full(len(labelled), np.nan)
    m = len(order)
    if m:
        out[order] = (np.arange(m) + 0.5) / m
    return out
