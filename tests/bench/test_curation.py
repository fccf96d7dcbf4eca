"""The curation bench's own pieces: the KNN-Shapley relabel value, the orders, the noise and the summaries."""

import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_curation", ROOT / "bench" / "curation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _shapley(Z, y, z_ref, y_ref, K):
    """Exact Shapley values of the unweighted KNN utility (1/K x matches among the K nearest of S) by
    enumerating every permutation."""
    n = len(y)
    dist = np.abs(Z[:, 0] - z_ref)

    def utility(S):
        if not S:
            return 0.0
        near = sorted(S, key=lambda i: dist[i])[:K]
        return sum(y[i] == y_ref for i in near) / K

    phi = np.zeros(n)
    perms = list(itertools.permutations(range(n)))
    for p in perms:
        for j, i in enumerate(p):
            phi[i] += utility(list(p[: j + 1])) - utility(list(p[:j]))
    return phi / len(perms)


@pytest.mark.parametrize("K", [1, 2, 3])
def test_knn_relabel_value_is_the_exact_shapley_change(bench, K):
    Z = np.array([[0.1], [0.5], [1.2], [2.0], [3.1]])
    y = np.array([0, 1, 1, 0, 1])
    suggested = np.array([1, 0, 1, 1, 0])
    z_ref, y_ref = 0.0, 1
    got = bench.knn_relabel_value(Z, y, suggested, np.array([[z_ref]]), np.array([y_ref]), K=K, depth=5)
    want = _shapley(Z, suggested, z_ref, y_ref, K) - _shapley(Z, y, z_ref, y_ref, K)
    # Only the relabelled sample's own value is the estimate: relabelling one sample at a time.
    for i in range(len(y)):
        alone = y.copy()
        alone[i] = suggested[i]
        exact = _shapley(Z, alone, z_ref, y_ref, K)[i] - _shapley(Z, y, z_ref, y_ref, K)[i]
        assert got[i] == pytest.approx(exact, abs=1e-12)
    assert got[2] == 0.0 and want.shape == got.shape  # an unchanged label adds nothing


def test_knn_relabel_value_leaves_self_out(bench):
    Z = np.array([[0.0], [0.1], [5.0]])
    y, suggested = np.array([0, 0, 1]), np.array([1, 0, 1])
    # With itself as a reference, sample 0 would be its own nearest neighbour; left out, its value
    # comes from sample 1 (label 0: relabelling to 1 loses) and sample 2 (label 1: gains, far).
    got = bench.knn_relabel_value(Z, y, suggested, Z, y, K=1, depth=2, exclude_self=True)
    assert got[0] == pytest.approx(-1.0 + 0.5)
    assert got[1] == 0.0 and got[2] == 0.0


def test_flagged_first_puts_the_flagged_set_first_by_its_own_key(bench):
    flagged = np.array([False, True, False, True, True])
    within = np.array([9.0, 0.3, 9.0, 0.1, 0.2])
    rest = np.array([0.5, 9.0, 0.4, 9.0, 9.0])
    assert bench.flagged_first(flagged, within, rest).tolist() == [3, 4, 1, 2, 0]


def test_class_budget_spends_more_on_the_weaker_classes(bench):
    y = np.array([0] * 6 + [1] * 6)
    suggested = np.array([1] * 6 + [0] * 6)
    flagged = np.ones(12, dtype=bool)
    priority = np.linspace(0, 1, 12)
    f1 = np.array([0.9, 0.3])  # the same pair loss for both, so the order alternates by class rank
    order = bench.class_budget_order(flagged, priority, y, suggested, f1)
    assert sorted(order.tolist()) == list(range(12))
    assert set(order[:2].tolist()) == {0, 6}
    suggested = np.array([0] * 6 + [1] * 6)  # now class 1 (F1 0.3) loses twice as much on its own pair
    order = bench.class_budget_order(flagged, priority, y, suggested, f1)
    assert (y[order[:6]] == 1).sum() >= 4


def test_boundary_noise_flips_the_exact_count_on_train_only(bench):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + 2 * (X[:, 1] > 0).astype(int)
    split = np.array(["train"] * 200 + ["valid"] * 50 + ["test"] * 50)
    data = bench.Data("tabular", X, y, split)
    given = bench.boundary_noise(data, 0.1, seed=0)
    assert (given != y).sum() == 20
    assert (given[200:] == y[200:]).all()
    flipped = np.flatnonzero(given != y)
    # Near the boundary: the flipped samples are closer to a class border than train is on average.
    border = np.minimum(np.abs(X[:, 0]), np.abs(X[:, 1]))
    assert border[flipped].mean() < border[:200].mean()


def test_train_many_fits_each_model_to_its_own_labels(bench):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    Y = np.stack([y, 1 - y])
    fit = bench.train_many(X, Y, np.ones((2, 200), dtype=np.float32), [1, 1], k=2, steps=80, aum_of=0)
    pred = fit.probs(X).argmax(axis=2)
    assert (pred[0] == y).mean() > 0.95 and (pred[1] == 1 - y).mean() > 0.95
    assert fit.aum.shape == (200,) and np.nanmean(fit.aum) > 0
    # The same seed and labels give the same model.
    again = bench.train_many(X, Y[:1], np.ones((1, 200), dtype=np.float32), [1], k=2, steps=80)
    assert np.allclose(again.probs(X)[0], fit.probs(X)[0], atol=1e-5)


def test_gain_and_paired_summaries(bench):
    def result(none, cl, other):
        return {"acc": {("none",): {0: none, 1: none}, ("order", "cleanlab", 0.1): {0: cl, 1: cl},
                        ("order", "x", 0.1): {0: other[0], 1: other[1]}},
                "reviewed": {("cleanlab", 0.1): (50, 40), ("x", 0.1): (50, 45)}}

    rs = [result(0.80, 0.81, (0.82, 0.83)), result(0.70, 0.72, (0.73, 0.73))]
    assert bench.gain_per_100(rs[0], "cleanlab", 0.1)[0] == pytest.approx(2.0)  # 1 point over 50 reviewed
    p = bench.paired(rs, "x", 0.1)
    # setting 1: (4 + 6) / 2 - 2 = 3; setting 2: 6 - 4 = 2
    assert p["mean"] == pytest.approx(2.5) and p["se"] == pytest.approx(0.5) and p["wins"] == 2
    p125 = bench.paired(rs, "x", 0.1, factor=1.25)
    assert p125["mean"] == pytest.approx(((5 - 2.5) + (6 - 5)) / 2)


def test_the_bench_train_reference_value_is_the_apps(bench):
    from app.scoring.review_gain import relabel_value

    rng = np.random.default_rng(4)
    Z = rng.normal(size=(120, 5)).astype(np.float32)
    y = rng.integers(0, 3, 120)
    suggested = rng.integers(0, 3, 120)
    reference = rng.integers(0, 3, 120)
    ours = bench.knn_relabel_value(Z, y, suggested, Z, reference, K=10, depth=50, exclude_self=True)
    assert np.allclose(ours, relabel_value(Z, y, suggested, reference, k=10, depth=50), atol=1e-9)
