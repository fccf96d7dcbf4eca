"""Classification metrics of a run on one split (`M` in docs/rest.md), from scikit-learn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> dict[str, Any] | None:
    """accuracy, macro and weighted F1, per-class precision/recall/F1/support and the confusion
    matrix (rows: true class, columns: predicted class) over every class, as plain JSON values.

    y_true and y_pred are class indices into `classes`; an empty split gives None.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape} vs {y_pred.shape}")
    if len(y_true) == 0:
        return None
    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    _, _, macro_f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    _, _, weighted_f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="weighted", zero_division=0
    )
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(macro_f1),
        "weighted_f1": float(weighted_f1),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
        "confusion": {"labels": list(classes), "matrix": cm.astype(int).tolist()},
    }


def summary(metrics: dict[str, Any] | None) -> dict[str, float | None]:
    """Accuracy and macro F1 of the valid and test splits, for run lists."""
    metrics = metrics or {}
    out: dict[str, float | None] = {}
    for split in ("valid", "test"):
        m = metrics.get(split) or {}
        out[f"{split}_accuracy"] = m.get("accuracy")
        out[f"{split}_macro_f1"] = m.get("macro_f1")
    return out
