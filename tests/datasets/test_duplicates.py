"""Exact duplicates, keyed at import: the same feature vector, normalised text or image bytes
group together within and across splits, with leaks and label conflicts marked
(GET /api/v1/datasets/{id}/duplicates; docs/rest.md, Duplicates)."""

from __future__ import annotations

from tests.builders import make_dataset
from tests.datasets.helpers import csv_bytes, png, upload, zip_bytes


def groups(client, ds, headers, **params):
    r = client.get(f"/api/v1/datasets/{ds.id}/duplicates", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_tabular_duplicates_group_by_value_across_splits(client, db, engineer, annotator):
    ds = make_dataset(db, classes=["a", "b"])
    body = csv_bytes(
        "id,split,label,x,y",
        "r1,train,a,1,2.5",
        "r2,test,a,1.0,2.50",  # r1 again, in test: a leak
        "r3,train,a,1,2.6",
        "r4,train,b,7,-0",
        "r5,train,a,7,0",  # r4 again (-0 is 0) with another label: a conflict
        "r6,valid,b,7,0",  # and once more, in valid
        "r7,train,b,3,",
        "r8,train,b,3,",  # missing values compare equal
    )
    assert upload(client, ds.id, "d.csv", body, engineer.headers).status_code == 201
    page = groups(client, ds, annotator.headers)
    found = {tuple(g["external_ids"]): g for g in page["groups"]}
    assert set(found) == {("r1", "r2"), ("r4", "r5", "r6"), ("r7", "r8")} and page["next_cursor"] is None
    leak, conflict, plain = found[("r1", "r2")], found[("r4", "r5", "r6")], found[("r7", "r8")]
    assert leak["splits"] == ["train", "test"] and leak["leak"] and not leak["conflict"]
    assert conflict["labels"] == ["b", "a", "b"] and conflict["conflict"] and conflict["leak"]
    assert not plain["leak"] and not plain["conflict"] and plain["kind"] == "exact"

    assert [g["external_ids"] for g in groups(client, ds, annotator.headers, scope="conflict")["groups"]] == [
        ["r4", "r5", "r6"]]
    assert {tuple(g["external_ids"]) for g in groups(client, ds, annotator.headers, scope="leak")["groups"]} == {
        ("r1", "r2"), ("r4", "r5", "r6")}
    assert [g["external_ids"] for g in groups(client, ds, annotator.headers, split="test")["groups"]] == [["r1", "r2"]]

    # Pages walk every group once, in key order.
    seen, cursor = [], None
    while True:
        page = groups(client, ds, annotator.headers, limit=1, **({"cursor": cursor} if cursor else {}))
        seen += [g["key"] for g in page["groups"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(g["key"] for g in found.values())


def test_text_duplicates_after_normalising_and_images_by_bytes(client, db, engineer, annotator):
    text_ds = make_dataset(db, task="text", classes=["a", "b"])
    body = csv_bytes("id,label,text", "t1,a,Hello  World", "t2,a,hello world ", "t3,b,\"HELLO\nworld\"",
                     "t4,a,\"hello, world\"")
    assert upload(client, text_ds.id, "t.csv", body, engineer.headers).status_code == 201
    page = groups(client, text_ds, annotator.headers)
    assert [g["external_ids"] for g in page["groups"]] == [["t1", "t2", "t3"]] and page["groups"][0]["conflict"]

    image_ds = make_dataset(db, task="image", classes=["cat", "dog"])
    archive = zip_bytes({"cat/1.png": png(), "dog/2.png": png(), "dog/3.png": png((0, 0, 255))})
    assert upload(client, image_ds.id, "i.zip", archive, engineer.headers).status_code == 201
    page = groups(client, image_ds, annotator.headers)
    assert len(page["groups"]) == 1 and page["groups"][0]["labels"] == ["cat", "dog"]


def test_bad_parameters_and_other_datasets(client, db, engineer, annotator):
    ds = make_dataset(db, classes=["a", "b"])
    assert upload(client, ds.id, "d.csv", csv_bytes("id,label,x", "r1,a,1", "r2,a,1"), engineer.headers).status_code == 201
    url = f"/api/v1/datasets/{ds.id}/duplicates"
    assert client.get(url, params={"cursor": "'; drop"}, headers=annotator.headers).status_code == 400
    assert client.get(url, params={"kind": "similar"}, headers=annotator.headers).status_code == 422
    # Near duplicates need a run with embeddings: none yet, no groups.
    assert groups(client, ds, annotator.headers, kind="near") == {"run_id": None, "groups": [], "next_cursor": None}
    assert client.get(url, params={"limit": 0}, headers=annotator.headers).status_code == 422
    assert client.get(url).status_code == 401
    assert client.get("/api/v1/datasets/999999/duplicates", headers=annotator.headers).status_code == 404
    other = make_dataset(db, classes=["a", "b"])
    assert groups(client, other, annotator.headers)["groups"] == [], "another dataset's duplicates stay its own"


def test_leakage_report_names_the_copies_and_their_effect_on_the_metrics(client, db, engineer, annotator):
    from app.models import Dataset, Sample
    from tests.web.review_builders import confident, make_run

    ds = make_dataset(db, classes=["a", "b"])
    body = csv_bytes("id,split,label,x", "t1,train,a,1", "t2,train,b,2", "v1,valid,a,1", "v2,valid,b,5",
                     "v3,valid,a,6", "e1,test,b,2", "e2,test,a,9")
    assert upload(client, ds.id, "d.csv", body, engineer.headers).status_code == 201
    url = f"/api/v1/datasets/{ds.id}/leakage"
    before = client.get(url, headers=annotator.headers).json()
    assert before["run_id"] is None and before["splits"]["valid"]["leaked"] == 1
    assert before["splits"]["valid"]["metrics_all"] is None

    samples = {s.external_id: s for s in db.query(Sample).filter(Sample.dataset_id == ds.id)}
    # The run gets the leaked copies right (it trained on them) and the rest wrong.
    right = {"v1", "e1"}
    run = make_run(db, db.get(Dataset, ds.id), {s.id: confident(s.label if e in right or e.startswith("t") else
                                                                  ("b" if s.label == "a" else "a"), ["a", "b"])
                                               for e, s in samples.items()})
    report = client.get(url, headers=annotator.headers).json()
    assert report["run_id"] == run.id
    valid, test = report["splits"]["valid"], report["splits"]["test"]
    assert valid["sample_ids"] == [samples["v1"].id] and test["sample_ids"] == [samples["e1"].id]
    assert (valid["labelled"], valid["metrics_all"]["accuracy"], valid["metrics_clean"]["accuracy"]) == (3, 1 / 3, 0.0)
    assert (test["metrics_all"]["accuracy"], test["metrics_clean"]["accuracy"]) == (0.5, 0.0)
    leaks = client.get(f"/api/v1/datasets/{ds.id}/duplicates", params={"scope": "leak"}, headers=annotator.headers)
    assert sorted(sorted(g["external_ids"]) for g in leaks.json()["groups"]) == [["e1", "t2"], ["t1", "v1"]]
