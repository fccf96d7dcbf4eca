"""Suspicion from the probabilities alone, for a run without training dynamics (no AUM).

A run that brings its own predictions (app.runs.external), or a train run whose AUM was not
recorded, has only the probabilities P. Two scores, both low = suspicious, take the AUM's place
in the combined score (app.scoring.combined):

- The clean log-odds under the estimated noise. Which label errors exist depends on how labels
  were corrupted: if a wrong label is as likely to come from any class, a sample is suspicious
  when p[y] is low (self-confidence); if class a's samples are mostly mislabelled as b, a sample
  given b that looks like a is far more suspicious than one that looks like c. With T[i, j] the
  probability that a sample of true class j was given label i, and the model's p as the
  probability of each true class, the probability that a sample given y is labelled right is

      p[y] T[y, y] / sum_j p[j] T[y, j]

  and the score is its log-odds, log(p[y] T[y, y]) - log(sum_{j != y} p[j] T[y, j]).
  T comes from the confident joint (app.scoring.joint): the calibrated joint gives each class's
  estimated number of wrong labels (row totals off the diagonal) and the uncalibrated counts C
  say where they come from. Those counts are few (tens per class) and hold the model's own
  mistakes next to the label errors, so each row's shares are shrunk towards "any other class
  alike" (a Dirichlet prior), with a strength A chosen by empirical Bayes: the A that makes the
  off-diagonal rows of C most likely under a Dirichlet-multinomial. Rows that look like uniform
  draws give a large A, and the score becomes, within each class, the self-confidence order
  (class-conditional rates still weigh the classes against each other); rows concentrated on a
  few pairs give a small A, and the score follows the estimated pairs.
- The out-of-fold logit margin, log p[y] - max_{k != y} log p[k]: the margin the AUM averages
  over training, read off a model that never saw the sample (for a softmax model it is exactly
  logit[y] - max_{k != y} logit[k]). It assumes no noise model, so it holds where the estimated
  T is wrong: a weak model whose off-diagonal counts are mostly its own confusions between
  neighbouring classes, which the noise model reads as structured noise.

Both are NaN for unlabelled samples. Probabilities are clipped at 1e-12 before the logarithms,
like the loss.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

from app.scoring.joint import calibrate_joint, confident_joint, per_class_thresholds
from app.scoring.scores import EPS, _check

# Candidate Dirichlet strengths for the empirical-Bayes choice: 0.01 to 10^6, 20 per decade.
STRENGTHS = 10.0 ** np.arange(-2.0, 6.0001, 0.05)
TINY = 1e-300


def dirichlet_strength(off: np.ndarray) -> float:
    """The prior strength A (of a symmetric Dirichlet over the other classes) under which the
    off-diagonal counts `off` (k x k, diagonal ignored) are most likely, rows as independent
    Dirichlet-multinomial draws; the smallest such A among STRENGTHS on ties (no counts: the first)."""
    off = np.asarray(off, dtype=np.float64).copy()
    k = off.shape[0]
    np.fill_diagonal(off, 0.0)
    totals = off.sum(axis=1)
    totals = totals[totals > 0]
    cells = off[off > 0]
    a = STRENGTHS / (k - 1)
    loglik = (len(totals) * gammaln(STRENGTHS) - gammaln(STRENGTHS[:, None] + totals[None, :]).sum(axis=1)
              + (gammaln(cells[None, :] + a[:, None]) - gammaln(a)[:, None]).sum(axis=1))
    return float(STRENGTHS[int(np.argmax(loglik))])


def noise_transition(P: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """T (k x k), T[i, j] = estimated probability that a sample of true class j was given label i
    (a class that is nobody's estimated true class has a zero column), and the strength A."""
    P, y = _check(P, y)
    k = P.shape[1]
    labelled = y >= 0
    C, _ = confident_joint(P, y, per_class_thresholds(P, y))
    calibrated = calibrate_joint(C, np.bincount(y[labelled], minlength=k))
    off = C.astype(np.float64)
    np.fill_diagonal(off, 0.0)
    strength = dirichlet_strength(off)
    shares = (off + strength / (k - 1)) / (off.sum(axis=1, keepdims=True) + strength)
    np.fill_diagonal(shares, 0.0)
    wrong = calibrated.sum(axis=1) - np.diag(calibrated)
    Q = shares * wrong[:, None]  # estimated (given, true) counts, the off-diagonal smoothed
    Q[np.diag_indices(k)] = np.diag(calibrated)
    columns = Q.sum(axis=0)
    T = np.divide(Q, columns[None, :], out=np.zeros_like(Q), where=columns[None, :] > 0)
    return T, strength


def clean_log_odds(P: np.ndarray, y: np.ndarray, T: np.ndarray | None = None) -> np.ndarray:
    """log(p[y] T[y, y]) - log(sum_{j != y} p[j] T[y, j]) per labelled sample (NaN unlabelled);
    T defaults to noise_transition(P, y)."""
    P, y = _check(P, y)
    if T is None:
        T, _ = noise_transition(P, y)
    out = np.full(len(y), np.nan)
    rows = np.flatnonzero(y >= 0)
    if not len(rows):
        return out
    Pl = np.clip(P[rows], EPS, 1.0)
    W = Pl * T[y[rows]]
    right = W[np.arange(len(rows)), y[rows]]
    wrong = W.sum(axis=1) - right
    out[rows] = np.log(np.maximum(right, TINY)) - np.log(np.maximum(wrong, TINY))
    return out


def logit_margin(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """log p[y] - max_{k != y} log p[k] per labelled sample (p clipped at 1e-12); NaN unlabelled."""
    P, y = _check(P, y)
    out = np.full(len(y), np.nan)
    rows = np.flatnonzero(y >= 0)
    if not len(rows):
        return out
    L = np.log(np.clip(P[rows], EPS, 1.0))
    idx = np.arange(len(rows))
    given = L[idx, y[rows]]
    L[idx, y[rows]] = -np.inf
    out[rows] = given - L.max(axis=1)
    return out
