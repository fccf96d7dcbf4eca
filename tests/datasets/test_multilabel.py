"""Multi-label datasets, the data layer: creation, imports of tag sets in every format, exports
that import back to the same sets, PATCH of a whole set with If-Match, undo and revert, and
the train job refused until it can train one (docs/rest.md, Multi-label datasets)."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.labels import service
from app.models import Dataset
from tests.builders import add_samples, make_dataset
from tests.datasets.helpers import (
    csv_bytes,
    dataset,
    error_at,
    jsonl_bytes,
    parquet_bytes,
    png,
    samples,
    upload,
    zip_bytes,
)

CLASSES = ["cat", "dog", "bird"]


def make_multilabel(db, task: str = "tabular", classes: list[str] | None = None, name: str | None = None) -> Dataset:
    ds = make_dataset(db, task, classes=CLASSES if classes is None else classes, name=name)
    ds.multilabel = True
    db.commit()
    return ds


def labels_by_id(db, ds_id: int) -> dict[str, tuple[str, str | None]]:
    return {s.external_id: (s.split, s.label) for s in samples(db, ds_id)}


def patch(client, account, sample_id: int, version: int, **body):
    return client.patch(f"/api/v1/samples/{sample_id}", json=body, headers={**account.headers, "If-Match": str(version)})


# --- creation --------------------------------------------------------------------------------


def test_a_dataset_is_multilabel_from_creation_and_stays_so(client, engineer):
    r = client.post("/api/v1/datasets", json={"name": "tags", "task": "text", "classes": CLASSES, "multilabel": True},
                    headers=engineer.headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["multilabel"], body["classes"]) == (True, CLASSES)
    assert client.get(f"/api/v1/datasets/{body['id']}", headers=engineer.headers).json()["multilabel"] is True
    single = client.post("/api/v1/datasets", json={"name": "one", "task": "text"}, headers=engineer.headers).json()
    assert single["multilabel"] is False

    r = client.patch(f"/api/v1/datasets/{body['id']}", json={"multilabel": False}, headers=engineer.headers)
    assert r.status_code == 422
    assert "multilabel is chosen when a dataset is created and cannot change" in r.text
    r = client.patch(f"/api/v1/datasets/{single['id']}", json={"description": "x", "multilabel": True},
                     headers=engineer.headers)
    assert r.status_code == 422
    assert client.get(f"/api/v1/datasets/{single['id']}", headers=engineer.headers).json()["multilabel"] is False


def test_a_class_name_with_the_separator_is_refused_for_multilabel_only(client, engineer):
    r = client.post("/api/v1/datasets", json={"name": "tags", "task": "text", "classes": ["cat", "dog|wolf"],
                                              "multilabel": True}, headers=engineer.headers)
    assert r.status_code == 422
    assert "class name 'dog|wolf' contains '|'" in r.json()["errors"][0]["message"]
    r = client.post("/api/v1/datasets", json={"name": "one", "task": "text", "classes": ["cat", "dog|wolf"]},
                    headers=engineer.headers)
    assert r.status_code == 201


# --- imports ---------------------------------------------------------------------------------


def test_jsonl_takes_arrays_with_the_empty_set_and_null(client, db, engineer):
    ds = make_multilabel(db, "text")
    rows = [
        {"id": "a", "label": ["dog", "cat"], "text": "both"},
        {"id": "b", "label": [], "split": "valid", "text": "none of them"},
        {"id": "c", "label": None, "text": "not labelled"},
        {"id": "d", "label": ["bird", "bird"], "split": "test", "text": "repeat"},
        {"id": "e", "text": "no label key"},
    ]
    r = upload(client, ds.id, "tags.jsonl", jsonl_bytes(rows), engineer.headers)
    assert r.status_code == 201, r.text
    assert r.json()["classes"] == CLASSES
    assert labels_by_id(db, ds.id) == {"a": ("train", "cat|dog"), "b": ("valid", ""), "c": ("unlabelled", None),
                                       "d": ("test", "bird"), "e": ("unlabelled", None)}
    assert all(s.original_label == s.label for s in samples(db, ds.id))
    by_id = {s.external_id: s.id for s in samples(db, ds.id)}
    got = client.get(f"/api/v1/samples/{by_id['a']}", headers=engineer.headers).json()
    assert (got["label"], got["labels"]) == ("cat|dog", ["cat", "dog"])
    assert client.get(f"/api/v1/samples/{by_id['b']}", headers=engineer.headers).json()["labels"] == []
    assert client.get(f"/api/v1/samples/{by_id['c']}", headers=engineer.headers).json()["labels"] is None
    page = client.get(f"/api/v1/datasets/{ds.id}/samples", headers=engineer.headers).json()
    assert [i["labels"] for i in page["items"]] == [["cat", "dog"], [], None, ["bird"], None]


def test_jsonl_refuses_a_string_label_by_row(client, db, engineer):
    ds = make_multilabel(db, "text")
    mixed = [{"id": "a", "label": ["cat"], "text": "x"}, {"id": "b", "label": "cat", "text": "y"}]
    only_strings = [{"id": "a", "label": "cat|dog", "text": "x"}]
    for rows, row in ((mixed, 2), (only_strings, 1)):
        r = upload(client, ds.id, "tags.jsonl", jsonl_bytes(rows), engineer.headers)
        assert r.status_code == 422, r.text
        assert "not a string" in error_at(r.json(), row, "label")
    assert samples(db, ds.id) == []


def test_csv_joins_classes_with_the_separator_and_an_empty_cell_depends_on_the_split(client, db, engineer):
    ds = make_multilabel(db)
    data = csv_bytes(
        "id,label,split,x",
        "a,dog|cat,,1",
        "b, bird | dog ,valid,2",
        "c,,train,3",
        "d,,,4",
        "e,,unlabelled,5",
        "f,,excluded,6",
        "g,cat,excluded,7",
    )
    r = upload(client, ds.id, "tags.csv", data, engineer.headers)
    assert r.status_code == 201, r.text
    assert labels_by_id(db, ds.id) == {
        "a": ("train", "cat|dog"), "b": ("valid", "dog|bird"), "c": ("train", ""), "d": ("unlabelled", None),
        "e": ("unlabelled", None), "f": ("excluded", None), "g": ("excluded", "cat"),
    }


def test_parquet_takes_a_list_column_or_text(client, db, engineer):
    ds = make_multilabel(db)
    lists = parquet_bytes({"id": ["a", "b", "c"], "label": pa.array([["bird", "cat"], [], None], pa.list_(pa.string())),
                           "split": ["train", "test", "unlabelled"], "x": [1.0, 2.0, 3.0]})
    assert upload(client, ds.id, "tags.parquet", lists, engineer.headers).status_code == 201
    text = parquet_bytes({"id": ["d", "e"], "label": ["dog|cat", ""], "split": ["valid", "valid"], "x": [4.0, 5.0]})
    r = upload(client, ds.id, "more.parquet", text, engineer.headers)
    assert r.status_code == 201, r.text
    assert labels_by_id(db, ds.id) == {"a": ("train", "cat|bird"), "b": ("test", ""), "c": ("unlabelled", None),
                                       "d": ("valid", "cat|dog"), "e": ("valid", "")}


def test_a_zip_of_images_takes_its_tag_sets_from_labels_csv(client, db, engineer):
    ds = make_multilabel(db, "image")
    labels = csv_bytes("image,label,split", "1.png,cat|dog,train", "2.png,,valid", "3.png,,")
    data = zip_bytes({"labels.csv": labels, "1.png": png((255, 0, 0)), "2.png": png((0, 255, 0)),
                      "3.png": png((0, 0, 255))})
    r = upload(client, ds.id, "images.zip", data, engineer.headers)
    assert r.status_code == 201, r.text
    assert [(s.image_path, s.split, s.label) for s in samples(db, ds.id)] == [
        ("1.png", "train", "cat|dog"), ("2.png", "valid", ""), ("3.png", "unlabelled", None)]

    jsonl = jsonl_bytes([{"image": "4.png", "label": ["bird"]}])
    r = upload(client, ds.id, "more.zip", zip_bytes({"labels.jsonl": jsonl, "4.png": png((9, 9, 9))}), engineer.headers)
    assert r.status_code == 201, r.text
    assert samples(db, ds.id)[-1].label == "bird"


def test_class_folders_are_refused_for_a_multilabel_zip(client, db, engineer):
    ds = make_multilabel(db, "image")
    r = upload(client, ds.id, "images.zip", zip_bytes({"cat/1.png": png(), "dog/2.png": png((0, 9, 0))}),
               engineer.headers)
    assert r.status_code == 422
    assert "a multi-label dataset imports a ZIP with a labels file" in error_at(r.json(), None, "file")
    assert samples(db, ds.id) == []


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "zip"])
def test_an_unknown_class_is_a_row_error_and_nothing_is_imported(client, db, engineer, fmt):
    ds = make_multilabel(db, "image" if fmt == "zip" else "tabular")
    rows = [{"id": "a", "label": ["cat"]}, {"id": "b", "label": ["dog", "fish"]}, {"id": "c", "label": ["wolf"]}]
    if fmt == "csv":
        data = csv_bytes("id,label,x", *(f"{r['id']},{'|'.join(r['label'])},1" for r in rows))
    elif fmt == "jsonl":
        data = jsonl_bytes([{**r, "x": 1.0} for r in rows])
    elif fmt == "parquet":
        data = parquet_bytes({"id": [r["id"] for r in rows], "label": [r["label"] for r in rows], "x": [1.0] * 3})
    else:
        labels = jsonl_bytes([{"image": f"{r['id']}.png", **r} for r in rows])
        data = zip_bytes({"labels.jsonl": labels, **{f"{r['id']}.png": png((i, 0, 0)) for i, r in enumerate(rows)}})
    r = upload(client, ds.id, f"tags.{fmt}", data, engineer.headers)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["detail"].endswith("2 errors; nothing was imported")
    assert error_at(body, 2, "label") == "unknown class 'fish'; the dataset's classes are ['cat', 'dog', 'bird']"
    assert "unknown class 'wolf'" in error_at(body, 3, "label")
    assert samples(db, ds.id) == [] and dataset(db, ds.id).label_version == 0


def test_the_first_import_sets_the_classes_of_a_dataset_without(client, db, engineer):
    ds = make_multilabel(db, classes=[])
    data = jsonl_bytes([{"id": "a", "label": ["zebra", "ant"], "x": 1.0}, {"id": "b", "label": ["mole"], "x": 2.0},
                        {"id": "c", "label": [], "x": 3.0, "split": "test"}])
    r = upload(client, ds.id, "tags.jsonl", data, engineer.headers)
    assert r.status_code == 201, r.text
    assert dataset(db, ds.id).classes == ["ant", "mole", "zebra"]
    assert [s.label for s in samples(db, ds.id)] == ["ant|zebra", "mole", ""]
    bad = make_multilabel(db, classes=[])
    r = upload(client, bad.id, "tags.jsonl", jsonl_bytes([{"label": ["a|b", "c"], "x": 1.0}]), engineer.headers)
    assert r.status_code == 422
    assert "contains '|'" in error_at(r.json(), 1, "label")


def test_an_update_import_changes_tag_sets_with_label_events(client, db, engineer):
    ds = make_multilabel(db)
    upload(client, ds.id, "a.jsonl", jsonl_bytes([{"id": "a", "label": ["cat"], "x": 1.0},
                                                  {"id": "b", "label": [], "x": 2.0}]), engineer.headers)
    r = upload(client, ds.id, "b.jsonl", jsonl_bytes([{"id": "a", "label": ["cat"], "x": 1.0},
                                                      {"id": "b", "label": ["dog", "bird"], "x": 2.0}]),
               engineer.headers, on_conflict="update")
    assert r.status_code == 201, r.text
    assert (r.json()["updated"], r.json()["unchanged"]) == (1, 1)
    assert labels_by_id(db, ds.id) == {"a": ("train", "cat"), "b": ("train", "dog|bird")}
    events = client.get(f"/api/v1/datasets/{ds.id}/label-events", headers=engineer.headers).json()["items"]
    assert [(e["old_label"], e["new_label"], e["source"]) for e in events] == [("", "dog|bird", "import")]


def test_a_single_label_dataset_still_reads_label_as_one_class(client, db, engineer):
    ds = make_dataset(db, classes=["a|b", "c"])
    data = csv_bytes("id,label,x", "1,a|b,1", "2,,2")
    r = upload(client, ds.id, "one.csv", data, engineer.headers)
    assert r.status_code == 201, r.text
    assert labels_by_id(db, ds.id) == {"1": ("train", "a|b"), "2": ("unlabelled", None)}
    got = client.get(f"/api/v1/samples/{samples(db, ds.id)[0].id}", headers=engineer.headers).json()
    assert (got["label"], got["labels"]) == ("a|b", None)


# --- exports ---------------------------------------------------------------------------------

HOSTILE_CLASSES = ["=sum", "a,b", 'q"uote', "'lead", "new\nline", "😀", "plain"]


def _rows(task: str) -> list[dict]:
    sets = [["=sum", "a,b"], [], ['q"uote'], ["'lead", "😀", "plain"], None, ["new\nline"], ["plain", "=sum"], []]
    splits = ["train", "valid", "test", "train", "unlabelled", "valid", "test", "train"]
    rows = []
    for i, (tags, split) in enumerate(zip(sets, splits, strict=True)):
        row = {"id": f"s{i}", "label": tags, "split": split}
        row.update({"text": f"text {i}"} if task == "text" else {"x": float(i)})
        rows.append(row)
    return rows


@pytest.mark.parametrize("task", ["tabular", "text"])
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_an_export_imports_back_to_the_same_tag_sets(client, db, engineer, task, fmt):
    first = make_multilabel(db, task, classes=HOSTILE_CLASSES)
    r = upload(client, first.id, "tags.jsonl", jsonl_bytes(_rows(task)), engineer.headers)
    assert r.status_code == 201, r.text
    by_id = {s.external_id: s for s in samples(db, first.id)}
    assert patch(client, engineer, by_id["s0"].id, 1, labels=["plain"]).status_code == 200  # a corrected set

    r = client.get(f"/api/v1/datasets/{first.id}/export", params={"format": fmt}, headers=engineer.headers)
    assert r.status_code == 200, r.text
    if fmt == "jsonl":
        lines = [json.loads(line) for line in r.content.decode().splitlines()]
        assert [line["label"] for line in lines][:5] == [["plain"], [], ['q"uote'], ["'lead", "😀", "plain"], None]
    elif fmt == "parquet":
        table = pq.read_table(io.BytesIO(r.content))
        assert table.schema.field("label").type == pa.list_(pa.string())
        assert table.column("label").to_pylist()[1] == []
    second = make_multilabel(db, task, classes=HOSTILE_CLASSES)
    r = upload(client, second.id, f"export.{fmt}", r.content, engineer.headers)
    assert r.status_code == 201, r.text
    want = [(s.external_id, s.split, s.label) for s in samples(db, first.id)]
    assert [(s.external_id, s.split, s.label) for s in samples(db, second.id)] == want
    assert want[0] == ("s0", "train", "plain") and want[1] == ("s1", "valid", "")


def test_the_export_schema_describes_the_label_column(client, db, engineer):
    ds = make_multilabel(db)
    for fmt, want in (("csv", {"type": "string", "separator": "|", "items": None}),
                      ("jsonl", {"type": "array", "items": "string", "separator": None}),
                      ("parquet", {"type": "array", "items": "string", "separator": None})):
        schema = client.get(f"/api/v1/datasets/{ds.id}/export/schema", params={"format": fmt},
                            headers=engineer.headers).json()
        label = next(c for c in schema["columns"] if c["name"] == "label")
        assert {k: label[k] for k in want} == want
    single = make_dataset(db)
    schema = client.get(f"/api/v1/datasets/{single.id}/export/schema", params={"format": "jsonl"},
                        headers=engineer.headers).json()
    label = next(c for c in schema["columns"] if c["name"] == "label")
    assert (label["type"], label["items"], label["separator"]) == ("string", None, None)


def test_a_snapshot_export_writes_the_sets_it_froze(client, db, engineer):
    ds = make_multilabel(db)
    upload(client, ds.id, "a.jsonl", jsonl_bytes([{"id": "a", "label": ["dog", "cat"], "x": 1.0}]), engineer.headers)
    snap = client.post(f"/api/v1/datasets/{ds.id}/snapshots", json={}, headers=engineer.headers).json()
    (s,) = samples(db, ds.id)
    assert patch(client, engineer, s.id, 1, labels=[]).status_code == 200
    r = client.get(f"/api/v1/datasets/{ds.id}/export", params={"format": "jsonl", "snapshot": snap["id"]},
                   headers=engineer.headers)
    assert json.loads(r.content)["label"] == ["cat", "dog"]
    r = client.get(f"/api/v1/datasets/{ds.id}/export", params={"format": "jsonl"}, headers=engineer.headers)
    assert json.loads(r.content)["label"] == []


# --- PATCH, undo and revert ------------------------------------------------------------------


def test_patch_replaces_the_whole_set_with_if_match(client, db, annotator):
    ds = make_multilabel(db)
    (s,) = add_samples(db, ds, [{"label": "cat"}])
    r = patch(client, annotator, s.id, 1, labels=["bird", "dog", "dog"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["label"], body["labels"], body["version"], body["reviewed"]) == ("dog|bird", ["dog", "bird"], 2, True)
    assert r.headers["etag"] == '"2"'
    assert body["history"][0]["old_label"] == "cat" and body["history"][0]["new_label"] == "dog|bird"

    stale = patch(client, annotator, s.id, 1, labels=["cat"])
    assert stale.status_code == 409
    assert stale.json()["current"]["labels"] == ["dog", "bird"]

    r = patch(client, annotator, s.id, 2, label="cat|bird")  # the same set as text
    assert (r.status_code, r.json()["labels"]) == (200, ["cat", "bird"])
    r = patch(client, annotator, s.id, 3, labels=[])
    assert (r.status_code, r.json()["label"], r.json()["labels"]) == (200, "", [])


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"labels": ["cat", "fish"]}, "labels", "unknown class 'fish'; the dataset's classes are ['cat', 'dog', 'bird']"),
    ({"label": "cat|fish"}, "label", "unknown class 'fish'"),
    ({"labels": None}, "labels", "not null"),
    ({"label": None}, "label", "not null"),
    ({"labels": ["cat"], "label": "cat"}, "labels", "give labels or label, not both"),
])
def test_patch_refuses_a_set_outside_the_classes(client, db, annotator, body, field, message):
    ds = make_multilabel(db)
    (s,) = add_samples(db, ds, [{"label": "cat"}])
    r = patch(client, annotator, s.id, 1, **body)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field]
    assert message in r.json()["errors"][0]["message"]
    assert samples(db, ds.id)[0].version == 1


def test_a_single_label_dataset_refuses_labels(client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    r = patch(client, annotator, s.id, 1, labels=["a"])
    assert r.status_code == 422
    assert r.json()["errors"] == [{"field": "labels", "message": "only multi-label datasets take labels"}]
    assert patch(client, annotator, s.id, 1, label="a|b").status_code == 422
    r = patch(client, annotator, s.id, 1, label="b")
    assert (r.status_code, r.json()["labels"]) == (200, None)


def test_undo_and_revert_restore_the_previous_set(client, db, annotator):
    ds = make_multilabel(db)
    (s,) = add_samples(db, ds, [{"label": "cat|dog"}])
    patch(client, annotator, s.id, 1, labels=["bird"])
    patch(client, annotator, s.id, 2, labels=[])
    events = client.get(f"/api/v1/datasets/{ds.id}/label-events", headers=annotator.headers).json()["items"]
    assert [(e["old_label"], e["new_label"]) for e in events] == [("bird", ""), ("cat|dog", "bird")]
    r = client.post(f"/api/v1/label-events/{events[0]['id']}/revert", headers={**annotator.headers, "If-Match": "3"})
    assert r.status_code == 200, r.text
    assert (r.json()["labels"], r.json()["version"]) == (["bird"], 4)

    # The queue's undo goes through the same revert: undo the first change too (forced past the revert).
    r = client.post(f"/api/v1/label-events/{events[1]['id']}/revert", json={"force": True},
                    headers=annotator.headers)
    assert (r.status_code, r.json()["label"], r.json()["labels"]) == (200, "cat|dog", ["cat", "dog"])

    patch(client, annotator, s.id, 5, labels=["dog"])
    db.expire_all()
    last = client.get(f"/api/v1/datasets/{ds.id}/label-events", headers=annotator.headers).json()["items"][0]
    undone = service.undo_change(db, None, db.get(Dataset, ds.id), version=6, event_id=last["id"])
    db.commit()
    assert (undone.label, undone.version) == ("cat|dog", 7)


def test_bulk_sets_one_tag_set_on_many(client, db, annotator):
    ds = make_multilabel(db)
    a, b = add_samples(db, ds, [{"label": "cat"}, {"label": ""}])
    r = client.post(f"/api/v1/datasets/{ds.id}/samples/bulk", headers=annotator.headers,
                    json={"items": [{"id": a.id, "version": 1}, {"id": b.id, "version": 1}], "label": "bird|dog"})
    assert r.status_code == 200, r.text
    assert [i["sample"]["labels"] for i in r.json()["items"]] == [["dog", "bird"], ["dog", "bird"]]
    r = client.post(f"/api/v1/datasets/{ds.id}/samples/bulk", headers=annotator.headers,
                    json={"items": [{"id": a.id, "version": 2}], "label": "fish"})
    assert r.status_code == 422


# --- training --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, params", [
    ("search", {"space": {"label_smoothing": {"low": 0.05, "high": 0.2}}}),
    ("seeds", {"recipe": {"loss": "label_smoothing"}}),
    ("prune", {"class": "cat", "recipe": {"label_smoothing": 0.1}}),
])
def test_every_training_job_takes_a_multilabel_dataset_but_not_label_smoothing(client, db, engineer, kind, params):
    ds = make_multilabel(db, name=f"tagged-{kind}")
    url = f"/api/v1/datasets/{ds.id}/jobs"
    r = client.post(url, json={"kind": kind, "params": params}, headers=engineer.headers)
    assert r.status_code == 422, r.text
    assert any("label_smoothing" in e["field"] or "label_smoothing" in e["message"] for e in r.json()["errors"]), r.text
    assert client.get(url, headers=engineer.headers).json() == []


def test_a_train_job_on_a_multilabel_dataset_is_queued_and_its_inapplicable_options_are_422(client, db, engineer):
    ds = make_multilabel(db, name="tagged")
    url = f"/api/v1/datasets/{ds.id}/jobs"
    r = client.post(url, json={"kind": "train", "params": {"loss": "label_smoothing"}}, headers=engineer.headers)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["loss"] and "multi-label" in r.json()["errors"][0]["message"]
    r = client.post(url, json={"kind": "train", "params": {"label_smoothing": 0.2}}, headers=engineer.headers)
    assert r.status_code == 422 and "label_smoothing" in [e["field"] for e in r.json()["errors"]]
    r = client.post(url, json={"kind": "train", "params": {"loss": "weighted_cross_entropy", "sampling": "oversample"}},
                    headers=engineer.headers)
    assert r.status_code in (200, 201, 202), r.text
    assert [j["kind"] for j in client.get(url, headers=engineer.headers).json()] == ["train"]
    r = client.post(url, json={"kind": "seeds", "params": {"recipe": {"loss": "label_smoothing"}}}, headers=engineer.headers)
    assert r.status_code == 422 and "recipe.loss" in [e["field"] for e in r.json()["errors"]], r.text
    r = client.post(url, json={"kind": "seeds", "params": {"seeds": 2}}, headers=engineer.headers)
    assert r.status_code in (200, 201, 202), r.text


def test_the_worker_reads_a_multilabel_dataset_as_tag_sets(db, settings, engine):
    from app.training.data import load_training_data

    ds = make_multilabel(db, name="tagged")
    add_samples(db, ds, [{"label": "cat|dog", "features": {"x": 1.0}}, {"label": "", "features": {"x": 2.0}},
                         {"label": "cat|dog", "features": {"x": 3.0}}, {"label": None, "features": {"x": 4.0}}])
    data = load_training_data(engine, ds.id, settings)
    assert data.multilabel
    # y indexes the distinct sets (equal sets share one); -1 is unlabelled.
    y = data.items["y"].tolist()
    assert y[0] == y[2] >= 0 and y[1] == 0 and y[3] == -1
    assert data.targets().sum(axis=1).tolist() == [2, 0, 2, 0]
