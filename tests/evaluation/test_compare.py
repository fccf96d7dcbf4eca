"""Run comparison and the overview's per-class numbers, on hand-made runs and label events."""

import pytest

from app.evaluation import compare as cmp
from app.evaluation.metrics import classification_metrics
from app.models import LabelEvent, Run
from tests.builders import add_samples, make_dataset

CLASSES = ["cat", "dog", "fox"]


def metrics(y_true, y_pred, classes=CLASSES):
    return classification_metrics([classes.index(c) for c in y_true], [classes.index(c) for c in y_pred], classes)


def make_run(db, ds, label_version, valid=None, test=None, status="succeeded"):
    run = Run(
        dataset_id=ds.id,
        status=status,
        params={},
        label_version=label_version,
        metrics={"valid": valid, "test": test},
        history=[],
        info={},
    )
    db.add(run)
    db.commit()
    return run


def relabel(db, ds, sample, old, new, version, old_split="train", new_split="train"):
    db.add(
        LabelEvent(
            dataset_id=ds.id,
            sample_id=sample.id,
            old_label=old,
            new_label=new,
            old_split=old_split,
            new_split=new_split,
            source="annotator",
            label_version=version,
        )
    )
    db.commit()


# Base run: cat cat cat dog dog fox fox fox  ->  cat dog cat dog cat fox cat fox
BASE_TRUE = ["cat", "cat", "cat", "dog", "dog", "fox", "fox", "fox"]
BASE_PRED = ["cat", "dog", "cat", "dog", "cat", "fox", "cat", "fox"]
# The newer run gets one more cat and one more fox right.
RUN_PRED = ["cat", "cat", "cat", "dog", "cat", "fox", "fox", "fox"]


@pytest.fixture
def ds(db):
    return make_dataset(db, classes=CLASSES)


def test_compare_gives_per_class_and_headline_deltas(db, ds):
    base = make_run(db, ds, 1, valid=metrics(BASE_TRUE, BASE_PRED))
    run = make_run(db, ds, 1, valid=metrics(BASE_TRUE, RUN_PRED))
    c = cmp.compare(db, run, base)
    assert (c.run_id, c.base_run_id, c.split, c.dataset_id) == (run.id, base.id, "valid", ds.id)
    assert list(c.per_class) == CLASSES
    # base: cat p=2/4 r=2/3; run: cat p=3/4 r=3/3
    cat = c.per_class["cat"]
    assert cat.base_precision == pytest.approx(0.5) and cat.precision == pytest.approx(0.75)
    assert cat.precision_delta == pytest.approx(0.25)
    assert cat.base_recall == pytest.approx(2 / 3) and cat.recall == 1.0
    assert cat.recall_delta == pytest.approx(1 / 3)
    base_f1 = 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3)
    assert cat.base_f1 == pytest.approx(base_f1)
    assert cat.f1 == pytest.approx(2 * 0.75 / 1.75)
    assert cat.delta == pytest.approx(2 * 0.75 / 1.75 - base_f1)
    assert (cat.support, cat.base_support) == (3, 3)
    # dog: base p=1/2 r=1/2, run p=1/1 r=1/2
    dog = c.per_class["dog"]
    assert dog.precision_delta == pytest.approx(0.5) and dog.recall_delta == 0.0
    fox = c.per_class["fox"]
    assert fox.delta == pytest.approx(1.0 - 0.8)
    assert c.base_accuracy == pytest.approx(5 / 8) and c.accuracy == pytest.approx(7 / 8)
    assert c.accuracy_delta == pytest.approx(2 / 8)
    assert c.macro_f1_delta == pytest.approx(c.macro_f1 - c.base_macro_f1)
    assert c.macro_f1_delta > 0
    assert c.labels_changed == 0 and c.moves == []


def test_labels_changed_counts_label_events_between_the_two_versions(db, ds):
    other = make_dataset(db, classes=CLASSES)
    s = add_samples(db, ds, [{"label": "cat"} for _ in range(6)])
    o = add_samples(db, other, [{"label": "cat"}])
    relabel(db, ds, s[0], "cat", "dog", 2)  # before the base run's version: not counted
    relabel(db, ds, s[1], "cat", "dog", 3)  # the base run saw version 3: not counted
    relabel(db, ds, s[2], "cat", "dog", 4)
    relabel(db, ds, s[3], "cat", "dog", 5)
    relabel(db, ds, s[4], "fox", "cat", 5)
    relabel(db, ds, s[5], None, "fox", 6, old_split="unlabelled")  # an unlabelled sample got a label
    relabel(db, ds, s[0], "dog", "dog", 6, old_split="train", new_split="valid")  # a split move only
    relabel(db, ds, s[1], "dog", "cat", 7)  # after the newer run: not counted
    relabel(db, other, o[0], "cat", "dog", 5)  # another dataset
    base = make_run(db, ds, 3, valid=metrics(BASE_TRUE, BASE_PRED))
    run = make_run(db, ds, 6, valid=metrics(BASE_TRUE, RUN_PRED))

    c = cmp.compare(db, run, base)
    assert c.labels_changed == 4
    assert (c.label_version, c.base_label_version) == (6, 3)
    assert [(m.old_label, m.new_label, m.count) for m in c.moves] == [
        ("cat", "dog", 2), (None, "fox", 1), ("fox", "cat", 1)]
    assert {n: (pc.labels_in, pc.labels_out) for n, pc in c.per_class.items()} == {
        "cat": (1, 2), "dog": (2, 0), "fox": (1, 1)}

    # Compared the other way round, the same events lie between the two runs.
    back = cmp.compare(db, base, run)
    assert back.labels_changed == 4
    assert back.per_class["cat"].delta == pytest.approx(-c.per_class["cat"].delta)


def test_without_a_base_run_there_are_no_deltas(db, ds):
    run = make_run(db, ds, 2, valid=metrics(BASE_TRUE, RUN_PRED))
    c = cmp.compare(db, run, None)
    assert c.base_run_id is None and c.labels_changed is None and c.moves == []
    assert c.accuracy == pytest.approx(7 / 8) and c.accuracy_delta is None
    assert all(pc.delta is None and pc.base_f1 is None and pc.f1 is not None for pc in c.per_class.values())


def test_a_split_without_metrics_and_a_class_only_one_run_knows(db, ds):
    base = make_run(db, ds, 1, valid=metrics(["cat", "dog", "owl"], ["cat", "dog", "owl"], ["cat", "dog", "owl"]))
    run = make_run(db, ds, 1, valid=metrics(BASE_TRUE, RUN_PRED))
    c = cmp.compare(db, run, base)
    assert list(c.per_class) == ["cat", "dog", "fox", "owl"]
    assert c.per_class["owl"].f1 is None and c.per_class["owl"].base_f1 == 1.0 and c.per_class["owl"].delta is None
    assert c.per_class["fox"].base_f1 is None and c.per_class["fox"].delta is None
    t = cmp.compare(db, run, base, split="test")
    assert t.split == "test" and t.accuracy is None and t.per_class == {}


def test_latest_and_previous_runs_skip_runs_that_did_not_succeed(db, ds):
    first = make_run(db, ds, 1)
    make_run(db, ds, 1, status="failed")
    second = make_run(db, ds, 2)
    make_run(db, ds, 3, status="running")
    assert cmp.latest_run(db, ds.id).id == second.id
    assert cmp.previous_run(db, second).id == first.id
    assert cmp.previous_run(db, first) is None
    assert cmp.latest_run(db, make_dataset(db).id) is None


def test_run_history_lists_f1_per_run_and_labels_changed_between_runs(db, ds):
    s = add_samples(db, ds, [{"label": "cat"} for _ in range(4)])
    r1 = make_run(db, ds, 1, valid=metrics(BASE_TRUE, BASE_PRED))
    relabel(db, ds, s[0], "cat", "dog", 2)
    relabel(db, ds, s[1], "cat", "fox", 3)
    make_run(db, ds, 3, status="failed")
    r2 = make_run(db, ds, 3, valid=metrics(BASE_TRUE, RUN_PRED))
    r3 = make_run(db, ds, 3, valid=metrics(BASE_TRUE, BASE_TRUE))
    relabel(db, ds, s[2], "cat", "dog", 4)  # after every run
    h = cmp.run_history(db, ds.id)
    assert [p.run_id for p in h.runs] == [r1.id, r2.id, r3.id]
    assert [p.labels_changed for p in h.runs] == [None, 2, 0]
    assert [p.label_version for p in h.runs] == [1, 3, 3]
    assert h.runs[2].accuracy == 1.0 and h.runs[0].macro_f1 == pytest.approx(r1.metrics["valid"]["macro_f1"])
    assert list(h.f1) == CLASSES
    assert h.f1["fox"] == [pytest.approx(0.8), 1.0, 1.0]
    assert h.delta["fox"] == 0.0
    assert h.delta["cat"] == pytest.approx(1.0 - 2 * 0.75 / 1.75)
    assert cmp.run_history(db, ds.id, limit=2).runs[0].run_id == r2.id
    assert cmp.run_history(db, ds.id, limit=2).runs[0].labels_changed is None
    single = cmp.run_history(db, make_dataset(db).id)
    assert single.runs == [] and single.f1 == {}


def test_per_class_rows_put_the_worst_valid_f1_first():
    run = Run(metrics={"valid": metrics(BASE_TRUE, BASE_PRED), "test": metrics(["fox", "dog"], ["fox", "fox"])})
    rows = cmp.per_class_rows(run)
    assert [r["name"] for r in rows] == ["dog", "cat", "fox"]
    assert rows[0]["valid"]["f1"] == 0.5 and rows[0]["test"]["f1"] == 0.0
    only_test = Run(metrics={"valid": None, "test": metrics(["fox", "dog", "cat"], ["fox", "fox", "cat"])})
    rows = cmp.per_class_rows(only_test)
    assert [r["name"] for r in rows] == ["dog", "fox", "cat"] and rows[0]["valid"] is None


def test_heat_levels():
    assert cmp.heat_level(0, 0.0, diagonal=True) == 0
    assert cmp.heat_level(0, 0.0, diagonal=False) == 0
    assert cmp.heat_level(1, 0.01, diagonal=True) == 1
    assert cmp.heat_level(9, 0.9, diagonal=True) == 5
    assert cmp.heat_level(10, 1.0, diagonal=True) == 5
    assert cmp.heat_level(1, 0.01, diagonal=False) == 1
    assert cmp.heat_level(1, 0.04, diagonal=False) == 2
    assert cmp.heat_level(1, 0.08, diagonal=False) == 3
    assert cmp.heat_level(1, 0.15, diagonal=False) == 4
    assert cmp.heat_level(1, 0.5, diagonal=False) == 5


def test_confusion_view_rows_and_most_confused_pairs():
    m = {"confusion": {"labels": ["a", "b", "c"], "matrix": [[8, 2, 0], [5, 5, 0], [1, 0, 0]]}}
    v = cmp.confusion_view(m)
    assert v["labels"] == ["a", "b", "c"]
    a, b, c = v["rows"]
    assert (a["given"], a["total"]) == ("a", 10)
    assert [(x["count"], x["level"], x["diagonal"]) for x in a["cells"]] == [(8, 4, True), (2, 4, False), (0, 0, False)]
    assert b["cells"][0]["share"] == 0.5 and b["cells"][0]["level"] == 5
    assert c["total"] == 1 and c["cells"][2] == {"predicted": "c", "count": 0, "share": 0.0, "diagonal": True, "level": 0}
    assert [(p["given"], p["predicted"], p["count"]) for p in v["pairs"]] == [("b", "a", 5), ("a", "b", 2), ("c", "a", 1)]
    assert len(cmp.confusion_view(m, top=2)["pairs"]) == 2
    assert cmp.confusion_view(None) is None and cmp.confusion_view({"accuracy": 1.0}) is None


def test_class_distribution_counts_labelled_samples_per_split(db, ds):
    add_samples(db, ds, [
        {"label": "cat"}, {"label": "cat"}, {"label": "dog"},
        {"label": "dog", "split": "valid"}, {"label": "fox", "split": "test"},
        {"label": None}, {"label": None},
    ])
    other = make_dataset(db, classes=CLASSES)
    add_samples(db, other, [{"label": "fox"}])
    d = cmp.class_distribution(db, ds)
    assert d == {
        "train": {"cat": 2, "dog": 1, "fox": 0},
        "valid": {"cat": 0, "dog": 1, "fox": 0},
        "test": {"cat": 0, "dog": 0, "fox": 1},
    }
    assert list(d["train"]) == CLASSES, "classes keep the dataset's order"
    # The overview's one walk: the same distribution, and every sample counted in its split.
    counts = cmp.split_class_counts(db, ds)
    assert cmp.class_distribution(db, ds, counts) == d
    assert sorted(counts, key=str) == [("test", "fox", 1), ("train", "cat", 2), ("train", "dog", 1),
                                       ("unlabelled", None, 2), ("valid", "dog", 1)]


def test_compare_runs_picks_the_latest_run_and_the_one_before_it(db, ds):
    from app.errors import Conflict, NotFound

    first = make_run(db, ds, 1, valid=metrics(BASE_TRUE, BASE_PRED))
    make_run(db, ds, 1, valid=None, status="failed")
    second = make_run(db, ds, 2, valid=metrics(BASE_TRUE, RUN_PRED))
    c = cmp.compare_runs(db, ds.id)
    assert (c.run_id, c.base_run_id) == (second.id, first.id)
    assert cmp.compare_runs(db, ds.id, run_id=first.id).base_run_id is None
    assert cmp.compare_runs(db, ds.id, run_id=first.id, base_id=second.id).base_run_id == second.id
    other = make_dataset(db, classes=CLASSES)
    foreign = make_run(db, other, 1)
    for kwargs in ({"run_id": foreign.id}, {"base_id": foreign.id}, {"run_id": 10**9}):
        with pytest.raises(NotFound):
            cmp.compare_runs(db, ds.id, **kwargs)
    with pytest.raises(Conflict):
        cmp.compare_runs(db, make_dataset(db).id)
