"""A run's data issues from its embeddings: near duplicates (within train and across to test),
conflicting twins flagged with the twin's label, outlier scores as a listing order, the leak
report, and the export's columns (docs/data-issues.md)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
from sqlalchemy import select

from app.models import Prediction
from tests.builders import make_user
from tests.runs.test_external import CLASSES, dataset, post, probabilities

DIM = 8


def embeddings(samples) -> dict[str, list[float]]:
    """Per external id: the class's centre plus noise; s36 (test) is a near copy of s0 (train),
    s2 (dog) a near copy of s1 (cat), s5 (train) and s42 (unlabelled) far from everything."""
    rng = np.random.default_rng(7)
    out = {}
    for i, s in enumerate(samples):
        centre = np.zeros(DIM)
        centre[CLASSES.index(s.label or "cat")] = 10.0
        out[s.external_id] = centre + rng.normal(scale=1.0, size=DIM)
    out["s36"] = out["s0"] + 1e-3
    out["s2"] = out["s1"] - 1e-3
    out["s5"] = np.full(DIM, 40.0)
    out["s42"] = np.full(DIM, -40.0)
    return {k: [float(x) for x in v] for k, v in out.items()}


def upload(client, db):
    ds, samples = dataset(db)
    eng = make_user(db, "engineer")
    probs = probabilities(samples)
    probs["s2"] = [0.04, 0.5, 0.46]  # dog, but the model leans to its twin's cat
    vectors = embeddings(samples)
    lines = [json.dumps({"external_id": ext, **dict(zip(CLASSES, p)), "embedding": vectors[ext]})
             for ext, p in probs.items()]
    r = post(client, ds, eng, "\n".join(lines).encode(), "p.jsonl")
    assert r.status_code == 201, r.text
    return ds, {s.external_id: s for s in samples}, r.json(), eng


def test_near_duplicates_leaks_twins_and_outliers(client, db):
    ds, by_ext, run, eng = upload(client, db)
    issues = run["info"]["data_issues"]
    assert issues["embedding"] and issues["index"] == "exact"
    assert (issues["groups"], issues["leak_groups"], issues["conflict_groups"]) == (2, 1, 1)
    assert issues["outliers"] >= 2

    page = client.get(f"/api/v1/datasets/{ds.id}/duplicates", params={"kind": "near"}, headers=eng.headers).json()
    assert page["run_id"] == run["id"] and page["next_cursor"] is None
    found = {tuple(g["external_ids"]): g for g in page["groups"]}
    assert set(found) == {("s0", "s36"), ("s1", "s2")}
    leak, twins = found[("s0", "s36")], found[("s1", "s2")]
    assert leak["kind"] == "near" and leak["splits"] == ["train", "test"] and leak["leak"] and not leak["conflict"]
    assert leak["key"] == str(by_ext["s0"].id)
    assert twins["labels"] == ["cat", "dog"] and twins["conflict"] and not twins["leak"]
    only = client.get(f"/api/v1/datasets/{ds.id}/duplicates", params={"kind": "near", "scope": "leak"},
                      headers=eng.headers).json()
    assert [g["external_ids"] for g in only["groups"]] == [["s0", "s36"]]

    # The twin the model doubts is flagged, suggesting its twin's label.
    pred = db.scalar(select(Prediction).where(Prediction.run_id == run["id"], Prediction.sample_id == by_ext["s2"].id))
    assert pred.flagged and pred.suggested_label == "cat" and pred.duplicate_group == by_ext["s1"].id
    assert run["info"]["flagged"]["twin_conflicts"] == 1

    # The leak report counts the near copy in test.
    leakage = client.get(f"/api/v1/datasets/{ds.id}/leakage", headers=eng.headers).json()
    assert leakage["splits"]["test"]["leaked_near"] == 1 and leakage["splits"]["test"]["leaked_exact"] == 0
    assert leakage["splits"]["test"]["sample_ids"] == [by_ext["s36"].id]

    # order=outlier puts the far samples first, in train and in the unlabelled pool, both ways.
    def listing(**params):
        r = client.get(f"/api/v1/datasets/{ds.id}/samples", params={"order": "outlier", **params}, headers=eng.headers)
        assert r.status_code == 200, r.text
        return r.json()["items"]

    train = listing(split="train", limit=3)
    assert train[0]["external_id"] == "s5" and train[0]["prediction"]["outlier"] > issues["outlier_fence"]
    assert listing(split="unlabelled", limit=1)[0]["external_id"] == "s42"
    assert listing(split="train", reverse="true", limit=500)[-1]["external_id"] == "s5"
    assert train[0]["prediction"]["duplicate_group"] is None

    # The export carries the group and the outlier score.
    r = client.get(f"/api/v1/datasets/{ds.id}/export", params={"format": "csv"}, headers=eng.headers)
    assert r.status_code == 200, r.text
    rows = {row["external_id"]: row for row in csv.DictReader(io.StringIO(r.text))}
    assert rows["s36"]["duplicate_group"] == str(by_ext["s0"].id) and rows["s3"]["duplicate_group"] == ""
    assert float(rows["s5"]["outlier"]) == train[0]["prediction"]["outlier"]


def test_near_duplicates_parameters(client, db):
    ds, by_ext, run, eng = upload(client, db)
    url = f"/api/v1/datasets/{ds.id}/duplicates"
    page = client.get(url, params={"kind": "near", "run": run["id"], "limit": 1}, headers=eng.headers).json()
    assert len(page["groups"]) == 1 and page["next_cursor"] == str(by_ext["s0"].id)
    rest = client.get(url, params={"kind": "near", "cursor": page["next_cursor"]}, headers=eng.headers).json()
    assert [g["external_ids"] for g in rest["groups"]] == [["s1", "s2"]] and rest["next_cursor"] is None
    assert client.get(url, params={"kind": "near", "cursor": "abc"}, headers=eng.headers).status_code == 400
    assert client.get(url, params={"kind": "fuzzy"}, headers=eng.headers).status_code == 422
    other, _ = dataset(db)
    assert client.get(f"/api/v1/datasets/{other.id}/duplicates", params={"kind": "near", "run": run["id"]},
                      headers=eng.headers).status_code == 404
    empty = client.get(f"/api/v1/datasets/{other.id}/duplicates", params={"kind": "near"}, headers=eng.headers).json()
    assert empty == {"run_id": None, "groups": [], "next_cursor": None}


def test_a_run_without_embeddings_has_no_outlier_scores(client, db):
    ds, samples = dataset(db)
    eng = make_user(db, "engineer")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["external_id", *CLASSES])
    for ext, p in probabilities(samples).items():
        w.writerow([ext, *p])
    r = post(client, ds, eng, buf.getvalue().encode())
    assert r.status_code == 201, r.text
    assert r.json()["info"]["data_issues"]["embedding"] is False
    assert db.scalar(select(Prediction.outlier).where(Prediction.run_id == r.json()["id"]).limit(1)) is None
