"""app.scoring.neighbours: the K nearest neighbours (exact and IVF), the outlier score's
calibration, duplicate groups from near pairs and content keys, conflicting twins."""

from __future__ import annotations

import numpy as np
import pytest

from app.scoring import neighbours
from app.scoring.neighbours import conflicting_members, find_issues, nearest, twin_suggestions
from app.training.label_errors import columns_from


def clusters(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(5, dim))
    return (centres[rng.integers(0, 5, n)] + rng.normal(size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize("exact_max", [neighbours.EXACT_MAX, 100])
def test_planted_copies_group_and_planted_outliers_rank_first(monkeypatch, exact_max):
    monkeypatch.setattr(neighbours, "EXACT_MAX", exact_max)  # 100: the IVF index's path
    X = clusters(3000)
    rng = np.random.default_rng(1)
    sources = rng.choice(2500, 30, replace=False)
    copies = np.arange(2500, 2530)
    X[copies] = X[sources] + rng.normal(scale=0.01, size=(30, X.shape[1]))
    far = np.arange(2900, 2910)
    X[far] = rng.normal(scale=60.0, size=(10, X.shape[1]))
    ids = np.arange(1000, 4000)
    split = np.array(["train"] * 2800 + ["test"] * 200, dtype=object)
    found = find_issues(X, ids, split)
    assert found.info["index"] == ("exact" if exact_max > 3000 else "ivf(nlist=219, nprobe=32)")
    # Every planted pair shares a group whose id is its lowest sample id; few other samples group.
    assert all(found.group[s] == found.group[c] == ids[min(s, c)] for s, c in zip(sources, copies))
    assert (found.group >= 0).sum() <= 60 + 6
    # The outliers rank first and pass the fence; a typical train sample scores about 1.
    assert set(np.argsort(-found.outlier)[:10]) == set(far)
    assert (found.outlier[far] > found.info["outlier_fence"]).all() and found.info["outliers"] >= 10
    # Each scale is 1 at the train median; the larger of the two is a little above.
    assert 1.0 <= np.median(found.outlier[:2800]) < 1.05


def test_self_is_dropped_even_when_copies_tie_with_it():
    X = np.array([[0, 0], [0, 0], [0, 0], [5, 5], [5, 6]], dtype=np.float32)
    D, idx, kind = nearest(X, k=2)
    assert kind == "exact" and all(i not in row for i, row in enumerate(idx))
    assert D[0].tolist() == [0.0, 0.0] and set(idx[0]) == {1, 2}
    assert nearest(X[:1], k=10)[0].shape == (1, 0)


def test_content_keys_group_without_embeddings_and_join_near_groups():
    ids = np.array([10, 11, 12, 13])
    split = np.array(["train", "test", "train", "valid"], dtype=object)
    found = find_issues(None, ids, split, content_keys=["a", None, "b", "a"])
    assert found.group.tolist() == [10, -1, -1, 10] and np.isnan(found.outlier).all()
    assert found.info == {**found.info, "embedding": False, "groups": 1, "grouped_samples": 2}


def test_conflicting_members_and_twin_suggestions():
    group = np.array([5, 5, 5, 7, 7, -1, 9, 9])
    y = np.array([0, 1, 0, 2, 2, 1, 1, -1])
    assert conflicting_members(group, y).tolist() == [True, True, True, False, False, False, False, False]
    P = np.array([[0.6, 0.4, 0], [0.7, 0.3, 0], [0.2, 0.8, 0], *[[1 / 3] * 3] * 5])
    # Sample 1 (class 1) has twins of class 0 and the model prefers 0; 0 and 2 keep their own.
    assert twin_suggestions(P, y, group).tolist() == [-1, 0, 1, -1, -1, -1, -1, -1]

    # columns_from flags the doubted train twin (the test one is not the flagged set's) and
    # counts what the twins added to confident learning's set.
    split = np.array(["train", "train", "test", "train", "train", "train", "train", "unlabelled"], dtype=object)
    alone = columns_from(P, y, split, ["a", "b", "c"], True)
    cols = columns_from(P, y, split, ["a", "b", "c"], True, group=group)
    assert cols.flagged[1] and cols.suggested[1] == 0 and not cols.flagged[2]
    assert cols.info["flagged"]["twin_conflicts"] == int(cols.flagged.sum() - alone.flagged.sum())
    assert cols.info["flagged"]["count"] == int(cols.flagged.sum())


def test_a_pile_of_identical_junk_is_one_group_and_still_outlying():
    X = clusters(1000)
    junk = np.arange(980, 995)
    X[junk] = 0.0  # fifteen blank scans, more than K: each other's nearest neighbours if searched as they are
    ids = np.arange(1, 1001)
    found = find_issues(X, ids, np.array(["train"] * 1000, dtype=object))
    assert found.info["distinct_embeddings"] == 1000 - 14
    assert set(found.group[junk].tolist()) == {981}
    assert (found.outlier[junk] > found.info["outlier_fence"]).all()
    assert set(np.argsort(-found.outlier)[:15]) == set(junk)


def test_a_small_cluster_of_faint_junk_is_outlying_at_the_wider_scale():
    X = clusters(1000)
    rng = np.random.default_rng(3)
    junk = np.arange(980, 995)
    X[junk] = rng.normal(scale=0.05, size=(15, X.shape[1]))  # faint, nearly blank: each other's nearest 10
    ids = np.arange(1, 1001)
    split = np.array(["train"] * 1000, dtype=object)
    narrow = find_issues(X, ids, split, scales=(10,))
    both = find_issues(X, ids, split)
    assert not (narrow.outlier[junk] > narrow.info["outlier_fence"]).any()
    assert (both.outlier[junk] > both.info["outlier_fence"]).all()
    assert set(np.argsort(-both.outlier)[:15]) == set(junk)
