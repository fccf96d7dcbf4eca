"""Exports: columns, label_source, latest scores, formula escaping, snapshots, streaming.

The curation columns (ids, reviewed, the run's verdicts, urls) and the dtype hints:
test_export_curation.py."""

from __future__ import annotations

import csv
import io
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.datasets import exporters
from app.datasets.export_encoding import jsonl_chunk
from app.datasets.service import create_snapshot
from app.models import Prediction, Run, Sample
from tests.builders import add_samples, make_dataset
from tests.datasets.helpers import csv_bytes, png, upload, zip_bytes

HEAD = ["id", "sample_id", "external_id", "split", "label", "label_source", "reviewed"]
SCORES = ["loss", "self_confidence", "normalized_margin", "confusion_margin", "entropy"]
RUN = ["run_id", "predicted", *SCORES, "aum", "combined", "flagged", "suggested_label", "priority", "outlier",
       "duplicate_group"]
CONSENSUS = ["consensus_label", "consensus_rule", "annotations", "agreement"]
# Where a tabular export's features are: between the head and the run's columns.
FEATURES = slice(len(HEAD), -(len(RUN) + len(CONSENSUS)))


def export(client, ds_id: int, headers: dict, **params):
    r = client.get(f"/api/v1/datasets/{ds_id}/export", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r


def read_csv(r) -> list[dict]:
    return list(csv.DictReader(io.StringIO(r.content.decode(), newline="")))


def read_jsonl(r) -> list[dict]:
    return [json.loads(line) for line in r.content.decode().splitlines()]


def read_parquet(r) -> list[dict]:
    return pq.read_table(io.BytesIO(r.content)).to_pylist()


def tabular(db, classes=("a", "b")):
    ds = make_dataset(db, "tabular", classes=list(classes), settings={"features": ["z", "x"]})
    rows = add_samples(db, ds, [
        {"external_id": "s1", "label": "a", "features": {"x": 1.5, "z": -2.25}},
        {"external_id": None, "label": "b", "original_label": "a", "split": "valid", "features": {"x": 0.1, "z": None}},
        {"external_id": "s3", "label": None, "features": {"x": -1e-7, "z": 3.0}},
        {"external_id": "s4", "label": "b", "original_label": None, "features": {"x": 2.0, "z": 1e20}},
    ])
    return ds, rows


def add_run(db, ds, status="succeeded", preds=None) -> Run:
    run = Run(dataset_id=ds.id, status=status, label_version=0)
    db.add(run)
    db.flush()
    for sample, (label, loss) in (preds or {}).items():
        db.add(Prediction(run_id=run.id, sample_id=sample.id, given_label=sample.label, label=label, probs={label: 0.9},
                          loss=loss, self_confidence=0.25, normalized_margin=-0.5, confusion_margin=0.125,
                          confusion_a=label, confusion_b="a", entropy=0.75))
    db.commit()
    return run


def test_csv_columns_label_source_and_feature_order(client, db, engineer):
    ds, rows = tabular(db)
    r = export(client, ds.id, engineer.headers)
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == f'attachment; filename="{ds.name}.csv"'
    got = read_csv(r)
    assert list(got[0]) == [*HEAD, "z", "x", *RUN, *CONSENSUS]
    assert [(g["id"], g["split"], g["label"], g["label_source"]) for g in got] == [
        ("s1", "train", "a", "original"),
        (str(rows[1].id), "valid", "b", "corrected"),  # no external id: the internal one
        ("s3", "unlabelled", "", ""),
        ("s4", "train", "b", "corrected"),  # labelled later: not the imported label
    ]
    assert [(float(g["z"]) if g["z"] else None, float(g["x"])) for g in got] == [
        (-2.25, 1.5), (None, 0.1), (3.0, -1e-7), (1e20, 2.0),
    ]
    assert all(g[c] == "" for g in got for c in [*RUN, "consensus_label", "consensus_rule", "agreement"])
    assert all(g["annotations"] == "0" for g in got)


def test_scores_come_from_the_latest_succeeded_run(client, db, engineer):
    ds, rows = tabular(db)
    add_run(db, ds, preds={rows[0]: ("a", 9.0)})
    add_run(db, ds, preds={rows[0]: ("b", 0.5), rows[2]: ("a", 1.25)})
    add_run(db, ds, status="failed", preds={rows[0]: ("a", 7.0)})
    other = make_dataset(db, "tabular")
    add_run(db, other)
    for fmt, read in (("csv", read_csv), ("jsonl", read_jsonl), ("parquet", read_parquet)):
        got = read(export(client, ds.id, engineer.headers, format=fmt))
        assert [g["predicted"] or None for g in got] == ["b", None, "a", None], fmt
        assert float(got[0]["loss"]) == 0.5 and float(got[2]["loss"]) == 1.25
        assert [float(got[0][c]) for c in SCORES] == [0.5, 0.25, -0.5, 0.125, 0.75]
        assert got[1]["loss"] in ("", None)


def test_jsonl_and_parquet_carry_values_unchanged(client, db, engineer):
    ds = make_dataset(db, "text", classes=["-neg", "pos"])
    add_samples(db, ds, [
        {"external_id": "=1+1", "label": "-neg", "text": '@SUM(A1)\n"quoted", tab\there'},
        {"external_id": "plain", "label": "pos", "text": "ünïcødé ✓"},
    ])
    expected = [
        {"id": "=1+1", "split": "train", "label": "-neg", "label_source": "original", "text": '@SUM(A1)\n"quoted", tab\there'},
        {"id": "plain", "split": "train", "label": "pos", "label_source": "original", "text": "ünïcødé ✓"},
    ]
    for fmt, read in (("jsonl", read_jsonl), ("parquet", read_parquet)):
        got = read(export(client, ds.id, engineer.headers, format=fmt))
        assert [{k: g[k] for k in expected[0]} for g in got] == expected, fmt
        assert all(g["predicted"] is None and g["loss"] is None for g in got)


def test_jsonl_numbers_are_exact_floats(client, db, engineer):
    ds, _ = tabular(db)
    text = export(client, ds.id, engineer.headers, format="jsonl").content.decode()
    first, second, third, fourth = (json.loads(line) for line in text.splitlines())
    assert (first["z"], first["x"]) == (-2.25, 1.5)
    assert second["z"] is None and third["x"] == -1e-7
    assert isinstance(fourth["x"], float) and fourth["x"] == 2.0 and fourth["z"] == 1e20


def test_csv_escapes_formulas_in_text_but_not_numbers(client, db, engineer):
    ds = make_dataset(db, "tabular", classes=["-neg", "pos"], settings={"features": ["v"]})
    add_samples(db, ds, [
        {"external_id": "=HYPERLINK(1)", "label": "-neg", "features": {"v": -1.5}},
        {"external_id": "+1", "label": "pos", "features": {"v": 2.0}},
        {"external_id": "@cmd", "label": "pos", "features": {"v": -3.0}},
        {"external_id": "\tx", "label": "pos", "features": {"v": 0.0}},
        {"external_id": "\rx", "label": "pos", "features": {"v": 1.0}},
        {"external_id": "-2", "label": "pos", "features": {"v": 1.0}},
        {"external_id": "safe=1", "label": "pos", "features": {"v": 1.0}},
    ])
    add_run(db, ds, preds={s: ("-neg", 1.0) for s in db.query(Sample).filter_by(dataset_id=ds.id)})
    got = read_csv(export(client, ds.id, engineer.headers))
    assert [g["id"] for g in got] == ["'=HYPERLINK(1)", "'+1", "'@cmd", "'\tx", "'\rx", "'-2", "safe=1"]
    assert {g["label"] for g in got} == {"'-neg", "pos"}
    assert {g["predicted"] for g in got} == {"'-neg"}
    assert [float(g["v"]) for g in got][:3] == [-1.5, 2.0, -3.0]
    assert got[0]["v"] == "-1.5"  # a negative number is a number, not a formula
    assert float(got[0]["normalized_margin"]) == -0.5


def test_text_and_image_columns(client, db, engineer):
    ds = make_dataset(db, "text", classes=["a", "b"])
    add_samples(db, ds, [{"external_id": "t", "label": "a", "text": "=cmd|' /C calc'!A0"}])
    got = read_csv(export(client, ds.id, engineer.headers))
    assert list(got[0]) == [*HEAD, "text", "url", *RUN, *CONSENSUS]
    assert got[0]["text"] == "'=cmd|' /C calc'!A0"

    img = make_dataset(db, "image", classes=[])
    assert upload(client, img.id, "i.zip", zip_bytes({"cat/1.png": png(), "dog/-2.png": png((1, 2, 3))}), engineer.headers).status_code == 201
    got = read_csv(export(client, img.id, engineer.headers))
    assert list(got[0]) == [*HEAD, "image", "image_path", "url", *RUN, *CONSENSUS]
    blobs = {s.image_path: s.image_blob for s in db.query(Sample).filter_by(dataset_id=img.id)}
    assert [(g["image_path"], g["image"]) for g in got] == [(p, b) for p, b in blobs.items()]


def test_split_filter(client, db, engineer):
    ds, _ = tabular(db)
    r = export(client, ds.id, engineer.headers, split="valid", format="jsonl")
    assert r.headers["content-disposition"] == f'attachment; filename="{ds.name}-valid.jsonl"'
    assert [g["split"] for g in read_jsonl(r)] == ["valid"]
    nothing = export(client, ds.id, engineer.headers, split="test").content.decode()
    assert next(csv.reader(io.StringIO(nothing)))[:4] == ["id", "sample_id", "external_id", "split"]
    assert read_csv(export(client, ds.id, engineer.headers, split="test")) == []


def test_snapshot_pins_labels_splits_and_membership(client, db, engineer):
    ds, rows = tabular(db)
    snap = create_snapshot(db, ds)
    db.commit()
    rows[0].label, rows[0].split = "b", "test"
    rows[2].label, rows[2].split = "a", "train"
    db.commit()
    add_samples(db, ds, [{"external_id": "late", "label": "a"}])

    pinned = read_csv(export(client, ds.id, engineer.headers, snapshot=snap.id))
    assert [(g["id"], g["split"], g["label"], g["label_source"]) for g in pinned] == [
        ("s1", "train", "a", "original"), (str(rows[1].id), "valid", "b", "corrected"),
        ("s3", "unlabelled", "", ""), ("s4", "train", "b", "corrected"),
    ]
    now = read_csv(export(client, ds.id, engineer.headers))
    assert [(g["id"], g["split"], g["label"], g["label_source"]) for g in now][::2] == [
        ("s1", "test", "b", "corrected"), ("s3", "train", "a", "corrected"), ("late", "train", "a", "original"),
    ]
    got = read_parquet(export(client, ds.id, engineer.headers, snapshot=snap.id, split="train", format="parquet"))
    assert [g["id"] for g in got] == ["s1", "s4"]

    assert client.get(f"/api/v1/datasets/{ds.id}/export", params={"snapshot": 999999}, headers=engineer.headers).status_code == 404
    other = make_dataset(db, "tabular")
    theirs = create_snapshot(db, other)
    db.commit()
    r = client.get(f"/api/v1/datasets/{ds.id}/export", params={"snapshot": theirs.id}, headers=engineer.headers)
    assert r.status_code == 404


def test_export_streams_in_chunks_from_its_own_session(client, db, engineer, engine, monkeypatch):
    monkeypatch.setattr(exporters, "CHUNK_ROWS", 100)
    monkeypatch.setattr(exporters, "COPY_BLOCK_BYTES", 4096)
    ds = make_dataset(db, "tabular", classes=[])
    lines = ["id,label,f0,f1"] + [f"r{i},{'ab'[i % 2]},{i},{-i / 3}" for i in range(3000)]
    assert upload(client, ds.id, "big.csv", csv_bytes(*lines), engineer.headers).status_code == 201

    plan = exporters.plan_export(db, ds)
    for fmt in ("csv", "jsonl", "parquet"):
        chunks = list(exporters.export_chunks(engine, plan, fmt))
        assert len(chunks) >= 10, fmt
    rows = list(csv.DictReader(io.StringIO(b"".join(exporters.export_chunks(engine, plan, "csv")).decode())))
    assert len(rows) == 3000 and rows[-1]["id"] == "r2999" and float(rows[-1]["f1"]) == -2999 / 3

    with client.stream("GET", f"/api/v1/datasets/{ds.id}/export", params={"format": "parquet"}, headers=engineer.headers) as r:
        assert r.status_code == 200 and "content-length" not in r.headers
        body = b"".join(r.iter_bytes())
    table = pq.read_table(io.BytesIO(body))
    assert table.num_rows == 3000 and pq.ParquetFile(io.BytesIO(body)).num_row_groups >= 10


def test_a_stopped_export_releases_its_connection(db, engine, monkeypatch, engineer, client):
    monkeypatch.setattr(exporters, "COPY_BLOCK_BYTES", 1024)
    monkeypatch.setattr(exporters, "CHUNK_ROWS", 50)
    ds = make_dataset(db, "tabular", classes=[])
    lines = ["label,f0"] + [f"{'ab'[i % 2]},{i}" for i in range(2000)]
    upload(client, ds.id, "d.csv", csv_bytes(*lines), engineer.headers)
    plan = exporters.plan_export(db, ds)
    for _ in range(3):
        chunks = exporters.export_chunks(engine, plan, "csv")
        next(chunks)
        chunks.close()
    assert len(b"".join(exporters.export_chunks(engine, plan, "csv")).splitlines()) == 2001


def test_empty_export_has_a_header(client, db, engineer):
    ds = make_dataset(db, "text", classes=["a", "b"])
    text = export(client, ds.id, engineer.headers).content.decode()
    assert next(csv.reader(io.StringIO(text))) == [*HEAD, "text", "url", *RUN, *CONSENSUS]
    assert export(client, ds.id, engineer.headers, format="jsonl").content == b""
    assert read_parquet(export(client, ds.id, engineer.headers, format="parquet")) == []


@pytest.mark.parametrize("params", [{"format": "xlsx"}, {"split": "holdout"}])
def test_bad_parameters(client, db, engineer, params):
    ds, _ = tabular(db)
    assert client.get(f"/api/v1/datasets/{ds.id}/export", params=params, headers=engineer.headers).status_code == 422


def test_roles(client, db, engineer, annotator):
    ds, _ = tabular(db)
    assert client.get(f"/api/v1/datasets/{ds.id}/export", headers=annotator.headers).status_code == 403
    assert client.get(f"/api/v1/datasets/{ds.id}/export").status_code == 401
    assert client.get("/api/v1/datasets/999999/export", headers=engineer.headers).status_code == 404


def test_csv_header_cells_are_escaped_like_values(client, db, engineer):
    names = ['=HYPERLINK("http://evil.example","x")', "@cmd", "-neg", "'quoted", "plain", "in'side"]
    ds = make_dataset(db, "tabular", classes=["a", "b"], settings={"features": names})
    add_samples(db, ds, [{"external_id": "s1", "label": "a", "features": {n: float(i) for i, n in enumerate(names)}}])
    text = export(client, ds.id, engineer.headers).content.decode()
    header = next(csv.reader(io.StringIO(text, newline="")))
    assert header[FEATURES] == ['\'=HYPERLINK("http://evil.example","x")', "'@cmd", "'-neg", "''quoted", "plain", "in'side"]
    for fmt, read in (("jsonl", read_jsonl), ("parquet", read_parquet)):
        (row,) = read(export(client, ds.id, engineer.headers, format=fmt))
        assert [row[n] for n in names] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], fmt


def test_csv_escapes_a_leading_apostrophe_too(client, db, engineer):
    ds = make_dataset(db, "text", classes=["'dog", "cat"])
    add_samples(db, ds, [
        {"external_id": "'x", "label": "'dog", "text": "'quoted'"},
        {"external_id": "in'side", "label": "cat", "text": "''"},
    ])
    got = read_csv(export(client, ds.id, engineer.headers))
    assert [(g["id"], g["label"], g["text"]) for g in got] == [("''x", "''dog", "''quoted'"), ("in'side", "cat", "'''")]
    for fmt, read in (("jsonl", read_jsonl), ("parquet", read_parquet)):
        got = read(export(client, ds.id, engineer.headers, format=fmt))
        assert [(g["id"], g["label"], g["text"]) for g in got] == [("'x", "'dog", "'quoted'"), ("in'side", "cat", "''")]


def test_jsonl_numbers_past_2_to_the_53_stay_valid_json(client, db, engineer):
    ds = make_dataset(db, "tabular", classes=["a", "b"], settings={"features": ["v"]})
    values = [2.0**53, 1e15, 1e16, -1e17, 123.0, -0.0, 1e300]
    add_samples(db, ds, [{"external_id": f"s{i}", "label": "a", "features": {"v": v}} for i, v in enumerate(values)])
    lines = export(client, ds.id, engineer.headers, format="jsonl").content.decode().splitlines()
    got = [json.loads(line)["v"] for line in lines]
    assert got == values and all(isinstance(v, float) for v in got)


def test_feature_names_with_percent_signs_and_quotes_export_on_every_database(client, db, engineer):
    # On Postgres these went through psycopg's placeholder syntax: 'pct%s' came out as a
    # column 'pct%%s' of nulls.
    names = ["pct%", "pct%s", "pct%%s", "%(x)s", "a'b", 'q"d', "back\\slash", "x" * 100, "ä" * 40]
    ds = make_dataset(db, "tabular", classes=["a", "b"], settings={"features": names})
    add_samples(db, ds, [
        {"external_id": "s1", "label": "a", "features": {n: i + 0.5 for i, n in enumerate(names)}},
        {"external_id": "s2", "label": "b", "features": {n: -float(i) for i, n in enumerate(names)}},
    ])
    text = export(client, ds.id, engineer.headers).content.decode()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0][FEATURES] == names
    assert [[float(v) for v in row[FEATURES]] for row in rows[1:]] == [
        [i + 0.5 for i in range(len(names))], [-float(i) for i in range(len(names))],
    ]
    for fmt, read in (("jsonl", read_jsonl), ("parquet", read_parquet)):
        got = read(export(client, ds.id, engineer.headers, format=fmt))
        assert list(got[0])[FEATURES] == names, fmt
        assert [[g[n] for n in names] for g in got] == [
            [i + 0.5 for i in range(len(names))], [-float(i) for i in range(len(names))],
        ], fmt


def test_jsonl_strings_are_encoded_as_json_dumps_encodes_them():
    # Plain strings are quoted by Arrow in bulk, the others by json.dumps: both must agree.
    pieces = ["%", "'", '"', "=", "\t", "\n", "\r", "\\", ",", "ש", "😀", "a", "\u202e", "\x00", "\x01", "\x1f",
              "\x7f", "\u2028", "\b", "\f", "/", "é"]
    rng = random.Random(7)
    values = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 6))) for _ in range(5000)] + [None, "", "id"]
    # One line per "\n" (str.splitlines would also split at the U+2028 inside a value).
    lines = jsonl_chunk(pa.table({"v": pa.array(values, pa.string())})).decode().split("\n")[:-1]
    assert lines == ["{" + json.dumps("v") + ":" + ("null" if v is None else json.dumps(v, ensure_ascii=False)) + "}"
                     for v in values]
    assert [json.loads(line)["v"] for line in lines] == values
