"""Label-error scores of a multi-label run (docs/scores.md, "Multi-label runs").

P is an (n, k) matrix of per-class probabilities (a sigmoid each, rows need not sum to 1), Y the
given tag sets as an (n, k) 0/1 matrix, `labelled` which rows have a tag set at all (the empty
set is a tag set), and t the per-class decision thresholds (app.evaluation.multilabel).

Per sample and class the self-confidence of the given tag is s[i, k] = p[i, k] where the sample
carries k, 1 - p[i, k] where it does not: a missing tag is a 0 with a high p, a wrong extra tag
a 1 with a low p, and both have a low s. A sample is as suspicious as its worst class:

    self_confidence   = min_k s[i, k]
    normalized_margin = min_k m[i, k], m = p - t where the sample carries k, t - p where not
                        (negative: the model's decision disagrees with a given tag)
    loss              = sum_k -log s[i, k] (the binary cross-entropy)

The flagged set is confident learning applied to each class as its own binary problem: with
the per-class thresholds t1[k] = mean p[k] over the train samples that carry k and
t0[k] = mean (1 - p[k]) over those that do not, a tag is confidently 1 when p >= t1, confidently
0 when 1 - p >= t0 (the more probable value when both), and a given tag is flagged when it is
confidently the other value and the model decides for that value both ways: p on that side of
0.5 (the binary argmax, as cleanlab's filter requires) and of the decision threshold t (so the
suggestion is a set the model predicts). A train sample is flagged when any of its tags is,
and its suggested tag set is its given set with the flagged tags flipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.scoring.combined import unit_rank

EPS = 1e-12
# A probability within this of a confident threshold clears it (as cleanlab's confident joint).
TOLERANCE = 1e-6


def _check(P: np.ndarray, Y: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    P = np.asarray(P, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.int64)
    t = np.asarray(thresholds, dtype=np.float64)
    if P.ndim != 2 or Y.shape != P.shape or t.shape != (P.shape[1],):
        raise ValueError(f"P {P.shape}, Y {Y.shape} and thresholds {t.shape} do not match")
    return P, Y, t


def tag_confidence(P: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """s[i, k]: the probability of the given value of each tag."""
    return np.where(Y == 1, P, 1.0 - P)


@dataclass
class MultiLabelFlags:
    """The flagged tags (n, k) of the train samples, and the estimates behind them."""

    tags: np.ndarray  # (n, k) bool: the given value of this tag looks wrong
    t1: np.ndarray  # (k,) mean p over the samples carrying the class; NaN without any
    t0: np.ndarray  # (k,) mean 1 - p over the samples without it; NaN without any

    @property
    def mask(self) -> np.ndarray:
        return self.tags.any(axis=1)

    def summary(self, classes: list[str], Y: np.ndarray) -> dict[str, Any]:
        """Per class: how many given tags look missing (0 given, confidently 1) and extra."""
        missing = (self.tags & (Y == 0)).sum(axis=0)
        extra = (self.tags & (Y == 1)).sum(axis=0)
        return {"count": int(self.mask.sum()), "method": "per_class_confident_learning",
                "tags": [{"class": c, "missing": int(missing[j]), "extra": int(extra[j])}
                         for j, c in enumerate(classes) if missing[j] or extra[j]]}


def flag_tags(P: np.ndarray, Y: np.ndarray, thresholds: np.ndarray, rows: np.ndarray) -> MultiLabelFlags:
    """The flagged tags of the rows `rows` (bool mask or indexes: the labelled train samples)."""
    P, Y, t = _check(P, Y, thresholds)
    n, k = P.shape
    sel = np.zeros(n, dtype=bool)
    sel[rows] = True
    tags = np.zeros((n, k), dtype=bool)
    t1, t0 = np.full(k, np.nan), np.full(k, np.nan)
    for j in range(k):
        p, y = P[sel, j], Y[sel, j]
        pos, neg = y == 1, y == 0
        if pos.any():
            t1[j] = p[pos].mean()
        if neg.any():
            t0[j] = (1.0 - p[neg]).mean()
        clears1 = p >= t1[j] - TOLERANCE if pos.any() else np.zeros(len(p), dtype=bool)
        clears0 = (1.0 - p) >= t0[j] - TOLERANCE if neg.any() else np.zeros(len(p), dtype=bool)
        # The confident value: whichever clears its threshold, the more probable one when both
        # do (the confident joint's rule).
        conf1 = clears1 & (~clears0 | (p > 0.5))
        conf0 = clears0 & (~clears1 | (p <= 0.5))
        # And the model must decide for that value, both as a binary argmax and under the
        # class's decision threshold t, so that the suggested set is one the model predicts.
        wrong = (pos & conf0 & (p <= 0.5) & (p < t[j])) | (neg & conf1 & (p > 0.5) & (p >= t[j]))
        tags[np.flatnonzero(sel)[wrong], j] = True
    return MultiLabelFlags(tags, t1, t0)


@dataclass
class MultiLabelScores:
    """Every per-sample column of a multi-label run (NaN where a score needs a tag set)."""

    self_confidence: np.ndarray
    normalized_margin: np.ndarray
    loss: np.ndarray
    confusion_margin: np.ndarray  # min_k |p - t|: how near the least certain class is to its decision
    confusion_a: np.ndarray  # the class of that least certain decision
    confusion_b: np.ndarray  # the second least certain
    entropy: np.ndarray  # sum over classes of the binary entropy
    combined: np.ndarray
    flagged: np.ndarray
    suggested: np.ndarray  # (n, k) 0/1: the suggested tag set (the given one where not flagged)
    priority: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def multilabel_scores(P: np.ndarray, Y: np.ndarray, labelled: np.ndarray, split: np.ndarray,
                      thresholds: np.ndarray, classes: list[str]) -> MultiLabelScores:
    """The columns of n samples; the flagged set is the labelled train samples'; the combined
    score and the priority rank within each split."""
    P, Y, t = _check(P, Y, thresholds)
    labelled = np.asarray(labelled, dtype=bool)
    split = np.asarray(split)
    n = len(P)
    s = tag_confidence(P, Y)
    m = np.where(Y == 1, P - t[None, :], t[None, :] - P)

    def labelled_only(values: np.ndarray) -> np.ndarray:
        return np.where(labelled, values, np.nan)

    sc = labelled_only(s.min(axis=1))
    nm = labelled_only(m.min(axis=1))
    loss = labelled_only(-np.log(np.clip(s, EPS, 1.0)).sum(axis=1))
    distance = np.abs(P - t[None, :])
    order = np.argsort(distance, axis=1, kind="stable")
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(P, EPS, 1 - EPS)
        entropy = -(q * np.log(q) + (1 - q) * np.log(1 - q)).sum(axis=1)
    train = labelled & (split == "train")
    flags = flag_tags(P, Y, t, train)
    flagged = flags.mask
    suggested = np.where(flags.tags, 1 - Y, Y)
    combined = np.full(n, np.nan)
    priority = np.full(n, np.nan)
    for name in np.unique(split):
        rows = np.flatnonzero((split == name) & labelled)
        if not len(rows):
            continue
        combined[rows] = (unit_rank(sc[rows]) + unit_rank(nm[rows])) / 2
        # Flagged first, lowest self-confidence first; then the rest by the combined score.
        keys = np.lexsort((np.where(flagged[rows], sc[rows], combined[rows]), ~flagged[rows]))
        priority[rows[keys]] = (np.arange(len(rows)) + 0.5) / len(rows)
    info = {"flagged": {**flags.summary(classes, Y), "out_of_fold": None}}
    return MultiLabelScores(sc, nm, loss, distance[np.arange(n), order[:, 0]], order[:, 0], order[:, 1], entropy,
                            combined, flagged, suggested, priority, info)
