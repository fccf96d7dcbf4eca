"""Exports carry the curation: both ids, reviewed, the followed run's verdicts (named by
run_id), a url that fetches each item with the same token, and the dtypes that read a CSV
back as it was (docs/rest.md, Exports and versions)."""

from __future__ import annotations

import csv
import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select, update

from app.datasets import exporters
from app.errors import Conflict
from app.models import Prediction, Run, Sample
from tests.builders import add_samples, make_dataset
from tests.datasets.helpers import dataset, png, samples, upload, zip_bytes

CLASSES = ["6", "cat", "dog"]
# Train samples whose given label the run finds wrong, and the class it prefers instead.
WRONG = {3: "dog", 11: "6", 17: "cat"}
CURATION = ["sample_id", "external_id", "reviewed", "run_id", "predicted", "loss", "self_confidence",
            "normalized_margin", "confusion_margin", "entropy", "aum", "combined", "flagged", "suggested_label",
            "priority"]


def export(client, ds_id: int, headers: dict, **params):
    r = client.get(f"/api/v1/datasets/{ds_id}/export", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r


def schema(client, ds_id: int, headers: dict, fmt: str = "csv") -> dict:
    r = client.get(f"/api/v1/datasets/{ds_id}/export/schema", params={"format": fmt}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def read_pandas_csv(content: bytes, dtypes: dict) -> list[dict]:
    """A CSV export read as the README says: the schema's dtypes, and only an empty cell missing."""
    df = pd.read_csv(io.BytesIO(content), dtype=dtypes, keep_default_na=False, na_values=[""])
    return df.astype(object).where(df.notna(), None).to_dict("records")


def read_any(client, ds_id: int, headers: dict, fmt: str) -> list[dict]:
    """The export in fmt as rows of Python values (CSV through pandas with the dtype hint)."""
    content = export(client, ds_id, headers, format=fmt).content
    if fmt == "csv":
        return read_pandas_csv(content, schema(client, ds_id, headers)["dtypes"])
    if fmt == "jsonl":
        return [json.loads(line) for line in content.decode().splitlines()]
    return pq.read_table(io.BytesIO(content)).to_pylist()


def scored(client, db, engineer):
    """A tabular dataset with a class named 6 and zero-padded ids, one sample without an
    external id, and a run posted through the external-run API, which flags, suggests and
    orders the review as a train run does."""
    ds = make_dataset(db, "tabular", classes=CLASSES, settings={"features": ["x"]})
    rows = [{"external_id": f"{i:03d}", "label": CLASSES[i % 3], "split": split, "features": {"x": i / 4}}
            for i, split in enumerate(["train"] * 30 + ["valid"] * 6 + ["test"] * 6)]
    rows += [{"external_id": "u1", "label": None, "features": {"x": -1.0}},
             {"external_id": None, "label": None, "features": {"x": -2.0}}]
    made = add_samples(db, ds, rows)
    db.execute(update(Sample).where(Sample.id.in_([made[0].id, made[5].id])).values(reviewed=True))
    db.commit()
    return ds, made, post_run(client, ds, made, engineer)


def post_run(client, ds, made, engineer, wrong: dict[int, str] = WRONG) -> int:
    """An external run's probabilities for every sample with an external id; its id."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["external_id", *CLASSES])
    for i, s in enumerate(made):
        if s.external_id is None:
            continue
        target = wrong.get(i) or s.label or "cat"
        d = 0.0 if i in wrong else 0.002 * (i % 7)  # no ties among the samples the run agrees with
        w.writerow([s.external_id, *(0.9 - d if c == target else 0.05 + d / 2 for c in CLASSES)])
    r = client.post(f"/api/v1/datasets/{ds.id}/runs", files={"file": ("p.csv", out.getvalue().encode())},
                    data={"name": "probe", "out_of_fold": "true"}, headers=engineer.headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_the_curation_columns_hold_the_samples_and_the_runs_values(client, db, engineer, fmt):
    ds, made, run_id = scored(client, db, engineer)
    preds = {p.sample_id: p for p in db.scalars(select(Prediction).where(Prediction.run_id == run_id))}
    assert {made[i].id for i in WRONG} <= {sid for sid, p in preds.items() if p.flagged}
    assert all(preds[made[i].id].suggested_label == c for i, c in WRONG.items())

    got = read_any(client, ds.id, engineer.headers, fmt)
    want = []
    for s in samples(db, ds.id):
        p = preds.get(s.id)
        want.append({
            "id": s.external_id or str(s.id), "sample_id": s.id, "external_id": s.external_id, "label": s.label,
            "reviewed": s.reviewed, "run_id": run_id if p else None,
            **{c: getattr(p, "label" if c == "predicted" else c) if p else None for c in CURATION[4:]},
        })
    assert [{k: g[k] for k in want[0]} for g in got] == want
    # Not a vacuous comparison: flags, suggestions, priorities and a reviewed sample are in it.
    assert {g["suggested_label"] for g in got} >= {"6", "cat", "dog"} and any(g["reviewed"] for g in got)
    assert any(g["priority"] is not None for g in got) and got[-1]["run_id"] is None


def test_the_run_columns_follow_the_reference_run_and_name_it(client, db, engineer):
    ds, made, first = scored(client, db, engineer)
    second = post_run(client, ds, made, engineer, wrong={})
    rows = read_any(client, ds.id, engineer.headers, "jsonl")
    assert {r["run_id"] for r in rows[:-1]} == {second} and not any(r["flagged"] for r in rows)
    assert schema(client, ds.id, engineer.headers)["run_id"] == second

    assert client.post(f"/api/v1/runs/{first}/pin", headers=engineer.headers).status_code == 200
    rows = read_any(client, ds.id, engineer.headers, "jsonl")
    assert {r["run_id"] for r in rows[:-1]} == {first} and rows[-1]["run_id"] is None
    assert [r["suggested_label"] for r in rows if r["flagged"]] == list(WRONG.values())
    assert schema(client, ds.id, engineer.headers)["run_id"] == first


def test_a_class_named_6_and_ids_like_007_stay_text_with_the_dtype_hint(client, db, engineer):
    ds = make_dataset(db, "tabular", classes=["6", "7"], settings={"features": ["x"]})
    made = add_samples(db, ds, [{"external_id": "007", "label": "6", "reviewed": True},
                                {"external_id": "010", "label": "7"}, {"external_id": "NA", "label": None}])
    run = Run(dataset_id=ds.id, status="succeeded", label_version=0)
    db.add(run)
    db.flush()
    db.add(Prediction(run_id=run.id, sample_id=made[0].id, given_label="6", label="7", probs={"7": 0.9}, loss=2.3,
                      self_confidence=0.1, normalized_margin=-0.8, confusion_margin=0.8, confusion_a="7",
                      confusion_b="6", entropy=0.3, flagged=True, suggested_label="7", priority=0.0))
    db.commit()
    content = export(client, ds.id, engineer.headers).content
    naive = pd.read_csv(io.BytesIO(content))
    assert naive["label"].iloc[0] == 6 and naive["id"].iloc[0] == 7 and pd.isna(naive["id"].iloc[2])

    hint = schema(client, ds.id, engineer.headers)
    df = pd.read_csv(io.BytesIO(content), dtype=hint["dtypes"], keep_default_na=False, na_values=[""])
    assert list(df.columns) == [c["name"] for c in hint["columns"]]
    assert df["id"].tolist() == df["external_id"].tolist() == ["007", "010", "NA"]
    assert df["label"].tolist()[:2] == ["6", "7"] and pd.isna(df["label"].iloc[2])
    assert (df["predicted"].iloc[0], df["suggested_label"].iloc[0], df["flagged"].iloc[0]) == ("7", "7", True)
    assert str(df["sample_id"].dtype) == "Int64" and str(df["reviewed"].dtype) == "boolean"
    assert df["reviewed"].tolist() == [True, False, False] and df["run_id"].tolist()[0] == run.id


def test_parquet_keeps_every_columns_type(client, db, engineer):
    ds, made, run_id = scored(client, db, engineer)
    table = pq.read_table(io.BytesIO(export(client, ds.id, engineer.headers, format="parquet").content))
    types = dict(zip(table.column_names, table.schema.types, strict=True))
    assert {c: types[c] for c in ("id", "sample_id", "label", "reviewed", "x", "run_id", "flagged", "priority")} == {
        "id": pa.string(), "sample_id": pa.int64(), "label": pa.string(), "reviewed": pa.bool_(), "x": pa.float64(),
        "run_id": pa.int64(), "flagged": pa.bool_(), "priority": pa.float64(),
    }
    df = table.to_pandas()
    assert df["label"].iloc[0] == "6" and df["id"].iloc[0] == "000" and df["run_id"].iloc[0] == run_id
    hint = schema(client, ds.id, engineer.headers, "parquet")
    assert [(c["name"], c["type"]) for c in hint["columns"]][:7] == [
        ("id", "string"), ("sample_id", "integer"), ("external_id", "string"), ("split", "string"),
        ("label", "string"), ("label_source", "string"), ("reviewed", "boolean")]


def test_the_url_fetches_each_item_with_the_exports_token(client, db, engineer, annotator):
    img = make_dataset(db, "image", classes=[])
    pictures = {"cat/1.png": png(), "dog/2.png": png((1, 2, 3))}
    assert upload(client, img.id, "i.zip", zip_bytes(pictures), engineer.headers).status_code == 201
    for fmt in ("csv", "jsonl", "parquet"):
        rows = read_any(client, img.id, engineer.headers, fmt)
        assert [r["url"] for r in rows] == [f"/api/v1/samples/{r['sample_id']}/image" for r in rows], fmt
    for r in rows:
        got = client.get(r["url"], headers=engineer.headers)
        assert got.status_code == 200 and got.content == pictures[r["image_path"]]
        assert client.get(r["url"]).status_code == 401

    text = make_dataset(db, "text", classes=["a", "b"])
    add_samples(db, text, [{"external_id": "t1", "label": "a", "text": "=cmd|' /C calc'!A0"}])
    (row,) = read_any(client, text.id, engineer.headers, "csv")
    assert row["url"] == f"/api/v1/samples/{row['sample_id']}"
    item = client.get(row["url"], headers=engineer.headers).json()
    assert (item["id"], item["text"]) == (row["sample_id"], "=cmd|' /C calc'!A0")


def test_urls_start_with_the_path_the_app_is_served_under(db, engine):
    ds = make_dataset(db, "text", classes=["a", "b"])
    (s,) = add_samples(db, ds, [{"external_id": "t1", "label": "a"}])
    for root, want in (("/curate/", "/curate"), ("curate", "/curate"), ("/", ""), ("", "")):
        plan = exporters.plan_export(db, ds, root_path=root)
        (line,) = b"".join(exporters.export_chunks(engine, plan, "jsonl")).decode().splitlines()
        assert json.loads(line)["url"] == f"{want}/api/v1/samples/{s.id}"


def test_formula_escaping_covers_the_new_text_columns(client, db, engineer):
    ds = make_dataset(db, "text", classes=["-neg", "pos"])
    made = add_samples(db, ds, [{"external_id": "=x", "label": "pos", "text": "t"},
                                {"external_id": "@y", "label": "pos", "text": "u", "reviewed": True}])
    run = Run(dataset_id=ds.id, status="succeeded", label_version=0)
    db.add(run)
    db.flush()
    for s in made:
        db.add(Prediction(run_id=run.id, sample_id=s.id, given_label="pos", label="-neg", probs={"-neg": 0.9},
                          loss=2.3, self_confidence=0.1, normalized_margin=-0.8, confusion_margin=0.8,
                          confusion_a="-neg", confusion_b="pos", entropy=0.3, aum=-1.5, combined=0.25,
                          flagged=True, suggested_label="-neg", priority=-3.0))
    db.commit()
    got = list(csv.DictReader(io.StringIO(export(client, ds.id, engineer.headers).content.decode(), newline="")))
    assert [(g["id"], g["external_id"], g["predicted"], g["suggested_label"]) for g in got] == [
        ("'=x", "'=x", "'-neg", "'-neg"), ("'@y", "'@y", "'-neg", "'-neg")]
    assert [(g["url"], g["reviewed"], g["flagged"], float(g["priority"]), float(g["aum"])) for g in got] == [
        (f"/api/v1/samples/{s.id}", r, "true", -3.0, -1.5) for s, r in zip(made, ("false", "true"), strict=True)]
    rows = read_any(client, ds.id, engineer.headers, "jsonl")
    assert [(r["external_id"], r["suggested_label"], r["flagged"], r["reviewed"]) for r in rows] == [
        ("=x", "-neg", True, False), ("@y", "-neg", True, True)]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_an_export_with_the_curation_columns_imports_again(client, db, engineer, fmt):
    ds, _, _ = scored(client, db, engineer)
    exported = export(client, ds.id, engineer.headers, format=fmt).content
    again = make_dataset(db, "tabular", classes=[], settings={})
    r = upload(client, again.id, f"export.{fmt}", exported, engineer.headers)
    assert r.status_code == 201, r.text
    assert set(CURATION) <= set(r.json()["ignored_columns"])
    assert dataset(db, again.id).settings["features"] == ["x"]
    pick = lambda d: [(s.external_id or "", s.split, s.label, s.features) for s in samples(db, d)][:-1]  # noqa: E731
    assert pick(again.id) == pick(ds.id)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_an_export_without_its_id_column_matches_by_external_id(client, db, engineer, fmt):
    ds, made, _ = scored(client, db, engineer)
    table = pq.read_table(io.BytesIO(export(client, ds.id, engineer.headers, format="parquet").content))
    table = table.drop_columns(["id"]).slice(0, len(made) - 1)  # the sample without an external id stays out
    labels = table.column("label").to_pylist()
    table = table.set_column(table.column_names.index("label"), "label", pa.array(["dog", *labels[1:]]))
    sink = io.BytesIO()
    if fmt == "csv":
        # As a client would write it back from pandas: ids like 000 must stay text.
        table.to_pandas().to_csv(sink, index=False)
    else:
        pq.write_table(table, sink)
    r = upload(client, ds.id, f"edited.{fmt}", sink.getvalue(), engineer.headers, on_conflict="update")
    assert r.status_code == 201, r.text
    assert (r.json()["imported"], r.json()["updated"]) == (0, 1) and "external_id" not in r.json()["ignored_columns"]
    assert [(s.external_id, s.label) for s in samples(db, ds.id)][:2] == [("000", "dog"), ("001", "cat")]


def test_a_feature_named_like_a_curation_column_is_a_conflict(client, db, engineer):
    ds = make_dataset(db, settings={"features": ["x", "priority"]})
    with pytest.raises(Conflict, match=r"feature names \['priority'\] clash"):
        exporters.plan_export(db, ds)
    assert client.get(f"/api/v1/datasets/{ds.id}/export/schema", headers=engineer.headers).status_code == 409


def test_the_schema_names_the_columns_as_each_format_spells_them(client, db, engineer, annotator):
    names = ["=f", "plain"]
    ds = make_dataset(db, "tabular", classes=["a", "b"], settings={"features": names})
    add_samples(db, ds, [{"external_id": "s1", "label": "a", "features": {"=f": 1.0, "plain": 2.0}}])
    for fmt in ("csv", "jsonl", "parquet"):
        r = export(client, ds.id, engineer.headers, format=fmt)
        link = r.headers["link"]
        assert link == f'</api/v1/datasets/{ds.id}/export/schema?format={fmt}>; rel="describedby"'
        described = client.get(link[1:link.index(">")], headers=engineer.headers).json()
        if fmt == "csv":
            header = next(csv.reader(io.StringIO(r.content.decode())))
        elif fmt == "jsonl":
            header = list(json.loads(r.content.decode().splitlines()[0]))
        else:
            header = pq.read_table(io.BytesIO(r.content)).column_names
        assert [c["name"] for c in described["columns"]] == header == list(described["dtypes"])
        assert ("'=f" if fmt == "csv" else "=f") in header
        assert described["format"] == fmt and described["run_id"] is None
    assert client.get(f"/api/v1/datasets/{ds.id}/export/schema", headers=annotator.headers).status_code == 403
    assert client.get(f"/api/v1/datasets/{ds.id}/export/schema").status_code == 401
    assert client.get(f"/api/v1/datasets/{ds.id}/export/schema", params={"format": "xlsx"},
                      headers=engineer.headers).status_code == 422
