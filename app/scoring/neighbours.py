"""Near duplicates, conflicting twins and outliers from a run's embeddings (docs/data-issues.md).

Every sample the run scored is searched for its K nearest neighbours among all of them
(faiss: exact inner-product search up to EXACT_MAX samples, an inverted-file index above,
nlist = 4 sqrt(n) and nprobe 32, measured in bench/results/nn_search.md) by Euclidean
distance. Not the cosine distance: a blank scan or a corrupted row often differs from the rest
in the size of its embedding more than in its direction.

- **Outlier score**: the mean distance to the nearest neighbours, divided by its median
  over the run's train samples, at two scales (the nearest 10 and the nearest 30), the larger
  of the two: 1 is a typical train sample, 2 twice as far from its neighbours as that. A sample is counted as a likely outlier above the run's upper fence,
  Q3 + 1.5 IQR of the train samples' scores (Tukey's fence).
- **Near duplicates**: two samples are near duplicates when their distance is at most
  NEAR_FACTOR times the median distance of a sample to its nearest neighbour (the median over
  samples that are not exact copies), so the threshold follows the run's embedding space
  rather than being a fixed number. Samples with identical embeddings are searched once:
  they are one group, and a pile of identical junk cannot vouch for itself as neighbours. Samples that share a content key (exact duplicates) are
  joined too. Groups are the connected components of those pairs; a group's id is its lowest
  sample id.
- **Conflicting twins**: a group whose labelled members carry different labels. A labelled
  member whose model prefers a twin's label to its own is suspicious (app.training.label_errors
  flags it, suggesting that label).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

K = 30
# The outlier score looks at two neighbourhoods (app.scoring.neighbours._outlier_scores): the
# nearest 10 find a lone odd sample, the nearest 30 a small cluster of junk.
SCALES = (10, 30)
EXACT_MAX = 50_000
# sqrt(0.13): cleanlab Datalab's rule (0.13 x the median cosine distance to the nearest
# neighbour) in Euclidean terms, since the cosine distance of unit vectors is half the squared
# Euclidean one (measured in bench/results/data_issues.md).
NEAR_FACTOR = 0.36
NPROBE = 32
TRAIN_PER_LIST = 40
SEARCH_BATCH = 16_384


@dataclass
class NeighbourIssues:
    """Per sample (in the order given): the outlier score (NaN without embeddings) and the
    duplicate group's id (-1 outside any group); `info` is what Run.info["data_issues"] keeps."""

    outlier: np.ndarray
    group: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def conflicts(self, y: np.ndarray) -> np.ndarray:
        """Whether each sample is a labelled member of a group whose labelled members disagree."""
        return conflicting_members(self.group, y)


def build_index(Z: np.ndarray, inner_product: bool = False):
    """(a faiss index holding the rows of Z (float32, C order), its kind): exact up to EXACT_MAX
    rows, an inverted-file index above (nlist 4 sqrt(n), trained on at most TRAIN_PER_LIST rows
    per list, nprobe NPROBE); Euclidean, or inner product for unit rows."""
    import faiss

    n, d = Z.shape
    flat = faiss.IndexFlatIP if inner_product else faiss.IndexFlatL2
    if n <= EXACT_MAX:
        index, kind = flat(d), "exact"
    else:
        nlist = int(4 * math.sqrt(n))
        metric = faiss.METRIC_INNER_PRODUCT if inner_product else faiss.METRIC_L2
        index = faiss.IndexIVFFlat(flat(d), d, nlist, metric)
        rng = np.random.default_rng(0)
        fit = Z if n <= nlist * TRAIN_PER_LIST else Z[np.sort(rng.choice(n, nlist * TRAIN_PER_LIST, replace=False))]
        index.train(fit)
        index.nprobe = NPROBE
        kind = f"ivf(nlist={nlist}, nprobe={NPROBE})"
    index.add(Z)
    return index, kind


def nearest(X: np.ndarray, k: int = K, threads: int | None = None,
            queries: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(distances, indexes, index kind): each row's k nearest other rows by Euclidean distance,
    nearest first (with `queries`, row indexes: only those rows', in that order). Fewer than
    k+1 rows: k shrinks to n - 1."""
    import faiss

    if threads:
        faiss.omp_set_num_threads(threads)
    Z = np.ascontiguousarray(X, dtype=np.float32)
    n, d = Z.shape
    k = min(k, n - 1)
    if k < 1:
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64), "none"
    index, kind = build_index(Z)
    asked = np.arange(n) if queries is None else np.asarray(queries, dtype=np.int64)
    m = len(asked)
    D = np.empty((m, k), np.float32)
    Idx = np.empty((m, k), np.int64)
    for start in range(0, m, SEARCH_BATCH):
        stop = min(start + SEARCH_BATCH, m)
        rows = asked[start:stop]
        squared, found = index.search(Z[rows], k + 1)
        # Drop the row itself (not always first: exact copies tie with it); else the farthest.
        is_self = found == rows[:, None]
        drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
        keep = np.ones_like(found, dtype=bool)
        keep[np.arange(len(rows)), drop] = False
        found = found[keep].reshape(len(rows), k)
        dist = np.sqrt(np.maximum(squared[keep].reshape(len(rows), k), 0.0))
        missing = found < 0  # an IVF probe that found fewer than k
        if missing.any():
            dist[missing] = np.nan
            found[missing] = np.broadcast_to(rows[:, None], found.shape)[missing]
        D[start:stop], Idx[start:stop] = dist, found
    if np.isnan(D).any():
        D = np.where(np.isnan(D), np.nanmax(D) if np.isfinite(D).any() else 0.0, D)
    return D, Idx, kind


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def duplicate_groups(n: int, sample_ids: np.ndarray, pairs: tuple[np.ndarray, np.ndarray],
                     content_keys: list | np.ndarray | None) -> np.ndarray:
    """Each row's group id (its component's lowest sample id), -1 for a row in no pair."""
    a, b = pairs
    if content_keys is not None:
        first: dict[Any, int] = {}
        ea, eb = [], []
        for i, key in enumerate(content_keys):
            if key is None:
                continue
            j = first.setdefault(key, i)
            if j != i:
                ea.append(j)
                eb.append(i)
        a = np.concatenate([a, np.asarray(ea, dtype=np.int64)])
        b = np.concatenate([b, np.asarray(eb, dtype=np.int64)])
    group = np.full(n, -1, dtype=np.int64)
    if len(a) == 0:
        return group
    labels = _components(n, a, b)
    sizes = np.bincount(labels, minlength=labels.max() + 1)
    ids = np.asarray(sample_ids, dtype=np.int64)
    lowest = np.full(len(sizes), np.iinfo(np.int64).max)
    np.minimum.at(lowest, labels, ids)
    member = sizes[labels] > 1
    group[member] = lowest[labels[member]]
    return group


def conflicting_members(group: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Labelled members (y >= 0) of groups whose labelled members carry more than one label."""
    labelled = (group >= 0) & (y >= 0)
    out = np.zeros(len(group), dtype=bool)
    if not labelled.any():
        return out
    g, lab = group[labelled], y[labelled]
    order = np.lexsort((lab, g))
    g_sorted, lab_sorted = g[order], lab[order]
    # Per group: distinct labels = 1 + label changes within it.
    starts = np.r_[True, g_sorted[1:] != g_sorted[:-1]]
    changes = np.r_[False, (lab_sorted[1:] != lab_sorted[:-1]) & ~starts[1:]]
    group_index = np.cumsum(starts) - 1
    distinct = np.bincount(group_index, weights=changes, minlength=group_index.max() + 1) + 1
    conflicted = np.zeros(len(g), dtype=bool)
    conflicted[order] = distinct[group_index] > 1
    out[np.flatnonzero(labelled)] = conflicted
    return out


def twin_suggestions(P: np.ndarray, y: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Per sample, the label of a twin (another member of its group, labelled differently)
    that the model prefers to the sample's own label, else -1: the suggestion for a
    conflicting twin. Only labelled members of conflicting groups can get one."""
    out = np.full(len(y), -1, dtype=np.int64)
    members = np.flatnonzero(conflicting_members(group, y))
    if len(members) == 0:
        return out
    by_group: dict[int, set[int]] = {}
    for i in members:
        by_group.setdefault(int(group[i]), set()).add(int(y[i]))
    for i in members:
        own = int(y[i])
        others = [c for c in by_group[int(group[i])] if c != own]
        best = max(others, key=lambda c: P[i, c])
        if P[i, best] > P[i, own]:
            out[i] = best
    return out


def _outlier_scores(D: np.ndarray, inverse: np.ndarray, train: np.ndarray,
                    scales: tuple[int, ...]) -> tuple[np.ndarray, float]:
    """Per sample, the largest over `scales` of the mean distance to that many nearest
    neighbours over its median among the train samples; and the last scale's median."""
    reference_rows = train if train.sum() >= 2 else np.ones(len(train), dtype=bool)
    best = np.zeros(len(inverse))
    scale = 0.0
    for k in sorted(set(min(max(1, k), D.shape[1]) for k in scales)):
        mean = D[:, :k].mean(axis=1, dtype=np.float64)[inverse]
        scale = float(np.median(mean[reference_rows]))
        best = np.maximum(best, mean / scale if scale > 0 else np.where(mean > 0, np.inf, 1.0))
    return best, scale


def distinct_rows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, inverse): the first row of each distinct row of X, in order, and each row's
    index into them. Rows are told apart by a 64-bit hash of their bytes (memory O(n), not a
    sort of the matrix), checked for equality so that a hash collision cannot merge rows."""
    import pandas as pd

    n = len(X)
    h = np.zeros(n, dtype=np.uint64)
    for j in range(X.shape[1]):
        col = pd.util.hash_array(np.ascontiguousarray(X[:, j]).view(np.uint32))
        h = h * np.uint64(1_000_003) ^ col
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    same = np.flatnonzero(first[inverse] != np.arange(n))
    if len(same) and not np.array_equal(X[same], X[first[inverse[same]]]):
        # A collision (about one in 10^8 at a million rows): fall back to comparing bytes.
        as_bytes = np.ascontiguousarray(X).view(np.dtype((np.void, X.dtype.itemsize * X.shape[1]))).ravel()
        _, first, inverse = np.unique(as_bytes, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse]


def find_issues(X: np.ndarray | None, sample_ids: np.ndarray, split: np.ndarray,
                content_keys: list | np.ndarray | None = None, k: int = K,
                near_factor: float = NEAR_FACTOR, threads: int | None = None,
                scales: tuple[int, ...] = SCALES,
                extra_pairs: tuple[np.ndarray, np.ndarray] | None = None) -> NeighbourIssues:
    """Outlier scores and duplicate groups of n samples from their embeddings X (n, d) (None:
    only the exact duplicates of content_keys), their ids and splits; extra_pairs (two arrays
    of rows) are joined too (app.scoring.image_copies)."""
    started = time.monotonic()
    n = len(sample_ids)
    outlier = np.full(n, np.nan)
    info: dict[str, Any] = {"k": k, "scales": list(scales), "near_factor": near_factor}
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    extra = empty if extra_pairs is None else tuple(np.asarray(p, dtype=np.int64) for p in extra_pairs)
    if X is None or n < 3:
        group = duplicate_groups(n, sample_ids, extra, content_keys)
        info["embedding"] = False
    else:
        # Identical embeddings are searched once: a pile of identical junk (blank scans) would
        # otherwise be its own neighbourhood and look typical.
        Xa = np.ascontiguousarray(X, dtype=np.float32).reshape(n, -1)
        first, inverse = distinct_rows(Xa)
        info["distinct_embeddings"] = int(len(first))
        if len(first) < 2:
            D, Idx, kind = np.zeros((len(first), 1), np.float32), np.zeros((len(first), 1), np.int64), "none"
        else:
            # No copy when every row is distinct (the usual case at a million rows).
            D, Idx, kind = nearest(Xa if len(first) == n else Xa[first], k, threads)
        info.update(embedding=True, index=kind)
        train = np.asarray(split) == "train"
        outlier, scale = _outlier_scores(D, inverse, train, scales)
        q1, q3 = np.quantile(outlier[train] if train.sum() >= 2 else outlier, [0.25, 0.75])
        fence = float(q3 + 1.5 * (q3 - q1))
        nn1 = D[:, 0].astype(np.float64)
        apart = nn1[nn1 > 1e-6]
        median_nn = float(np.median(apart)) if len(apart) else 0.0
        radius = near_factor * median_nn
        near = D <= max(radius, 1e-6)
        # Pairs between distinct embeddings (by their first sample), and each sample with the
        # first sample of its identical embedding.
        a = first[np.repeat(np.arange(len(first)), near.sum(axis=1))]
        b = first[Idx[near]]
        copies = np.flatnonzero(first[inverse] != np.arange(n))
        pairs = (np.concatenate([a, copies, extra[0]]), np.concatenate([b, first[inverse[copies]], extra[1]]))
        group = duplicate_groups(n, sample_ids, pairs, content_keys)
        info.update(
            outlier_scale=round(scale, 6), outlier_fence=round(fence, 4),
            outliers=int((outlier > fence).sum()), median_nn_distance=round(median_nn, 6), radius=round(radius, 6),
        )
        outlier = np.where(np.isfinite(outlier), outlier, 1e6)
    grouped = group >= 0
    info.update(
        groups=int(len(np.unique(group[grouped]))), grouped_samples=int(grouped.sum()),
        seconds=round(time.monotonic() - started, 3),
    )
    return NeighbourIssues(outlier, group, info)
