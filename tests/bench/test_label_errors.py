"""The label-error bench's own helpers: the noise it injects and the metrics it reports."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_label_errors", ROOT / "bench" / "label_errors.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("noise", ["uniform", "classcond"])
def test_transition_flips_only_to_other_classes(bench, noise):
    rates, dest = bench.transition(10, noise, 0.2)
    assert np.allclose(dest.sum(axis=1), 1.0)
    assert np.all(np.diag(dest) == 0)
    assert rates.mean() == pytest.approx(0.2)
    assert np.all((rates >= 0.15 - 1e-9) & (rates <= 0.25 + 1e-9))


def test_classcond_transition_is_fixed_and_concentrated(bench):
    _, a = bench.transition(10, "classcond", 0.1)
    _, b = bench.transition(10, "classcond", 0.4)
    assert np.array_equal(a, b)  # the same matrix for every rate and seed
    assert np.all(np.sort(a, axis=1)[:, -2:].sum(axis=1) == pytest.approx(0.9))


@pytest.mark.parametrize("noise", ["uniform", "classcond"])
def test_add_noise_flips_train_only_by_the_exact_count(bench, noise):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 100)
    split = rng.choice(np.array(["train", "valid", "test"]), size=len(y), p=[0.6, 0.2, 0.2])
    given = bench.add_noise(y, split, noise, 0.2, seed=3)
    flipped = given != y
    assert not flipped[split != "train"].any()
    rates, _ = bench.transition(10, noise, 0.2)
    for c in range(10):
        members = (split == "train") & (y == c)
        assert flipped[members].sum() == round(rates[c] * members.sum())
    assert np.array_equal(given, bench.add_noise(y, split, noise, 0.2, seed=3))


def test_metrics(bench):
    is_err = np.array([True, True, False, False, False])
    s = np.array([0.9, 0.1, 0.8, 0.2, 0.0])
    m = bench.rank_metrics(s, is_err)
    assert m["p_at_k"] == 0.5  # top 2: one error, one clean
    assert 0 < m["auprc"] < 1 and 0 < m["auroc"] < 1
    f = bench.flag_metrics(np.array([True, False, True, False, False]), is_err)
    assert (f["precision"], f["recall"], f["size"], f["true"]) == (0.5, 0.5, 2, 2)
    assert f["f1"] == pytest.approx(0.5)
