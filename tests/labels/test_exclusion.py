"""Removing a sample from training: the `excluded` split keeps its label, is audited like any
split move, reverts from the history, and the train job neither learns from nor evaluates
on it (docs/rest.md, Samples)."""

from __future__ import annotations

from sqlalchemy import select

from app.models import LabelEvent
from app.training.data import load_training_data
from tests.builders import add_samples, make_dataset
from tests.labels.test_undo_revert import event_ids, patch, revert


def test_excluding_keeps_the_label_is_audited_and_reverts(client, db, annotator):
    ds = make_dataset(db, classes=["a", "b"])
    s, pool, _ = add_samples(db, ds, [{"label": "a"}, {"label": None}, {"label": "b"}])
    r = patch(client, annotator, s.id, 1, split="excluded", reason="a blank scan")
    assert r.status_code == 200, r.text
    assert (r.json()["split"], r.json()["label"]) == ("excluded", "a")
    (event_id,) = event_ids(db, s.id)
    event = db.get(LabelEvent, event_id)
    assert (event.old_split, event.new_split, event.old_label, event.new_label, event.reason) == (
        "train", "excluded", "a", "a", "a blank scan")
    counts = client.get(f"/api/v1/datasets/{ds.id}", headers=annotator.headers).json()["counts"]
    assert counts == {"train": 1, "valid": 0, "test": 0, "unlabelled": 1, "excluded": 1}
    listed = client.get(f"/api/v1/datasets/{ds.id}/samples", params={"split": "excluded"}, headers=annotator.headers)
    assert [i["id"] for i in listed.json()["items"]] == [s.id]

    # An unlabelled pool sample can be removed too, and comes back unlabelled; it cannot go to train without a label.
    assert patch(client, annotator, pool.id, 1, split="excluded").status_code == 200
    assert patch(client, annotator, pool.id, 2, split="train").status_code == 422
    assert patch(client, annotator, pool.id, 2, split="unlabelled").json()["split"] == "unlabelled"

    back = revert(client, annotator, event_id)
    assert back.status_code == 200, back.text
    assert (back.json()["split"], back.json()["label"]) == ("train", "a")


def test_the_train_job_neither_learns_from_nor_evaluates_on_excluded_samples(client, db, annotator, settings, engine):
    ds = make_dataset(db, classes=["a", "b"])
    rows = [{"label": "ab"[i % 2], "split": "train"} for i in range(6)] + [{"label": "a", "split": "valid"},
                                                                          {"label": "b", "split": "valid"}]
    samples = add_samples(db, ds, rows)
    assert patch(client, annotator, samples[0].id, 1, split="excluded").status_code == 200
    assert patch(client, annotator, samples[6].id, 1, split="excluded").status_code == 200
    data = load_training_data(engine, ds.id, settings)
    assert samples[0].id not in set(data.train["sample_id"]) and len(data.train) == 5
    assert set(data.valid["sample_id"]) == {samples[7].id}
    # Still scored by the next run (it has a prediction, in its own split), never trained on.
    assert set(data.items["sample_id"]) == {s.id for s in samples}
    assert db.scalar(select(LabelEvent.new_split).where(LabelEvent.sample_id == samples[6].id)) == "excluded"


def test_excluded_samples_round_trip_through_an_export(client, db, engineer):
    from tests.datasets.helpers import csv_bytes, upload

    ds = make_dataset(db, classes=["a", "b"])
    body = csv_bytes("id,split,label,x", "r1,train,a,1", "r2,excluded,b,2", "r3,excluded,,3", "r4,unlabelled,,4")
    assert upload(client, ds.id, "d.csv", body, engineer.headers).status_code == 201
    counts = client.get(f"/api/v1/datasets/{ds.id}", headers=engineer.headers).json()["counts"]
    assert (counts["excluded"], counts["train"], counts["unlabelled"]) == (2, 1, 1)
    exported = client.get(f"/api/v1/datasets/{ds.id}/export", headers=engineer.headers).content
    other = make_dataset(db, classes=["a", "b"])
    assert upload(client, other.id, "export.csv", exported, engineer.headers).status_code == 201
    assert client.get(f"/api/v1/datasets/{other.id}", headers=engineer.headers).json()["counts"] == counts
    r = upload(client, other.id, "bad.csv", csv_bytes("id,split,label,x", "z,nowhere,a,1"), engineer.headers)
    assert r.status_code == 422 and "train, valid, test, unlabelled, excluded" in r.json()["errors"][0]["message"]
