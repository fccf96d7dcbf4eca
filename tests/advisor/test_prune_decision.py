"""The prune decision rule on given numbers."""

import pytest

from app.advisor.prune import choose_removed, decide


def m(**f1):
    """Compact metrics of one seed: F1 per class."""
    return {"accuracy": 0.0, "macro_f1": sum(f1.values()) / len(f1), "f1": f1}


BASE = [m(a=0.95, b=0.80, c=0.70), m(a=0.96, b=0.82, c=0.71), m(a=0.94, b=0.81, c=0.69)]


def test_class_holds_and_others_improve_recommends_pruning():
    pruned = [m(a=0.95, b=0.84, c=0.74), m(a=0.955, b=0.85, c=0.75), m(a=0.94, b=0.86, c=0.73)]
    d = decide(BASE, pruned, "a")
    assert d.recommend and d.holds and d.improves
    assert d.reason.startswith("prune:")
    assert d.others.delta_mean == pytest.approx(((0.04 + 0.04) / 2 + (0.03 + 0.04) / 2 + (0.05 + 0.04) / 2) / 3)
    assert d.per_class["b"].pruned_mean == pytest.approx(0.85)
    assert d.as_dict()["class"] == "a"


def test_class_drops_means_no():
    pruned = [m(a=0.90, b=0.84, c=0.74), m(a=0.91, b=0.85, c=0.75), m(a=0.89, b=0.86, c=0.73)]
    d = decide(BASE, pruned, "a")
    assert not d.recommend and not d.holds and d.improves
    assert d.reason.startswith("keep:") and "drops" in d.reason


def test_others_flat_means_no():
    pruned = [m(a=0.95, b=0.80, c=0.70), m(a=0.96, b=0.82, c=0.71), m(a=0.94, b=0.81, c=0.69)]
    d = decide(BASE, pruned, "a")
    assert d.holds and not d.improves and not d.recommend
    assert "does not rise" in d.reason


def test_others_rising_within_their_standard_error_means_no():
    # Per-seed changes of the others' mean: +0.06, -0.05, +0.02 -> mean 0.01, sem ~0.032.
    pruned = [m(a=0.95, b=0.86, c=0.76), m(a=0.96, b=0.77, c=0.66), m(a=0.94, b=0.83, c=0.71)]
    d = decide(BASE, pruned, "a")
    assert d.others.delta_mean == pytest.approx(0.01)
    assert d.others.delta_mean < d.others.delta_sem
    assert not d.improves and not d.recommend


def test_a_drop_within_the_tolerance_holds():
    # -0.005 on every seed: within the 0.01 floor.
    pruned = [m(a=0.945, b=0.84, c=0.74), m(a=0.955, b=0.85, c=0.75), m(a=0.935, b=0.86, c=0.73)]
    d = decide(BASE, pruned, "a")
    assert d.tolerance == 0.01 and d.holds and d.recommend
    # -0.02 everywhere is beyond it.
    pruned = [m(a=0.93, b=0.84, c=0.74), m(a=0.94, b=0.85, c=0.75), m(a=0.92, b=0.86, c=0.73)]
    assert not decide(BASE, pruned, "a").holds


def test_full_metrics_work_too_and_bad_input_is_refused():
    full = [{"per_class": {"a": {"f1": x["f1"]["a"]}, "b": {"f1": x["f1"]["b"]}, "c": {"f1": x["f1"]["c"]}}} for x in BASE]
    assert decide(full, full, "a").per_class["c"].delta_mean == 0
    with pytest.raises(ValueError, match="pair up"):
        decide(BASE, BASE[:2], "a")
    with pytest.raises(ValueError, match="no seeds"):
        decide([], [], "a")
    with pytest.raises(ValueError, match="not among"):
        decide(BASE, BASE, "z")
    with pytest.raises(ValueError, match="other class"):
        decide([m(a=0.9)], [m(a=0.9)], "a")


def test_one_seed_has_no_standard_error_and_needs_a_strict_rise():
    d = decide([m(a=0.9, b=0.8)], [m(a=0.9, b=0.81)], "a")
    assert d.others.delta_sem == 0 and d.recommend


def test_removal_takes_the_most_confident_first():
    r = choose_removed([(1, 0.5), (2, 0.99), (3, 0.9), (4, 0.7), (5, 0.95)], 0.4)
    assert r.sample_ids == [2, 5] and r.method == "self_confidence" and not r.notices


def test_removal_falls_back_to_random_with_a_notice():
    r = choose_removed([(i, None) for i in range(10)], 0.3, seed=1)
    assert len(r.sample_ids) == 3 and len(set(r.sample_ids)) == 3 and r.method == "random"
    assert "drawn at random" in r.notices[0] and "no finished run" in r.notices[0]
    mixed = choose_removed([(1, 0.9), (2, None), (3, None), (4, None)], 0.5)
    assert mixed.sample_ids[0] == 1 and len(mixed.sample_ids) == 2 and mixed.method == "mixed"


def test_removal_always_keeps_one_sample():
    assert len(choose_removed([(1, 0.9), (2, 0.8)], 0.9).sample_ids) == 1
    assert choose_removed([(1, 0.9)], 0.9).sample_ids == []
