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

and, within a set of samples some of which have an AUM, the combined score is the probability
rank alone for those that have none (such as the one train sample a loader never showed).

Without any AUM (a run without training dynamics, such as an external run, or a split where no
sample has one) the probabilities are the only source, and two scores that read more out of them
replace the probability rank (app.scoring.noise): the clean log-odds under the noise estimated
from the confident joint (structured, class-to-class noise; the empirical-Bayes shrinkage brings
it back to the self-confidence order when the counts look uniform) and the out-of-fold logit
margin (the AUM's own margin, on a model that never saw the sample; it assumes no noise model):

    combined (no AUM) = (r(clean log-odds) + r(logit margin)) / 2

On logistic-regression probabilities this ranks label errors above clean samples better than
the probability rank and than cleanlab's best quality score in most settings of the label-error
bench (bench/results/label_errors.md, "External runs"). With AUM the formula above is unchanged.
Low is suspicious, like self_confidence, normalized_margin and aum; unlabelled samples get NaN.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from app.scoring.noise import clean_log_odds, logit_margin
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


def noise_rank(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean of the clean log-odds rank and the logit-margin rank (app.scoring.noise): the combined
    score of samples without any AUM. Low = suspicious, NaN unlabelled."""
    P, y = _check(P, y)
    return (unit_rank(clean_log_odds(P, y)) + unit_rank(logit_margin(P, y))) / 2


def combined_score(P_oof: np.ndarray, y: np.ndarray, aum: np.ndarray | None = None) -> np.ndarray:
    """Mean of the probability rank and the AUM rank, the probability rank alone for the samples
    without an AUM; without any AUM (None, or no labelled sample with one), the noise rank.
    Low = suspicious, NaN unlabelled."""
    P, y = _check(P_oof, y)
    labelled = y >= 0
    if aum is not None:
        aum = np.asarray(aum, dtype=np.float64)
        if aum.shape != y.shape:
            raise ValueError(f"aum must have one value per row of P ({len(y)}), got shape {aum.shape}")
    if aum is None or not np.isfinite(aum[labelled]).any():
        return noise_rank(P, y)
    prob_rank = probability_rank(P, y)
    aum_rank = unit_rank(np.where(labelled, aum, np.nan))
    both = np.isfinite(aum_rank) & labelled
    out = prob_rank.copy()
    out[both] = (prob_rank[both] + aum_rank[both]) / 2
    return out
