"""One suspicion score per sample from the out-of-fold probabilities and the training dynamics.

Two sources, each blind where the other sees, with equal weight:

- the probabilities of a model that never saw the sample (out-of-fold), through two scores that
  fail in different places: self-confidence p[y] (the loss order: how unlikely the given label
  is) and the normalized margin p[y] - max_{k != y} p[k] (how strongly another class is
  preferred). The margin finds structured, class-to-class noise that a strong model sees; it
  also punishes samples that are clean but ambiguous, which a weaker model produces in numbers,
  where self-confidence holds up better. Their mean is never far from the better of the two;
- the area under the margin (AUM): how hard the final model had to fight the sample's label
  while it trained on it (a memorised wrong label keeps a low AUM even once its loss is low).

The scores live on different scales (probabilities, logit differences without bound), so each is
turned into its rank among the samples that have it, scaled to (0, 1):

    r(x_i) = (rank of x_i among the m samples with a value - 1/2) / m   (ties share their mean rank)

    probability rank = (r(self_confidence) + r(normalized_margin)) / 2
    combined         = (probability rank + r(aum)) / 2

and the combined score is the probability rank alone where the sample has no AUM (not a train
sample, or a run without it). Low is suspicious, like self_confidence, normalized_margin and
aum; unlabelled samples get NaN.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from app.scoring.scores import _check, normalized_margin, self_confidence


def unit_rank(x: np.ndarray) -> np.ndarray:
    """Each finite value's rank among the finite values, scaled to (0, 1); NaN stays NaN."""
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    ok = np.isfinite(x)
    m = int(ok.sum())
    if m:
        out[ok] = (rankdata(x[ok], method="average") - 0.5) / m
    return out


def probability_rank(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean of the self-confidence rank and the normalized-margin rank; low = suspicious, NaN unlabelled."""
    P, y = _check(P, y)
    return (unit_rank(self_confidence(P, y)) + unit_rank(normalized_margin(P, y))) / 2


def combined_score(P_oof: np.ndarray, y: np.ndarray, aum: np.ndarray | None = None) -> np.ndarray:
    """Mean of the probability rank and the AUM rank; the probability rank alone without AUM.
    Low = suspicious, NaN unlabelled."""
    P, y = _check(P_oof, y)
    labelled = y >= 0
    prob_rank = probability_rank(P, y)
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
