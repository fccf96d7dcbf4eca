"""The nearest-neighbour bench's own helpers: its data, exact truth and metrics, and the arms that are installed."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_nn_search", ROOT / "bench" / "nn_search.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def tiny(bench):
    data = bench.make_data(1500, 16, seed=3)
    queries = np.random.default_rng(0).choice(len(data.X), size=300, replace=False)
    return data, queries, bench.exact_neighbours(data.X, queries, 5, block=256)


def test_data_plants_copies_and_outliers(bench):
    data = bench.make_data(2000, 16, seed=1)
    assert data.X.shape == (2000, 16) and data.X.dtype == np.float32
    assert len(data.sources) == len(data.copies) == 20 and data.is_outlier.sum() == 10
    assert not set(data.sources) & set(data.copies) and not data.is_outlier[data.copies].any()
    gap = np.linalg.norm(data.X[data.sources] - data.X[data.copies], axis=1)
    typical = np.linalg.norm(data.X[:200, None] - data.X[None, 200:400], axis=2).min(axis=1)
    assert gap.max() < np.median(typical) / 10  # a copy sits far closer to its source than neighbours do
    again = bench.make_data(2000, 16, seed=1)
    assert np.array_equal(data.X, again.X) and np.array_equal(data.copies, again.copies)


def test_exact_neighbours_match_a_plain_loop(bench):
    X = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    queries = np.array([0, 7, 150, 299])
    got = bench.exact_neighbours(X, queries, 4, block=64)  # several blocks, queries in different ones
    for row, q in zip(got, queries, strict=True):
        d = ((X.astype(np.float64) - X[q]) ** 2).sum(axis=1)
        d[q] = np.inf
        assert list(row) == list(np.argsort(d)[:4])


def test_drop_self_drops_the_row_itself_or_the_last(bench):
    ids = np.array([[0, 5, 6], [4, 1, 2], [7, 8, 9]])
    dists = np.array([[0.0, 1, 2], [0.5, 0, 3], [1.0, 2, 3]])
    kept, kd = bench.drop_self(ids, dists, 2)
    assert kept.tolist() == [[5, 6], [4, 2], [7, 8]]  # row 2 never returned itself: its 3rd is dropped
    assert kd.tolist() == [[1, 2], [0.5, 3], [1, 2]]


def test_recall_and_duplicate_recall_count_what_they_should(bench):
    truth = np.array([[1, 2, 3], [0, 2, 3]])
    ids = np.array([[3, 2, 9], [0, 2, 3], [1, 1, 1]])
    assert bench.recall_at_k(ids, np.array([0, 1]), truth) == pytest.approx(5 / 6)  # order does not matter
    assert bench.duplicate_recall(ids, np.array([0, 1]), np.array([3, 2])) == 0.5  # only a 1st neighbour counts
    dists = np.array([[1.0, 2.0], [1.0, 9.0], [1.0, 3.0]])
    assert bench.outlier_auroc(dists, np.array([False, True, False])) == 1.0


def _check(bench, name, tiny, exact: bool):
    data, queries, truth = tiny
    m = bench.measure(name, data, queries, truth, k=5, threads=1)
    if exact:
        assert m.recall == 1.0
        assert m.dup_recall == 1.0
    else:
        assert m.recall >= 0.9
        assert m.dup_recall >= 0.9
    assert 0.5 < m.auroc <= 1.0
    assert m.build_s >= 0 and m.query_s >= 0
    return m


def test_exact_arm_finds_every_neighbour_and_every_copy(bench, tiny):
    _check(bench, "sklearn-brute", tiny, exact=True)


# The libraries Curate may pick; each is tested where it is installed (CI installs only pyproject's extras).
LIBRARY_ARMS = ["faiss-ivf", "faiss-hnsw", "usearch"]


def test_installed_library_arms_agree_with_the_exact_one(bench, tiny):
    arms = [a for a in LIBRARY_ARMS if bench.installed(bench.ARMS[a].package)]
    exact = _check(bench, "sklearn-brute", tiny, exact=True)
    for arm in arms:
        m = _check(bench, arm, tiny, exact=False)
        assert abs(m.auroc - exact.auroc) < 0.05, arm
    assert set(bench.available_arms()) >= {"sklearn-brute", *arms}


def test_an_arm_in_its_own_process_reports_its_peak_memory(bench, tiny, tmp_path):
    data, queries, truth = tiny
    bench.save(data, queries, truth, tmp_path)
    out = bench.run_child("sklearn-brute", tmp_path, 5, 1, bench.Params(), timeout=120)
    assert "error" not in out, out
    assert out["recall"] == 1.0 and out["dup_recall"] == 1.0
    assert 10 < out["peak_mib"] < 4096
