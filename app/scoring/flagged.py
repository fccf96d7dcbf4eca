"""The flagged set: which labelled samples are likely label errors, and what they should be.

A confident-learning estimate from (out-of-fold) predicted probabilities P and given labels y:

1. Per-class thresholds: t_j is the mean of p_j over the samples given class j (how confident
   the model is, on average, about the samples that carry label j). A class that no sample was
   given has no threshold (NaN) and is never a sample's confident class.
2. Confident joint C[i, j]: the samples given i whose confident class is j, where a sample's
   confident class is, among the classes with p_j >= t_j, the most probable one (samples with
   no class above its threshold are not counted).
3. Calibration: each row of C is rescaled to the number of samples given that class (so the
   whole sums to the number of labelled samples n), which turns counts over the confidently
   counted samples into estimated counts over all of them. The off-diagonal of the calibrated
   joint, `estimated[i, j]`, is the estimated number of samples given i whose true class is j.
   (Steps 1 to 3 are app.scoring.joint's, re-exported here; the combined score of a run
   without training dynamics uses them too.)
4. Flagging (method):
   - "by_score" (the default): how many, from the counts; which ones, from a suspicion score
     (`score`, low = suspicious; the run passes its combined score, which carries the training
     dynamics when the run has them and the noise estimated from these counts when it has not;
     without a score, the combined score of P alone, the latter). The number
     flagged is the geometric mean of two estimates of the error count that bracket it: the
     calibrated off-diagonal total (it assumes the samples with no class above threshold are
     wrong as often as the counted ones, and over-counts when the model is unsure of many) and
     the uncalibrated one, off-diagonal of C (it assumes they are all right, and under-counts
     when the model is sure). The flagged samples are that many with the lowest score among the
     samples whose most probable class is not their given label; each class keeps at least one
     sample. The suggested label is the most probable class.
   - "prune_by_noise_rate": for every pair (i, j), the round(estimated[i, j]) samples given i
     with the largest margin p_j - p_i; the union over pairs. A class always keeps at least one sample.
   - "confident_joint_off_diagonal": the samples counted off the diagonal of C.
   - "both": samples that both "prune_by_noise_rate" and "confident_joint_off_diagonal" flag
     (higher precision, lower recall).
   Under every method a sample whose most probable class is its given label is not flagged:
   the model agrees with the label, whatever the counts say.

Each flagged sample gets a suggested label: its most probable class under "by_score", the class
whose pair selected it (the most probable such class when several did) under "prune_by_noise_rate",
its confident class under "confident_joint_off_diagonal" and "both".
Samples with y == -1 (unlabelled) take no part and are never flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.scoring.joint import (  # noqa: F401  (re-exported: the flagged set's estimates)
    THRESHOLD_TOLERANCE,
    calibrate_joint,
    confident_classes,
    confident_joint,
    per_class_thresholds,
)
from app.scoring.scores import _check

METHODS = ("by_score", "prune_by_noise_rate", "confident_joint_off_diagonal", "both")


@dataclass
class FlaggedSet:
    """The flagged samples of n, their suggested labels, and the estimates behind them (k classes)."""

    mask: np.ndarray  # (n,) bool: flagged as a likely label error
    suggested: np.ndarray  # (n,) int: the suggested class of a flagged sample, -1 elsewhere
    estimated: np.ndarray  # (k, k) float: estimated label errors per (given, true) pair; zero diagonal
    thresholds: np.ndarray  # (k,) float: per-class thresholds, NaN for a class nobody was given
    confident_joint: np.ndarray  # (k, k) int: the uncalibrated confident joint C[given, confident]
    given: np.ndarray  # (n,) int: the given labels the set was computed against (-1: unlabelled)
    method: str

    @property
    def count(self) -> int:
        return int(self.mask.sum())

    def pairs(self, classes: list[str]) -> list[dict]:
        """{"given", "suggested", "estimated", "flagged"} per pair with an estimate or a flag, most first."""
        k = len(classes)
        if self.estimated.shape != (k, k):
            raise ValueError(f"{k} class names for a {self.estimated.shape} estimate")
        flagged = np.zeros((k, k), dtype=np.int64)
        np.add.at(flagged, (self.given[self.mask], self.suggested[self.mask]), 1)
        out = []
        for i in range(k):
            for j in range(k):
                if i == j:
                    continue
                est = float(self.estimated[i, j])
                if flagged[i, j] == 0 and round(est) == 0:
                    continue
                out.append({"given": classes[i], "suggested": classes[j], "estimated": round(est, 2), "flagged": int(flagged[i, j])})
        out.sort(key=lambda d: (-d["flagged"], -d["estimated"], classes.index(d["given"]), classes.index(d["suggested"])))
        return out


def round_preserving_rows(M: np.ndarray) -> np.ndarray:
    """Integers that keep each row's (rounded) total: floors, then the largest remainders round up."""
    M = np.asarray(M, dtype=np.float64)
    floor = np.floor(M).astype(np.int64)
    out = floor.copy()
    for r in range(M.shape[0]):
        short = int(round(M[r].sum())) - int(floor[r].sum())
        if short > 0:
            order = np.argsort(-(M[r] - floor[r]), kind="stable")
            out[r, order[:short]] += 1
    return out


def flag_label_errors(
    P: np.ndarray, y: np.ndarray, *, method: str = "by_score", score: np.ndarray | None = None
) -> FlaggedSet:
    """The likely label errors among the labelled rows of P (n, k) given labels y (-1: unlabelled).

    score: one value per row, low = suspicious (the combined score); "by_score" uses it to choose
    which samples to flag (NaN ranks last), the other methods ignore it. Default: the combined
    score of P alone (without AUM: app.scoring.combined.noise_rank)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    P, y = _check(P, y)
    n, k = P.shape
    labelled = y >= 0
    if np.isnan(P[labelled]).any():
        raise ValueError("the labelled rows of P must have probabilities (no NaN)")
    given_counts = np.bincount(y[labelled], minlength=k)

    thresholds = per_class_thresholds(P, y)
    C, conf = confident_joint(P, y, thresholds)
    calibrated = calibrate_joint(C, given_counts)
    estimated = calibrated.copy()
    np.fill_diagonal(estimated, 0.0)

    mask = np.zeros(n, dtype=bool)
    suggested = np.full(n, -1, dtype=np.int64)
    if method == "by_score":
        if score is None:
            from app.scoring.combined import combined_score

            score = combined_score(P, y)
        score = np.asarray(score, dtype=np.float64)
        if score.shape != y.shape:
            raise ValueError(f"score must have one value per row of P ({n}), got shape {score.shape}")
        count = flag_count(C, calibrated)
        mask = _lowest_scores(P, y, score, count, given_counts)
        suggested[mask] = P[mask].argmax(axis=1)
    if method in ("prune_by_noise_rate", "both"):
        pbnr, pbnr_suggested = _prune_by_noise_rate(P, y, calibrated, given_counts)
    if method in ("confident_joint_off_diagonal", "both"):
        off = labelled & (conf >= 0) & (conf != y)
    if method == "prune_by_noise_rate":
        mask, suggested = pbnr, pbnr_suggested
    elif method == "confident_joint_off_diagonal":
        mask = off
        suggested[off] = conf[off]
    elif method == "both":
        mask = pbnr & off
        suggested[mask] = conf[mask]

    # The model agrees with the given label: not an error, whatever the counts say.
    agrees = P.argmax(axis=1) == y
    mask = mask & ~agrees
    suggested[~mask] = -1
    return FlaggedSet(
        mask=mask, suggested=suggested, estimated=estimated, thresholds=thresholds, confident_joint=C, given=y, method=method
    )


def flag_count(C: np.ndarray, calibrated: np.ndarray) -> int:
    """How many samples "by_score" flags: the geometric mean of the uncalibrated and the calibrated
    off-diagonal totals of the confident joint, rounded."""
    C = np.asarray(C, dtype=np.float64)
    calibrated = np.asarray(calibrated, dtype=np.float64)
    uncal = C.sum() - np.trace(C)
    cal = calibrated.sum() - np.trace(calibrated)
    return int(round(float(np.sqrt(max(uncal, 0.0) * max(cal, 0.0)))))


def _lowest_scores(P: np.ndarray, y: np.ndarray, score: np.ndarray, count: int, given_counts: np.ndarray) -> np.ndarray:
    """The `count` samples with the lowest score among those whose most probable class is not their
    given label (ties: the earlier sample; NaN last), leaving every class at least one sample."""
    n = len(y)
    candidates = np.flatnonzero((y >= 0) & (P.argmax(axis=1) != y))
    key = np.where(np.isnan(score[candidates]), np.inf, score[candidates])
    candidates = candidates[np.argsort(key, kind="stable")]
    room = np.maximum(np.asarray(given_counts, dtype=np.int64) - 1, 0)
    mask = np.zeros(n, dtype=bool)
    taken = 0
    for i in candidates:
        if taken >= count:
            break
        if room[y[i]] == 0:
            continue
        room[y[i]] -= 1
        mask[i] = True
        taken += 1
    return mask


def _prune_by_noise_rate(P: np.ndarray, y: np.ndarray, calibrated: np.ndarray, given_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pair (i, j), the n_ij samples given i with the largest p_j - p_i; the suggestion is the
    most probable class among the pairs that chose a sample."""
    n, k = P.shape
    counts = round_preserving_rows(calibrated)
    np.fill_diagonal(counts, 0)
    # Keep at least one sample per class: scale a row's removals down when they would take all.
    for i in range(k):
        room = max(int(given_counts[i]) - 1, 0)
        total = int(counts[i].sum())
        if total > room:
            counts[i] = round_preserving_rows((counts[i] * (room / total))[None, :])[0]
    mask = np.zeros(n, dtype=bool)
    suggested = np.full(n, -1, dtype=np.int64)
    best_p = np.full(n, -np.inf)
    for i in range(k):
        members = np.flatnonzero(y == i)
        for j in range(k):
            m = int(counts[i, j])
            if i == j or m == 0:
                continue
            margin = P[members, j] - P[members, i]
            # Stable sort on -margin: equal margins go to the earlier sample.
            chosen = members[np.argsort(-margin, kind="stable")[:m]]
            better = P[chosen, j] > best_p[chosen]
            suggested[chosen[better]] = j
            best_p[chosen[better]] = P[chosen[better], j]
            mask[chosen] = True
    return mask, suggested
