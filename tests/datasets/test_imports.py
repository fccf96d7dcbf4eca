"""Importing CSV, JSONL and Parquet: validation by row and field, all or nothing, updates."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.datasets import importers
from app.models import LabelEvent
from tests.builders import add_samples, make_dataset
from tests.datasets.helpers import (
    csv_bytes,
    dataset,
    error_at,
    jsonl_bytes,
    parquet_bytes,
    samples,
    upload,
)

TABULAR = csv_bytes(
    "id,label,split,f0,f1",
    "a1,cat,,1.5,-2",
    "a2,dog,valid,,3",
    "a3,,,4,5e-3",
    "a4,dog,test,0,1",
)


def test_tabular_csv_sets_classes_features_and_splits(client, db, engineer):
    ds = make_dataset(db, "tabular", classes=[])
    r = upload(client, ds.id, "data.csv", TABULAR, engineer.headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["imported"], body["updated"], body["duplicates"]) == (4, 0, [])
    assert body["classes"] == ["cat", "dog"]

    d = dataset(db, ds.id)
    assert d.classes == ["cat", "dog"]
    assert d.settings["features"] == ["f0", "f1"]
    assert d.settings["unlabelled_joins_train"] is True  # other settings kept
    assert d.label_version == 1
    got = {s.external_id: s for s in samples(db, ds.id)}
    assert [(s.split, s.label, s.original_label) for s in got.values()] == [
        ("train", "cat", "cat"), ("valid", "dog", "dog"), ("unlabelled", None, None), ("test", "dog", "dog"),
    ]
    assert got["a1"].features == {"f0": 1.5, "f1": -2.0}
    assert got["a2"].features == {"f0": None, "f1": 3.0}
    assert got["a3"].features == {"f0": 4.0, "f1": 0.005}
    assert all(isinstance(v, float) for v in got["a4"].features.values())
    assert all(s.version == 1 and not s.reviewed for s in got.values())


def test_text_import_in_every_format(client, db, engineer):
    rows = [
        {"id": "t1", "label": "pos", "text": "good, \"very\" good\nreally"},
        {"id": "t2", "label": "neg", "split": "valid", "text": "bad"},
        {"id": "t3", "label": "", "text": "  spaced  "},
    ]
    files = {
        "a.csv": csv_bytes("id,label,split,text", 't1,pos,,"good, ""very"" good\nreally"', "t2,neg,valid,bad", "t3,,,  spaced  "),
        "a.jsonl": jsonl_bytes(rows),
        "a.parquet": parquet_bytes({k: [r.get(k, "") for r in rows] for k in ("id", "label", "split", "text")}),
    }
    for name, data in files.items():
        ds = make_dataset(db, "text", classes=[])
        r = upload(client, ds.id, name, data, engineer.headers)
        assert r.status_code == 201, (name, r.text)
        got = samples(db, ds.id)
        assert [(s.external_id, s.split, s.label, s.text) for s in got] == [
            ("t1", "train", "pos", 'good, "very" good\nreally'),
            ("t2", "valid", "neg", "bad"),
            ("t3", "unlabelled", None, "  spaced  "),
        ], name
        assert dataset(db, ds.id).classes == ["neg", "pos"]


def test_jsonl_numbers_and_missing_keys(client, db, engineer):
    ds = make_dataset(db, "tabular", classes=["a", "b"])
    data = jsonl_bytes([{"id": 1, "label": "a", "x": 1, "y": 2.5}, {"id": 2, "label": "b", "x": None}])
    r = upload(client, ds.id, "rows.jsonl", data, engineer.headers)
    assert r.status_code == 201, r.text
    assert [(s.external_id, s.features) for s in samples(db, ds.id)] == [
        ("1", {"x": 1.0, "y": 2.5}), ("2", {"x": None, "y": None}),
    ]


@pytest.mark.parametrize(
    ("lines", "row", "field", "words"),
    [
        (["id,label,split,f0", "a,a,training,1"], 1, "split", "unknown split 'training'"),
        (["id,label,f0", "a,a,1", "b,zebra,2"], 2, "label", "'zebra' is not one of the dataset's classes"),
        (["id,label,f0", "a,a,1", "b,b,x1"], 2, "f0", "'x1' is not a number"),
        (["id,label,f0", "a,a,1", "b,b,inf"], 2, "f0", "not a finite number"),
        (["id,label,f0", "a,a,1", "a,b,2"], 2, "id", "duplicate id 'a' (also on row 1)"),
        (["id,label,split,f0", "a,a,unlabelled,1"], 1, "split", "labelled sample ('a') cannot be in the unlabelled split"),
        (["id,label,split,f0", "a,,train,1"], 1, "label", "a sample in split train needs a label"),
        (["id,label,f0", "a,a,1", "b,b,2,3"], 2, "row", "expected 3 columns, found 4"),
        (["id,label", "a,a"], None, "features", "no feature columns"),
        (["label,f0,loss", "a,1,2"], None, "loss", "exports use that column name"),
    ],
)
def test_bad_rows_are_named_and_nothing_is_written(client, db, engineer, lines, row, field, words):
    ds = make_dataset(db, "tabular", classes=["a", "b"])
    r = upload(client, ds.id, "bad.csv", csv_bytes(*lines), engineer.headers)
    assert r.status_code == 422, r.text
    body = r.json()
    assert "nothing was imported" in body["detail"]
    assert words in error_at(body, row, field)
    assert samples(db, ds.id) == []
    assert dataset(db, ds.id).label_version == 0


def test_text_rows_need_text(client, db, engineer):
    ds = make_dataset(db, "text", classes=["a", "b"])
    r = upload(client, ds.id, "t.csv", csv_bytes("label,text", "a,hello", "b,   "), engineer.headers)
    assert r.status_code == 422
    assert error_at(r.json(), 2, "text") == "missing text"
    r = upload(client, ds.id, "t.csv", csv_bytes("label", "a"), engineer.headers)
    assert "no text column" in error_at(r.json(), None, "text")


def test_jsonl_bad_lines_and_mixed_types_are_named(client, db, engineer):
    ds = make_dataset(db, "tabular", classes=["a", "b"])
    r = upload(client, ds.id, "x.jsonl", b'{"label": "a", "f": 1}\n{"label": "b", "f": 2\n[1]\n', engineer.headers)
    assert r.status_code == 422
    assert "not valid JSON" in error_at(r.json(), 2, "json")
    assert "JSON object" in error_at(r.json(), 3, "json")
    r = upload(client, ds.id, "x.jsonl", jsonl_bytes([{"label": "a", "f": 1}, {"label": "b", "f": "high"}]), engineer.headers)
    assert r.status_code == 422
    assert error_at(r.json(), 2, "f") == "'high' is not a number"


def test_all_or_nothing_with_many_good_rows(client, db, engineer):
    ds = make_dataset(db, "tabular", classes=[])
    lines = ["id,label,f0"] + [f"r{i},{'ab'[i % 2]},{i}" for i in range(500)] + ["r500,c,oops"]
    r = upload(client, ds.id, "big.csv", csv_bytes(*lines), engineer.headers)
    assert r.status_code == 422
    assert error_at(r.json(), 501, "f0") == "'oops' is not a number"
    d = dataset(db, ds.id)
    assert (samples(db, ds.id), d.classes, d.label_version, d.settings.get("features")) == ([], [], 0, None)


def test_errors_are_capped_and_the_rest_counted(client, db, engineer, settings):
    settings.max_import_errors = 3
    ds = make_dataset(db, "tabular", classes=["a", "b"])
    lines = ["label,f0"] + [f"zebra,{i}" for i in range(10)]
    body = upload(client, ds.id, "z.csv", csv_bytes(*lines), engineer.headers).json()
    assert [e["row"] for e in body["errors"]] == [1, 2, 3]
    assert body["more_errors"] == 7
    assert "10 errors" in body["detail"] and "7 more" in body["detail"]


def test_first_import_needs_two_classes(client, db, engineer):
    ds = make_dataset(db, "tabular", classes=[])
    r = upload(client, ds.id, "one.csv", csv_bytes("label,f0", "a,1", "a,2"), engineer.headers)
    assert r.status_code == 422
    assert "needs two" in error_at(r.json(), None, "label")


@pytest.mark.parametrize(
    ("task", "name", "data", "words"),
    [
        ("tabular", "data.xlsx", b"PK", "unsupported file type"),
        ("tabular", "data.zip", b"PK", "tabular dataset imports CSV, JSONL or Parquet"),
        ("image", "data.csv", b"image,label\n", "image dataset imports a ZIP"),
        ("tabular", "data.parquet", b"not parquet at all", "not a readable Parquet file"),
        ("tabular", "data.csv", b"", "the file is empty"),
        ("tabular", "data.csv", b"label,f0\n", "holds no rows"),
    ],
)
def test_wrong_file_types_are_refused(client, db, engineer, task, name, data, words):
    ds = make_dataset(db, task, classes=["a", "b"])
    r = upload(client, ds.id, name, data, engineer.headers)
    assert r.status_code == 422, r.text
    (e,) = r.json()["errors"]
    assert e["row"] is None and e["field"] == "file"
    assert words in e["message"]


@pytest.mark.parametrize(
    ("task", "name", "data", "row", "field", "bad"),
    [
        # Row 3, after a value that spans two lines: rows are CSV records, not lines.
        ("text", "t.csv", b'id,label,text\nt1,a,"two\nlines"\nt2,b,fine\nt3,a,caf\xe9 au lait\n', 3, "text", b"\xe9"),
        ("tabular", "f.csv", b"label,f0\na,1\nb,2\xff\n", 2, "f0", b"\xff"),
        ("tabular", "l.csv", b"label,f0\na,1\n\xff\xfe,1\n", 2, "label", b"\xff\xfe"),
        ("tabular", "h.csv", b"label,f\x80\na,1\n", None, "header", b"\x80"),
        ("tabular", "v.jsonl", b'{"label": "a", "f": 1}\n\n{"label": "b\xc3", "f": 2}\n', 2, "label", b"\xc3"),
        ("tabular", "k.jsonl", b'{"label": "a", "f": 1}\n{"label": "b", "f\xff": 2}\n', 2, "f\ufffd", b"\xff"),
        ("tabular", "m.jsonl", b'{"label": "a", "f": 1}\n{"label": "b\xff", "f": "mixed"}\n', 2, "label", b"\xff"),
    ],
)
def test_bytes_that_are_not_utf8_are_named_by_row_and_column(client, db, engineer, task, name, data, row, field, bad):
    ds = make_dataset(db, task, classes=["a", "b"])
    r = upload(client, ds.id, name, data, engineer.headers)
    assert r.status_code == 422, r.text
    (e,) = r.json()["errors"]
    assert (e["row"], e["field"]) == (row, field), e
    assert f"{bad!r} is not valid UTF-8" in e["message"]
    assert samples(db, ds.id) == []


def test_row_limit(client, db, engineer, settings):
    settings.max_import_rows = 2
    ds = make_dataset(db, "tabular", classes=["a", "b"])
    r = upload(client, ds.id, "rows.csv", csv_bytes("label,f0", "a,1", "a,2", "b,3"), engineer.headers)
    assert r.status_code == 422
    assert "3 rows; the limit is 2" in error_at(r.json(), None, "file")


def test_second_import_adds_and_moves_the_label_version(client, db, engineer):
    ds = make_dataset(db, "tabular", classes=[])
    assert upload(client, ds.id, "1.csv", TABULAR, engineer.headers).status_code == 201
    r = upload(client, ds.id, "2.csv", csv_bytes("id,label,f1,f0", "b1,cat,7,8", ",dog,1,"), engineer.headers)
    assert r.status_code == 201, r.text
    assert (r.json()["imported"], r.json()["label_version"]) == (2, 2)
    got = samples(db, ds.id)
    assert len(got) == 6
    # Columns in another order, or left out, still land under their feature names.
    assert (got[4].external_id, got[4].features) == ("b1", {"f0": 8.0, "f1": 7.0})
    assert (got[5].external_id, got[5].features) == (None, {"f0": None, "f1": 1.0})
    d = dataset(db, ds.id)
    assert (d.settings["features"], d.label_version) == (["f0", "f1"], 2)


def test_later_imports_keep_to_the_classes_and_features(client, db, engineer):
    ds = make_dataset(db, "tabular", classes=[])
    upload(client, ds.id, "1.csv", TABULAR, engineer.headers)
    r = upload(client, ds.id, "2.csv", csv_bytes("label,f0,f9", "bird,1,2"), engineer.headers)
    assert r.status_code == 422
    body = r.json()
    assert "unknown feature column 'f9'" in error_at(body, None, "f9")
    assert "'bird' is not one of the dataset's classes" in error_at(body, 1, "label")


def test_existing_id_is_an_error_without_update(client, db, engineer):
    ds = make_dataset(db, "tabular", classes=["a", "b"])
    add_samples(db, ds, [{"external_id": "x1", "label": "a"}])
    r = upload(client, ds.id, "d.csv", csv_bytes("id,label,x", "x1,b,1", "x2,b,2"), engineer.headers)
    assert r.status_code == 422
    assert "already exists" in error_at(r.json(), 1, "id")
    assert len(samples(db, ds.id)) == 1


def test_update_changes_labels_and_writes_one_event_per_change(client, db, engineer):
    ds = make_dataset(db, "tabular", classes=["a", "b"])
    add_samples(db, ds, [
        {"external_id": "x1", "label": "a"},
        {"external_id": "x2", "label": "a"},
        {"external_id": "x3", "label": None},
        {"external_id": "x4", "label": "b", "split": "test"},
    ])
    lines = ["id,label,split,x", "x1,b,,1", "x2,a,,1", "x3,b,valid,1", "x4,b,test,1", "x5,a,,9"]
    r = upload(client, ds.id, "u.csv", csv_bytes(*lines), engineer.headers, on_conflict="update")
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["imported"], body["updated"], body["unchanged"], body["label_version"]) == (1, 2, 2, 1)

    got = {s.external_id: s for s in samples(db, ds.id)}
    assert (got["x1"].label, got["x1"].original_label, got["x1"].version) == ("b", "a", 2)
    assert (got["x2"].label, got["x2"].version) == ("a", 1)
    assert (got["x3"].label, got["x3"].split, got["x3"].original_label) == ("b", "valid", None)
    assert got["x3"].features == {"x": 2.0}  # an update changes label and split only
    assert (got["x5"].label, got["x5"].original_label) == ("a", "a")
    events = db.scalars(select(LabelEvent).where(LabelEvent.dataset_id == ds.id).order_by(LabelEvent.sample_id)).all()
    assert [(e.sample_id, e.old_label, e.new_label, e.old_split, e.new_split) for e in events] == [
        (got["x1"].id, "a", "b", "train", "train"),
        (got["x3"].id, None, "b", "unlabelled", "valid"),
    ]
    assert {(e.source, e.label_version, e.user_id) for e in events} == {("import", 1, engineer.user.id)}
    assert dataset(db, ds.id).label_version == 1


def test_update_only_file_needs_no_content_columns(client, db, engineer):
    ds = make_dataset(db, "text", classes=["a", "b"])
    add_samples(db, ds, [{"external_id": "x1", "label": "a"}])
    r = upload(client, ds.id, "u.csv", csv_bytes("id,label", "x1,b"), engineer.headers, on_conflict="update")
    assert r.status_code == 201, r.text
    assert [(s.label, s.text) for s in samples(db, ds.id)] == [("b", "sample 0")]


def test_an_import_of_an_export_ignores_the_export_columns(client, db, engineer):
    ds = make_dataset(db, "tabular", classes=[])
    upload(client, ds.id, "1.csv", TABULAR, engineer.headers)
    exported = client.get(f"/api/v1/datasets/{ds.id}/export", headers=engineer.headers).content
    again = make_dataset(db, "tabular", classes=[])
    r = upload(client, again.id, "export.csv", exported, engineer.headers)
    assert r.status_code == 201, r.text
    assert "label_source" in r.json()["ignored_columns"] and "loss" in r.json()["ignored_columns"]
    pick = lambda d: [(s.external_id, s.split, s.label, s.features) for s in samples(db, d)]  # noqa: E731
    assert pick(again.id) == pick(ds.id)
    assert dataset(db, again.id).settings["features"] == ["f0", "f1"]


def test_a_csv_export_is_unescaped_and_other_csvs_are_not(client, db, engineer):
    export = csv_bytes(
        "id,split,label,label_source,\"'=SUM(A1)\",''quoted,\"multi",
        "line\",predicted,loss",
        "''x,train,''a,original,1,2,3,,",
        "'=1+1,valid,b,original,4,5,6,'=cmd,",
        "\"'-2",
        "lines\",test,''a,corrected,7,8,9,,",
        "in'side,train,b,original,10,11,12,,",
    )
    ds = make_dataset(db, "tabular", classes=[])
    r = upload(client, ds.id, "export.csv", export, engineer.headers)
    assert r.status_code == 201, r.text
    assert dataset(db, ds.id).settings["features"] == ["=SUM(A1)", "'quoted", "multi\nline"]
    assert dataset(db, ds.id).classes == ["'a", "b"]
    assert [(s.external_id, s.split, s.label, s.features) for s in samples(db, ds.id)] == [
        ("'x", "train", "'a", {"=SUM(A1)": 1.0, "'quoted": 2.0, "multi\nline": 3.0}),
        ("=1+1", "valid", "b", {"=SUM(A1)": 4.0, "'quoted": 5.0, "multi\nline": 6.0}),
        ("-2\nlines", "test", "'a", {"=SUM(A1)": 7.0, "'quoted": 8.0, "multi\nline": 9.0}),
        ("in'side", "train", "b", {"=SUM(A1)": 10.0, "'quoted": 11.0, "multi\nline": 12.0}),
    ]
    # Without a label_source column a file is not an export: its apostrophes are data.
    plain = make_dataset(db, "tabular", classes=[])
    r = upload(client, plain.id, "mine.csv", csv_bytes("id,label,'f", "'x,'a,1", "y,b,2"), engineer.headers)
    assert r.status_code == 201, r.text
    assert dataset(db, plain.id).settings["features"] == ["'f"]
    assert [(s.external_id, s.label) for s in samples(db, plain.id)] == [("'x", "'a"), ("y", "b")]


def test_integral_floats_past_2_to_the_53_are_stored_as_numbers(client, db, engineer):
    ds = make_dataset(db, "tabular", classes=["a", "b"])
    values = [2.0**53, 1e15, 1e16, -1e17, 123.0, -0.0, 1.5]
    lines = ["id,label,v"] + [f"r{i},a,{v!r}" for i, v in enumerate(values)]
    r = upload(client, ds.id, "big.csv", csv_bytes(*lines), engineer.headers)
    assert r.status_code == 201, r.text
    assert [float(s.features["v"]) for s in samples(db, ds.id)] == values


def test_import_service_refuses_an_unknown_conflict_mode(db, settings):
    ds = make_dataset(db, "tabular")
    with pytest.raises(ValueError):
        importers.import_file(db, ds, None, "x.csv", on_conflict="replace", settings=settings)


def test_roles_and_unknown_dataset(client, db, engineer, annotator):
    ds = make_dataset(db, "tabular", classes=["a", "b"])
    assert upload(client, ds.id, "d.csv", csv_bytes("label,x", "a,1"), annotator.headers).status_code == 403
    assert upload(client, ds.id, "d.csv", csv_bytes("label,x", "a,1"), {}).status_code == 401
    assert upload(client, 999999, "d.csv", csv_bytes("label,x", "a,1"), engineer.headers).status_code == 404
    assert upload(client, ds.id, "d.csv", b"label,x\na,1\n", engineer.headers, on_conflict="merge").status_code == 422
    assert samples(db, ds.id) == []
