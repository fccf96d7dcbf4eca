"""Confident-learning counts from (out-of-fold) probabilities P and given labels y.

Shared by the flagged set (app.scoring.flagged) and the combined score of a run without training
dynamics (app.scoring.noise, app.scoring.combined):

1. Per-class thresholds: t_j is the mean of p_j over the samples given class j. A class that no
   sample was given has no threshold (NaN) and is never a sample's confident class.
2. Confident joint C[i, j]: the labelled samples given i whose confident class is j, where a
   sample's confident class is, among the classes with p_j >= t_j, the most probable one
   (samples with no class above its threshold are not counted).
3. Calibration: each row of C rescaled to the number of samples given that class, so the whole
   sums to the number of labelled samples: estimated counts of (given, true) pairs.
"""

from __future__ import annotations

import numpy as np

from app.scoring.scores import _check

# Tolerance for p_j >= t_j: t_j is a mean of floats, so the sample that equals it in exact
# arithmetic may sit a rounding error below it.
THRESHOLD_TOLERANCE = 1e-9


def per_class_thresholds(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """t_j = mean p_j over the samples given j; NaN for a class no sample was given."""
    P, y = _check(P, y)
    k = P.shape[1]
    t = np.full(k, np.nan)
    for j in range(k):
        given = y == j
        if given.any():
            t[j] = P[given, j].mean()
    return t


def confident_classes(P: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Each row's most probable class among those at or above their threshold; -1 when none is."""
    P = np.asarray(P, dtype=np.float64)
    t = np.where(np.isnan(thresholds), np.inf, thresholds)
    above = P >= t[None, :] - THRESHOLD_TOLERANCE
    masked = np.where(above, P, -np.inf)
    best = masked.argmax(axis=1)  # the lowest index among equal probabilities
    return np.where(above.any(axis=1), best, -1)


def confident_joint(P: np.ndarray, y: np.ndarray, thresholds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """C[i, j]: labelled samples given i whose confident class is j; also each sample's confident class."""
    P, y = _check(P, y)
    k = P.shape[1]
    if thresholds is None:
        thresholds = per_class_thresholds(P, y)
    conf = confident_classes(P, thresholds)
    conf[y < 0] = -1
    counted = conf >= 0
    C = np.zeros((k, k), dtype=np.int64)
    np.add.at(C, (y[counted], conf[counted]), 1)
    return C, conf


def calibrate_joint(C: np.ndarray, given_counts: np.ndarray) -> np.ndarray:
    """C with each row rescaled to its class's given-label count (rows without counts stay zero),
    so the whole sums to the number of labelled samples."""
    C = np.asarray(C, dtype=np.float64)
    counts = np.asarray(given_counts, dtype=np.float64)
    row = C.sum(axis=1)
    out = np.zeros_like(C)
    ok = row > 0
    out[ok] = C[ok] / row[ok, None] * counts[ok, None]
    total = out.sum()
    if total > 0:
        # Rows whose class was given but never confidently counted cannot happen (the sample
        # with the highest p_i is at or above the mean); this keeps the total exact regardless.
        out *= counts.sum() / total
    return out
