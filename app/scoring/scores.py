"""Per-sample scores from predicted probabilities (docs/scores.md), vectorised with numpy.

Every function takes P, an (n, k) matrix of probabilities, and y, the given label of each
sample as a class index, -1 when the sample has no label. Label-dependent scores are NaN
for unlabelled samples in the arrays; `ScoreTable.rows` turns them into None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-12
TOP_K = 5


def _check(P: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] < 2:
        raise ValueError(f"P must be an (n, k) matrix with k >= 2, got shape {P.shape}")
    if y is not None:
        y = np.asarray(y, dtype=np.int64)
        if y.shape != (P.shape[0],):
            raise ValueError(f"y must have one label per row of P ({P.shape[0]}), got shape {y.shape}")
        if ((y < -1) | (y >= P.shape[1])).any():
            raise ValueError("labels must be class indices in [0, k) or -1 for unlabelled")
    return P, y


def given_prob(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """p[y] per sample; NaN where y is -1."""
    P, y = _check(P, y)
    labelled = y >= 0
    out = np.full(P.shape[0], np.nan)
    out[labelled] = P[labelled, y[labelled]]
    return out


def loss(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """-log p[y], with p clipped at 1e-12 so a confident miss stays finite."""
    return -np.log(np.clip(given_prob(P, y), EPS, 1.0))


def self_confidence(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """p[y]."""
    return given_prob(P, y)


def normalized_margin(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """p[y] - max over the other classes of p[k]."""
    P, y = _check(P, y)
    labelled = y >= 0
    out = np.full(P.shape[0], np.nan)
    Pl, yl = P[labelled], y[labelled]
    rows = np.arange(len(yl))
    py = Pl[rows, yl]
    others = Pl.copy()
    others[rows, yl] = -np.inf
    out[labelled] = py - others.max(axis=1)
    return out


def top2(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the most and the second most probable class (ties go to the lower index)."""
    P, _ = _check(P)
    # A stable sort on -P keeps the lower index first among equal probabilities.
    order = np.argsort(-P, axis=1, kind="stable")
    return order[:, 0], order[:, 1]


def confusion_margin(P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """p[top1] - p[top2], with the pair (top1, top2) as class indices; needs no label."""
    P, _ = _check(P)
    a, b = top2(P)
    rows = np.arange(P.shape[0])
    return P[rows, a] - P[rows, b], a, b


def entropy(P: np.ndarray) -> np.ndarray:
    """-sum p log p (natural log; 0 log 0 = 0)."""
    P, _ = _check(P)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(P > 0, P * np.log(np.where(P > 0, P, 1.0)), 0.0)
    return -terms.sum(axis=1)


def top_k(P: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """The k most probable class indices per row, most probable first, and their probabilities."""
    P, _ = _check(P)
    k = min(k, P.shape[1])
    idx = np.argsort(-P, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(P, idx, axis=1)


@dataclass
class ScoreTable:
    """Every score of n samples, as arrays; `rows` gives Prediction-ready dicts."""

    classes: list[str]
    y: np.ndarray
    predicted: np.ndarray
    loss: np.ndarray
    self_confidence: np.ndarray
    normalized_margin: np.ndarray
    confusion_margin: np.ndarray
    confusion_a: np.ndarray
    confusion_b: np.ndarray
    entropy: np.ndarray
    top_idx: np.ndarray
    top_probs: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def rows(self) -> list[dict]:
        """One dict per sample with the Prediction columns (None for label scores of unlabelled samples)."""
        c = self.classes
        # tolist() once per array: far faster than indexing numpy scalars row by row.
        y = self.y.tolist()
        pred = self.predicted.tolist()
        lo, sc, nm = self.loss.tolist(), self.self_confidence.tolist(), self.normalized_margin.tolist()
        cm, ca, cb, en = (
            self.confusion_margin.tolist(),
            self.confusion_a.tolist(),
            self.confusion_b.tolist(),
            self.entropy.tolist(),
        )
        ti, tp = self.top_idx.tolist(), self.top_probs.tolist()
        out = []
        for i in range(len(y)):
            labelled = y[i] >= 0
            out.append(
                {
                    "given_label": c[y[i]] if labelled else None,
                    "label": c[pred[i]],
                    "probs": {c[j]: p for j, p in zip(ti[i], tp[i])},
                    "loss": lo[i] if labelled else None,
                    "self_confidence": sc[i] if labelled else None,
                    "normalized_margin": nm[i] if labelled else None,
                    "confusion_margin": cm[i],
                    "confusion_a": c[ca[i]],
                    "confusion_b": c[cb[i]],
                    "entropy": en[i],
                }
            )
        return out


def score(P: np.ndarray, y: np.ndarray, classes: list[str], k: int = TOP_K) -> ScoreTable:
    """Every score of docs/scores.md (but aum, which needs the training logits) for P and y."""
    P, y = _check(P, y)
    if P.shape[1] != len(classes):
        raise ValueError(f"P has {P.shape[1]} columns but there are {len(classes)} classes")
    cm, a, b = confusion_margin(P)
    ti, tp = top_k(P, k)
    return ScoreTable(
        classes=list(classes),
        y=y,
        predicted=a,
        loss=loss(P, y),
        self_confidence=self_confidence(P, y),
        normalized_margin=normalized_margin(P, y),
        confusion_margin=cm,
        confusion_a=a,
        confusion_b=b,
        entropy=entropy(P),
        top_idx=ti,
        top_probs=tp,
    )
