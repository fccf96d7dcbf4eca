"""One suspicion score per sample from the out-of-fold probabilities and the training dynamics.

The two signals disagree in useful ways: the out-of-fold normalized margin says how strongly a
model that never saw the sample prefers another class; the area under the margin (AUM) says how
hard the final model had to fight the sample's label while it trained on it. They live on
different scales (probability differences in [-1, 1], logit differences without bound), so each
is turned into its rank among the samples that have it, scaled to (0, 1):

    r(x_i) = (rank of x_i among the m samples with a value - 1/2) / m   (ties share their mean rank)

and the combined score is the mean of the two ranks, or the probability rank alone where the
sample has no AUM (not a train sample, or a run without it). Low is suspicious, like
normalized_margin and aum; unlabelled samples get NaN.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from app.scoring.scores import _check, normalized_margin


def unit_rank(x: np.ndarray) -> np.ndarray:
    """Each finite value's rank among the finite values, scaled to (0, 1); NaN stays NaN."""
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    ok = np.isfinite(x)
    m = int(ok.sum())
    if m:
        out[ok] = (rankdata(x[ok], method="average") - 0.5) / m
    return out


def combined_score(P_oof: np.ndarray, y: np.ndarray, aum: np.ndarray | None = None) -> np.ndarray:
    """Mean of the rank of the normalized margin and the rank of the AUM; low = suspicious, NaN unlabelled."""
    P, y = _check(P_oof, y)
    labelled = y >= 0
    prob_rank = unit_rank(normalized_margin(P, y))
    if aum is None:
        return prob_rank
    aum = np.asarray(aum, dtype=np.float64)
    if aum.shape != y.shape:
        raise ValueError(f"aum must have one value per row of P ({len(y)}), got shape {aum.shape}")
    aum_rank = unit_rank(np.where(labelled, aum, np.nan))
    both = np.isfinite(aum_rank) & labelled
    out = prob_rank.copy()
    out[both] = (prob_rank[both] + aum_rank[both]) / 2
    return out
