"""One suspicion score per sample from the out-of-fold probabilities and the training dynamics.

Two signals from two different models, each blind where the other sees:

- self-confidence p[y] out-of-fold (the loss order): how likely the given label is to a model
  that never saw the sample;
- the area under the margin (AUM): how hard the final model had to fight the sample's label
  while it trained on it (a memorised wrong label keeps a low AUM even once its loss is low).

They live on different scales (a probability in [0, 1], a logit difference without bound), so
each is turned into its rank among the samples that have it, scaled to (0, 1):

    r(x_i) = (rank of x_i among the m samples with a value - 1/2) / m   (ties share their mean rank)

and the combined score is the mean of the two ranks, or the self-confidence rank alone where
the sample has no AUM (not a train sample, or a run without it). Low is suspicious, like
self_confidence and aum; unlabelled samples get NaN.

Why self-confidence and not the normalized margin p[y] - max_{k != y} p[k]: the margin also
punishes a sample that is clean but ambiguous (two classes close together, the given one just
ahead), which a weaker model produces in numbers; the label-error bench found the margin rank the
weaker half on every setting where the model is unsure, and no better than self-confidence once
AUM is added, where AUM already brings the structured, class-to-class part of the evidence.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from app.scoring.scores import _check, self_confidence


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
    """Mean of the rank of the self-confidence and the rank of the AUM; the self-confidence rank
    alone without AUM. Low = suspicious, NaN unlabelled."""
    P, y = _check(P_oof, y)
    labelled = y >= 0
    prob_rank = unit_rank(self_confidence(P, y))
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
