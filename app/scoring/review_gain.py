"""Expected gain of a review: how much fixing a sample's label should help its neighbours.

Finding label errors (the flagged set, app.scoring.flagged) and choosing which of them to fix
first are two questions. Among errors found equally well, the ones worth fixing first are
those whose wrong label misleads the most neighbours in the model's embedding space: an
isolated error the model already overrides buys little when fixed, an error inside a cluster
of samples of its true class (or on the border the model draws between two classes) buys more.

The relabel value of a train sample is what moving its label from the given class y to the
suggested class (the out-of-fold model's argmax) adds to its KNN-Shapley value (Jia et al.
2019, the unweighted K-nearest-neighbour utility) with the other train samples as reference
points, each with its out-of-fold predicted class as its label. A sample at rank r among a
reference point t's neighbours has Shapley value s_r = s_{r+1} + (1[y_r = y_t] - 1[y_{r+1} = y_t])
min(K, r) / (K r), and s_{r+1} does not depend on y_r, so the relabel changes it by

    (1[suggested = y_t] - 1[y = y_t]) x min(K, r) / (K r)

summed over the reference points that have the sample among their DEPTH nearest (itself left
out). Weighted by the chance that the label is wrong, 1 - p[y] out of fold:

    expected gain = (1 - p[y]) x relabel value        (higher = review first)

The gain order reviews the flagged set by expected gain, highest first, then every other
labelled sample by the combined score, like the review priority (app.scoring.priority), which
is the fallback for a run without embeddings (an external run whose file brought none, runs
stored before the gain existed). bench/curation.py measures what it buys (bench/results/curation.md).
"""

from __future__ import annotations

import numpy as np

from app.scoring.scores import _check, self_confidence

K_NEIGHBOURS = 10
DEPTH = 50
CHUNK = 65_536
# Above this many rows the sum over reference points is estimated from this many of them,
# drawn at random (seeded) and scaled up: the neighbour search then costs a search of these
# rows, not of all (time and memory bounded at a million samples), and a sample's value is
# an unbiased estimate of the full sum.
MAX_REFERENCES = 100_000


def relabel_value(Z: np.ndarray, y: np.ndarray, suggested: np.ndarray, reference: np.ndarray,
                  k: int = K_NEIGHBOURS, depth: int = DEPTH, threads: int | None = None) -> np.ndarray:
    """Per row of Z (n, d): the change of its KNN-Shapley value when its label moves from y to
    `suggested`, over the other rows as reference points labelled `reference` (their
    predicted class). Rows with suggested == y get 0. Over MAX_REFERENCES rows, the reference
    points are a seeded random MAX_REFERENCES of them, their sum scaled by n / MAX_REFERENCES."""
    from app.scoring.neighbours import nearest

    Z = np.asarray(Z, dtype=np.float32)
    y, suggested, reference = (np.asarray(a, dtype=np.int64) for a in (y, suggested, reference))
    n = len(y)
    out = np.zeros(n)
    if n < 2:
        return out
    refs = None
    if n > MAX_REFERENCES:
        refs = np.sort(np.random.default_rng(0).choice(n, MAX_REFERENCES, replace=False))
    # Each reference row's nearest other rows, nearest first.
    _, idx, _ = nearest(Z, depth, threads, queries=refs)
    labels = reference if refs is None else reference[refs]
    d = idx.shape[1]
    r = np.arange(1, d + 1)
    w = np.minimum(k, r) / (k * r)
    # In blocks of reference rows, so that the (rows, depth) temporaries stay small at a million samples.
    for start in range(0, len(idx), CHUNK):
        block = idx[start:start + CHUNK]
        ref = labels[start:start + CHUNK, None]
        delta = (suggested[block] == ref).astype(np.float64) - (y[block] == ref).astype(np.float64)
        out += np.bincount(block.ravel(), weights=(delta * w[None, :]).ravel(), minlength=n)
    return out if refs is None else out * (n / len(refs))


def expected_gain(P: np.ndarray, y: np.ndarray, Z: np.ndarray | None, threads: int | None = None) -> np.ndarray | None:
    """(1 - p[y]) x relabel value for every labelled row (NaN unlabelled); None without embeddings.
    P: out-of-fold probabilities (n, k); y: given class or -1; Z: embeddings (n, d) or None.
    Unlabelled rows are neither relabelled nor reference points."""
    P, y = _check(P, y)
    if Z is None:
        return None
    Z = np.asarray(Z)
    if Z.ndim != 2 or len(Z) != len(y) or not np.isfinite(Z).all():
        return None
    labelled = np.flatnonzero(y >= 0)
    out = np.full(len(y), np.nan)
    if len(labelled) == 0:
        return out
    Pl, yl = P[labelled], y[labelled]
    predicted = Pl.argmax(axis=1)
    value = relabel_value(Z[labelled], yl, predicted, predicted, threads=threads)
    out[labelled] = (1.0 - self_confidence(Pl, yl)) * value
    return out


def gain_priority(P: np.ndarray, y: np.ndarray, flagged: np.ndarray, combined: np.ndarray,
                  gain: np.ndarray | None) -> np.ndarray:
    """Position of each labelled sample in the gain order, scaled to (0, 1), low = review first;
    NaN unlabelled. The flagged set by expected gain (highest first; ties and NaN by
    self-confidence), then the rest by the combined score. Without a gain: the review priority."""
    from app.scoring.priority import positions, review_priority

    if gain is None:
        return review_priority(P, y, flagged, combined)
    P, y = _check(P, y)
    n = len(y)
    flagged = np.asarray(flagged, dtype=bool)
    combined = np.asarray(combined, dtype=np.float64)
    gain = np.asarray(gain, dtype=np.float64)
    if flagged.shape != (n,) or combined.shape != (n,) or gain.shape != (n,):
        raise ValueError(f"flagged, combined and gain must have one value per row of P ({n})")
    labelled = y >= 0
    if (flagged & ~labelled).any():
        raise ValueError("an unlabelled sample cannot be flagged")
    sc = self_confidence(P, y)
    first = np.where(flagged, np.where(np.isnan(gain), np.inf, -gain), 0.0)
    second = np.where(flagged, sc, np.where(np.isnan(combined), np.inf, combined))
    return positions(np.lexsort((second, first, np.where(flagged, 0, 1))), labelled)
