"""The expected gain of a review and the gain order, with its fallback to the review priority."""

import itertools

import numpy as np
import pytest

from app.scoring.priority import review_priority
from app.scoring.review_gain import expected_gain, gain_priority, relabel_value


def _shapley(order_of, labels, y_ref, k):
    """Exact Shapley values of the unweighted KNN utility for one reference point whose
    neighbours, nearest first, are `order_of` (every permutation enumerated)."""
    n = len(labels)
    rank = {i: r for r, i in enumerate(order_of)}

    def utility(S):
        near = sorted(S, key=lambda i: rank[i])[:k]
        return sum(labels[i] == y_ref for i in near) / k if S else 0.0

    phi = np.zeros(n)
    perms = list(itertools.permutations(range(n)))
    for p in perms:
        for j, i in enumerate(p):
            phi[i] += utility(list(p[: j + 1])) - utility(list(p[:j]))
    return phi / len(perms)


def test_relabel_value_is_the_exact_shapley_change_summed_over_references():
    Z = np.array([[0.0], [0.3], [1.0], [1.8], [3.0]], dtype=np.float32)
    y = np.array([0, 1, 1, 0, 1])
    suggested = np.array([1, 1, 0, 1, 0])
    reference = np.array([1, 1, 0, 0, 1])
    k = 2
    got = relabel_value(Z, y, suggested, reference, k=k, depth=4)
    want = np.zeros(5)
    for t in range(5):
        others = [i for i in np.argsort(np.abs(Z[:, 0] - Z[t, 0]), kind="stable") if i != t]
        idx = {i: j for j, i in enumerate(others)}  # the other rows, as the KNN set of reference t
        for i in others:
            alone = y.copy()
            alone[i] = suggested[i]
            lab_new = [alone[o] for o in others]
            lab_old = [y[o] for o in others]
            want[i] += (_shapley(list(range(4)), lab_new, reference[t], k)[idx[i]]
                        - _shapley(list(range(4)), lab_old, reference[t], k)[idx[i]])
    assert got == pytest.approx(want, abs=1e-9)
    assert got[1] == 0.0  # its label does not change


def test_an_error_inside_a_cluster_of_its_true_class_gains_more_than_an_isolated_one():
    rng = np.random.default_rng(0)
    cluster = rng.normal(0, 0.1, size=(20, 2))
    far = rng.normal(10, 0.1, size=(20, 2))
    Z = np.vstack([cluster, far, [[0.0, 0.05]], [[5.0, 5.0]]]).astype(np.float32)
    y = np.array([0] * 20 + [1] * 20 + [1, 1])  # row 40 sits among class 0 labelled 1; row 41 alone
    P = np.full((42, 2), 0.5)
    P[:20] = [0.9, 0.1]
    P[20:40] = [0.1, 0.9]
    P[40] = P[41] = [0.8, 0.2]  # the out-of-fold model suggests class 0 for both, equally sure
    gain = expected_gain(P, y, Z)
    assert gain[40] > gain[41]
    assert gain[40] > 0


def test_expected_gain_needs_embeddings_and_skips_unlabelled_rows():
    P = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    y = np.array([0, 0, -1, 1])
    assert expected_gain(P, y, None) is None
    assert expected_gain(P, y, np.zeros((3, 2))) is None  # not one row per sample
    assert expected_gain(P, y, np.array([[0.0], [np.nan], [1.0], [2.0]])) is None
    gain = expected_gain(P, y, np.array([[0.0], [0.1], [1.0], [2.0]]))
    assert np.isnan(gain[2]) and np.isfinite(gain[[0, 1, 3]]).all()


def test_gain_priority_orders_the_flagged_set_by_gain_then_the_rest_by_combined():
    P = np.array([[0.2, 0.8], [0.3, 0.7], [0.1, 0.9], [0.6, 0.4], [0.7, 0.3], [0.5, 0.5]])
    y = np.array([0, 0, 0, 0, 0, -1])
    flagged = np.array([True, True, True, False, False, False])
    combined = np.array([0.1, 0.2, 0.05, 0.6, 0.4, np.nan])
    gain = np.array([0.5, 2.0, np.nan, 9.0, 9.0, np.nan])
    pos = gain_priority(P, y, flagged, combined, gain)
    assert np.argsort(pos)[:5].tolist() == [1, 0, 2, 4, 3]  # gain first; NaN gain last among flagged
    assert np.isnan(pos[5])
    assert sorted(pos[:5].tolist()) == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])


def test_gain_priority_without_a_gain_is_the_review_priority():
    rng = np.random.default_rng(3)
    P = rng.dirichlet(np.ones(3), size=30)
    y = rng.integers(0, 3, 30)
    flagged = P.argmax(axis=1) != y
    combined = rng.random(30)
    assert np.array_equal(gain_priority(P, y, flagged, combined, None), review_priority(P, y, flagged, combined))


def _run(seed=0, n=120):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 3, n)
    Z = (np.eye(3)[y_true] * 3 + rng.normal(0, 0.6, (n, 3))).astype(np.float32)
    logits = Z * 1.5
    P = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = y_true.copy()
    flip = rng.choice(n, 15, replace=False)
    y[flip] = (y[flip] + 1) % 3
    split = np.array(["train"] * 90 + ["valid"] * 30)
    return P, y, split, Z


def test_columns_from_orders_train_by_gain_with_embeddings_and_falls_back_without():
    from app.training.label_errors import columns_from

    P, y, split, Z = _run()
    classes = ["a", "b", "c"]
    train, valid = split == "train", split == "valid"
    with_z = columns_from(P, y, split, classes, True, Z=Z)
    without = columns_from(P, y, split, classes, True)
    # Finding is unchanged: the same flagged set and combined score either way.
    assert np.array_equal(with_z.flagged, without.flagged) and with_z.flagged[train].sum() > 3
    assert np.allclose(with_z.combined, without.combined, equal_nan=True)
    # Without embeddings (an external run without them, or before the gain): the review priority.
    assert without.review_gain is not None and np.isnan(without.review_gain).all()
    assert without.info["review_order"] == {"order": "priority", "reason": "no embeddings"}
    assert np.array_equal(without.priority[train], review_priority(P[train], y[train], without.flagged[train],
                                                                   without.combined[train]), equal_nan=True)
    # With them: train's gain is stored and orders the flagged set, highest first.
    assert with_z.info["review_order"]["order"] == "gain"
    assert np.isfinite(with_z.review_gain[train]).all() and np.isnan(with_z.review_gain[valid]).all()
    fl = np.flatnonzero(with_z.flagged)
    by_position = fl[np.argsort(with_z.priority[fl])]
    assert (np.diff(with_z.review_gain[by_position]) <= 0).all()
    assert with_z.priority[fl].max() < np.nanmin(with_z.priority[train & ~with_z.flagged])
    # valid keeps the review priority
    assert np.array_equal(with_z.priority[valid], without.priority[valid], equal_nan=True)


def test_queue_reason_names_the_signal_behind_the_position():
    from app.labels.schemas import queue_reason

    assert "expected gain of a review 0.25" in queue_reason(True, 0.25, 0.1, 0.05, 0.01)
    assert "self-confidence 0.1" in queue_reason(True, None, 0.1, 0.05, 0.01)
    assert "combined score 0.4" in queue_reason(False, None, 0.9, 0.4, 0.6)
    assert queue_reason(False, None, None, None, None) is None


def test_relabel_value_is_the_same_in_blocks(monkeypatch):
    import app.scoring.review_gain as module

    rng = np.random.default_rng(5)
    Z = rng.normal(size=(60, 4)).astype(np.float32)
    y, suggested, reference = (rng.integers(0, 3, 60) for _ in range(3))
    whole = relabel_value(Z, y, suggested, reference, depth=20)
    monkeypatch.setattr(module, "CHUNK", 7)
    assert np.allclose(relabel_value(Z, y, suggested, reference, depth=20), whole, atol=1e-12)


def _per_reference(Z, y, suggested, reference, k, depth):
    """(reference rows, sample rows) contributions to the relabel value, by brute force."""
    n = len(Z)
    dist = np.linalg.norm(Z[:, None, :] - Z[None, :, :], axis=2)
    C = np.zeros((n, n))
    for t in range(n):
        others = [i for i in np.argsort(dist[t], kind="stable") if i != t][:depth]
        for r, i in enumerate(others, 1):
            delta = float(suggested[i] == reference[t]) - float(y[i] == reference[t])
            C[t, i] = delta * min(k, r) / (k * r)
    return C


def test_over_max_references_the_value_is_the_scaled_sum_over_a_seeded_sample_of_them(monkeypatch):
    import app.scoring.review_gain as module

    rng = np.random.default_rng(7)
    n = 120
    Z = rng.normal(size=(n, 3)).astype(np.float32)
    y, suggested, reference = (rng.integers(0, 3, n) for _ in range(3))
    C = _per_reference(Z, y, suggested, reference, k=10, depth=15)
    assert relabel_value(Z, y, suggested, reference, depth=15) == pytest.approx(C.sum(axis=0), abs=1e-9)
    monkeypatch.setattr(module, "MAX_REFERENCES", 48)
    refs = np.sort(np.random.default_rng(0).choice(n, 48, replace=False))
    got = relabel_value(Z, y, suggested, reference, depth=15)
    assert got == pytest.approx(C[refs].sum(axis=0) * n / 48, abs=1e-9)
    assert not np.allclose(got, C.sum(axis=0))  # an estimate, not the full sum
    # Seeded: the same estimate every time.
    assert np.array_equal(relabel_value(Z, y, suggested, reference, depth=15), got)
