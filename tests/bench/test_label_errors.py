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


def test_external_plan_is_the_full_plan_without_training_or_simulation(bench):
    plan = bench.external_plan()
    assert len(plan.settings) == 38
    assert len({s.key for s in plan.settings}) == 14
    assert not plan.simulate


def test_the_external_section_is_placed_after_the_title_and_replaced_in_place(bench, tmp_path):
    report = "# Label-error detection benchmark\n\nMachine: x.\n\n## Setup\n\n- data\n"
    section = f"{bench.EXTERNAL_START}\n## External runs\n\nfirst\n{bench.EXTERNAL_END}"
    text = bench.with_external(report, section)
    assert text.startswith("# Label-error detection benchmark\n\n" + bench.EXTERNAL_START)
    assert text.count(bench.EXTERNAL_START) == 1 and "Machine: x." in text
    rest, found = bench.split_external(text)
    assert found == section and rest == report
    again = bench.with_external(text, section.replace("first", "second"))
    assert again.count(bench.EXTERNAL_START) == 1 and "second" in again and "first" not in again
    assert bench.split_external(report) == (report, None)
    # A full run's report keeps the section the file already has.
    out = tmp_path / "label_errors.md"
    out.write_text(text)
    kept = bench.keeping_external("# Label-error detection benchmark\n\nnew run\n", out)
    assert section in kept and "new run" in kept and "Machine: x." not in kept


def test_external_summary_counts_settings_at_or_above_cleanlab(bench):
    def result(seed, combined, flagged, before=0.5):
        rank = {a: {"auprc": 0.8, "auroc": 0.9, "p_at_k": 0.7} for a in bench.EXTERNAL_RANK}
        rank["external:combined"] = {"auprc": combined, "auroc": 0.9, "p_at_k": 0.7}
        rank["before:combined"] = {"auprc": before, "auroc": 0.9, "p_at_k": 0.7}
        flag = {a: {"f1": 0.6, "precision": 0.6, "recall": 0.6, "size": 10, "true": 10} for a in bench.EXTERNAL_FLAG}
        flag["cleanlab:low_self_confidence"] = {"f1": 0.7, "precision": 0.7, "recall": 0.7, "size": 10, "true": 10}
        flag["external:flagged"] = {"f1": flagged, "precision": flagged, "recall": flagged, "size": 10, "true": 10}
        return {"setting": bench.Setting("classif", "uniform", 0.1, seed), "errors": 10, "rank": rank, "flag": flag}

    # Seed-averaged: combined (0.9 + 0.75) / 2 >= 0.8; flagged (0.7 + 0.66) / 2 >= 0.6 (default) but < 0.7 (best).
    s = bench.external_summary([result(0, 0.9, 0.7), result(1, 0.75, 0.66)])
    assert s["n"] == 1
    assert (s["auprc"], s["auprc_before"], s["f1_default"], s["f1_best"]) == (1, 0, 1, 0)
    assert s["rows"][0]["cl_f1_arm"] == "cleanlab:low_self_confidence"


def test_multilabel_noise_flips_one_tag_in_the_chosen_share_of_rows():
    from bench import multilabel_errors

    Y = (np.random.default_rng(0).random((200, 5)) < 0.4).astype(int)
    given, changed = multilabel_errors.add_noise(Y, 0.2, seed=3)
    assert changed.sum() == 40
    assert (np.abs(given - Y).sum(axis=1) == changed.astype(int)).all()
    assert ((given - Y) == -1).any() and ((given - Y) == 1).any()  # missing and extra tags both


def test_the_multilabel_section_goes_last_and_is_replaced_in_place(bench, tmp_path):
    from bench import multilabel_errors as ml

    part = f"{ml.START}\n## Multi-label\nold\n{ml.END}"
    text = ml.with_section("# Title\n\nbody\n", part)
    assert text.endswith(part + "\n") and text.startswith("# Title\n\nbody\n")
    again = ml.with_section(text, part.replace("old", "new"))
    assert again.count(ml.START) == 1 and "new" in again and "old" not in again
    assert ml.split_section(again)[0].rstrip("\n") == "# Title\n\nbody"
    # The full run's report keeps the section the file has.
    out = tmp_path / "report.md"
    out.write_text(again)
    assert bench.keeping_external("# Title\n\nfresh\n", out).endswith(ml.split_section(again)[1] + "\n")
