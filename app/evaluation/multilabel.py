"""Metrics of a multi-label run on one split, and the per-class decision thresholds they use.

A multi-label model gives each class its own probability (a sigmoid per class); a sample is
predicted to carry class k when p[k] >= t[k]. The thresholds t are chosen on the labelled
valid samples, class by class (`choose_thresholds`), and then apply to every split. Metrics
come from scikit-learn on the 0/1 indicator matrices (docs/rest.md, "Multi-label metrics").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    hamming_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
)

DEFAULT_THRESHOLD = 0.5


def choose_thresholds(Y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """One threshold per class: the one that maximises the class's F1 on (Y, P), the labelled
    valid samples. Among equally good thresholds the highest wins (fewest positives); a class
    without a positive in Y (or without any sample) keeps DEFAULT_THRESHOLD, as F1 is then 0
    whatever the threshold."""
    Y = np.asarray(Y, dtype=np.int64)
    P = np.asarray(P, dtype=np.float64)
    k = P.shape[1]
    out = np.full(k, DEFAULT_THRESHOLD)
    for j in range(k):
        if len(Y) == 0 or Y[:, j].sum() == 0:
            continue
        precision, recall, thresholds = precision_recall_curve(Y[:, j], P[:, j])
        # precision/recall have one more entry than thresholds (recall 0 at the end).
        p, r = precision[:-1], recall[:-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
        best = np.flatnonzero(f1 == f1.max())
        out[j] = float(thresholds[best[-1]])
    return out


def predict_sets(P: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The 0/1 indicator matrix of the predicted tag sets: p[k] >= t[k]."""
    return (np.asarray(P, dtype=np.float64) >= np.asarray(thresholds, dtype=np.float64)[None, :]).astype(np.int64)


def swap_counts(Y: np.ndarray, Y_pred: np.ndarray) -> np.ndarray:
    """(k, k) counts: entry [a, b] is the number of samples where the model predicted a that the
    true set lacks (a false positive) while missing b that the true set has (a false negative):
    which labels it puts in place of which. The diagonal is 0."""
    fp = ((Y_pred == 1) & (Y == 0)).astype(np.int64)
    fn = ((Y_pred == 0) & (Y == 1)).astype(np.int64)
    return fp.T @ fn


def multilabel_metrics(Y: np.ndarray, P: np.ndarray, thresholds: np.ndarray, classes: Sequence[str]) -> dict[str, Any] | None:
    """The metrics of the labelled samples Y (n, k 0/1) with probabilities P (n, k) under the
    thresholds; None for an empty split. `accuracy` is the exact-match ratio (the whole set
    right), so run lists compare multi-label runs by the same key as single-label ones."""
    Y = np.asarray(Y, dtype=np.int64)
    P = np.asarray(P, dtype=np.float64)
    if Y.shape != P.shape:
        raise ValueError(f"Y and P differ in shape: {Y.shape} vs {P.shape}")
    if len(Y) == 0:
        return None
    Y_pred = predict_sets(P, thresholds)
    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(Y, Y_pred, labels=labels, zero_division=0)

    def averaged(average: str) -> float:
        # A sample whose empty set is predicted empty is right: its F1 counts 1 (zero_division).
        return float(f1_score(Y, Y_pred, average=average, zero_division=1 if average == "samples" else 0))

    per_class = {}
    for i, c in enumerate(classes):
        # Average precision ranks by probability, so it needs no threshold; undefined without positives.
        ap = float(average_precision_score(Y[:, i], P[:, i])) if Y[:, i].sum() > 0 else None
        per_class[c] = {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i]),
                        "average_precision": ap, "threshold": float(thresholds[i])}
    exact = float(accuracy_score(Y, Y_pred))
    return {
        "multilabel": True,
        "accuracy": exact,
        "exact_match": exact,
        "hamming_loss": float(hamming_loss(Y, Y_pred)),
        "micro_f1": averaged("micro"),
        "macro_f1": averaged("macro"),
        "weighted_f1": averaged("weighted"),
        "samples_f1": averaged("samples"),
        "per_class": per_class,
        # Beside the pairs, each class's plain counts: samples that miss it (false negatives)
        # and samples that wrongly carry it (false positives), whatever else the set got wrong.
        "swaps": {"labels": list(classes), "matrix": swap_counts(Y, Y_pred).tolist(),
                  "missed": ((Y_pred == 0) & (Y == 1)).sum(axis=0).tolist(),
                  "extra": ((Y_pred == 1) & (Y == 0)).sum(axis=0).tolist()},
    }
