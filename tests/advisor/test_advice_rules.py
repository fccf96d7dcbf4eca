"""The advice rules on metrics alone, with no database: each kind's function, and plan's order."""

from __future__ import annotations

from app.advisor import advice
from tests.advisor.builders import metrics_from
from tests.advisor.test_advice import CLASSES, MATRIX, TRAIN


def _split() -> advice._Split:
    metrics = metrics_from(MATRIX, CLASSES)
    pc = metrics["per_class"]
    labels = metrics["confusion"]["labels"]
    matrix = metrics["confusion"]["matrix"]
    return advice._Split(
        dataset_id=7, split="valid", labels=labels, matrix=matrix, classes=CLASSES,
        recall={c: pc[c]["recall"] for c in CLASSES}, precision={c: pc[c]["precision"] for c in CLASSES},
        f1={c: pc[c]["f1"] for c in CLASSES}, support={c: pc[c]["support"] for c in CLASSES},
        predicted_n={c: sum(row[j] for row in matrix) for j, c in enumerate(labels)}, train_counts=TRAIN,
    )


def test_each_kind_has_its_own_rule():
    s = _split()
    assert [i.class_ for i in advice._collect(s)] == ["a"]
    assert [i.class_ for i in advice._relabel(s)] == ["b"]
    assert [i.class_ for i in advice._prune(s, flagged=set())] == ["c"]
    assert [(i.class_, i.pairs[0]["b"]) for i in advice._confused_pairs(s)] == [("d", "e")]


def test_prune_leaves_out_the_classes_other_advice_names():
    assert advice._prune(_split(), flagged={"c"}) == []


def test_plan_composes_the_kinds_in_order():
    items = advice.plan(7, metrics_from(MATRIX, CLASSES), TRAIN, "valid")
    assert [(i.kind, i.class_) for i in items] == [("collect", "a"), ("relabel", "b"), ("prune", "c"), ("confused_pair", "d")]


def test_without_a_confusion_matrix_there_are_no_pairs():
    s = _split()
    s.matrix = []
    assert advice._confused_pairs(s) == []


def test_collect_never_names_a_class_with_more_train_samples_than_the_median():
    # z misses half its samples but has 105 train samples against a median of 100: within the
    # old 10% allowance, yet "collect more z" would contradict the numbers shown beside it.
    classes = ["w", "x", "y", "z"]
    matrix = [[10, 0, 0, 0], [0, 10, 0, 0], [0, 0, 10, 0], [2, 2, 1, 5]]
    train = {"w": 95, "x": 100, "y": 100, "z": 105}
    items = advice.plan(7, metrics_from(matrix, classes), train, "valid")
    assert [i.class_ for i in items if i.kind == "collect"] == []
    # With z at the median, the same gap is a finding.
    items = advice.plan(7, metrics_from(matrix, classes), {**train, "z": 100}, "valid")
    collect = [i for i in items if i.kind == "collect"]
    assert [(i.class_, i.numbers["basis"]) for i in collect] == [("z", "gap")]
    assert collect[0].numbers["train"] <= collect[0].numbers["median_train"]


def test_with_no_clear_gap_the_place_to_start_is_the_lowest_recall_among_the_smaller_classes():
    classes = ["w", "x", "y", "z"]
    # Recalls 0.95, 1, 0.96, 0.92 (z the lowest, but with the most train samples).
    matrix = [[19, 1, 0, 0], [0, 20, 0, 0], [0, 1, 24, 0], [0, 1, 1, 23]]
    items = advice.plan(7, metrics_from(matrix, classes), {"w": 90, "x": 100, "y": 100, "z": 120}, "valid")
    collect = [i for i in items if i.kind == "collect"]
    assert [(i.class_, i.numbers["basis"]) for i in collect] == [("w", "lowest")]
    assert "the lowest of the 3 classes with no more train samples than the median class" in collect[0].reason
