"""Bring your own predictions: POST /api/v1/datasets/{id}/runs makes a finished external run
that the listings, the queue and the run pages use as a train run's; a bad file is refused
by row, all or nothing (docs/rest.md, External runs)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import func, select

from app.models import Prediction, Run
from tests.builders import add_samples, make_dataset, make_user

CLASSES = ["6", "cat", "dog"]
# Train samples whose given label the model finds wrong, and the class it prefers.
WRONG = {3: "dog", 11: "6", 17: "cat"}


def dataset(db):
    """30 train samples (labels cycling through the classes), 6 valid, 6 test, 3 unlabelled."""
    ds = make_dataset(db, classes=CLASSES)
    rows = [{"label": CLASSES[i % 3], "split": "train"} for i in range(30)]
    rows += [{"label": CLASSES[i % 3], "split": "valid"} for i in range(6)]
    rows += [{"label": CLASSES[i % 3], "split": "test"} for i in range(6)]
    rows += [{"label": None, "split": "unlabelled"} for _ in range(3)]
    samples = add_samples(db, ds, rows)
    return ds, samples


def probabilities(samples) -> dict[str, list[float]]:
    """Per external id: confident in the given label, except WRONG (confident in another class)
    and valid sample 0, which the model gets wrong; unlabelled samples get a soft guess."""
    out = {}
    for i, s in enumerate(samples):
        target = WRONG.get(i) or s.label or "cat"
        if s.split == "valid" and i == 30:
            target = "dog" if s.label != "dog" else "6"
        p = [0.9 if c == target else 0.05 for c in CLASSES]
        if s.label is not None and i not in WRONG:
            p = [p[j] - 0.001 * (i % 7) * (1 if c == target else -0.5) for j, c in enumerate(CLASSES)]
        out[s.external_id] = p
    return out


def as_csv(probs: dict[str, list[float]], extra: dict[str, str] | None = None) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["external_id", *CLASSES, *(extra or {})])
    for ext, p in probs.items():
        w.writerow([ext, *p, *(extra or {}).values()])
    return buf.getvalue().encode()


def post(client, ds, user, content: bytes, filename: str = "preds.csv", **form):
    data = {"name": "resnet50-cluster", "out_of_fold": "true", **form}
    return client.post(f"/api/v1/datasets/{ds.id}/runs", files={"file": (filename, content)}, data=data,
                       headers=user.headers)


def test_an_external_run_scores_flags_and_leads(client, db):
    ds, samples = dataset(db)
    eng, ann = make_user(db, "engineer"), make_user(db, "annotator")
    r = post(client, ds, eng, as_csv(probabilities(samples), {"notes": "x"}))
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["status"] == "succeeded" and run["job_id"] is None and run["params"] == {}
    assert run["provenance"] == {"kind": "external", "name": "resnet50-cluster", "job_id": None,
                                 "label_version": 0, "out_of_fold": True}
    assert run["info"]["ignored_columns"] == ["notes"]
    assert run["info"]["covers_through"] == max(s.id for s in samples)
    valid = run["metrics"]["valid"]
    assert valid["accuracy"] == 5 / 6 and set(valid["per_class"]) == set(CLASSES)
    assert run["metrics"]["test"]["accuracy"] == 1.0

    preds = {p.sample_id: p for p in db.scalars(select(Prediction).where(Prediction.run_id == run["id"]))}
    assert len(preds) == len(samples)
    flagged = {sid: p.suggested_label for sid, p in preds.items() if p.flagged}
    assert flagged == {samples[i].id: c for i, c in WRONG.items()}
    assert all(preds[s.id].aum is None for s in samples), "no training dynamics"
    assert preds[samples[-1].id].loss is None and preds[samples[-1].id].label == "cat"

    # The run leads: the listing by priority opens on the flagged samples, the queue follows it.
    page = client.get(f"/api/v1/datasets/{ds.id}/samples", params={"order": "priority", "limit": 3, "split": "train"},
                      headers=ann.headers).json()
    assert page["run_id"] == run["id"]
    assert {i["id"] for i in page["items"]} == {samples[i].id for i in WRONG}
    # Without embeddings there is no expected gain: the flagged set goes by self-confidence, and the
    # API says so for each sample.
    assert run["info"]["review_order"] == {"order": "priority", "reason": "no embeddings"}
    assert all(p.review_gain is None for p in preds.values())
    reasons = [i["prediction"]["queue_reason"] for i in page["items"]]
    assert all(r.startswith("flagged as a likely label error; self-confidence") for r in reasons), reasons
    listed = client.get(f"/api/v1/datasets/{ds.id}/runs", headers=ann.headers).json()
    assert listed[0]["id"] == run["id"] and listed[0]["provenance"]["kind"] == "external"


def test_logits_jsonl_with_embeddings(client, db, settings):
    ds, samples = dataset(db)
    eng = make_user(db, "engineer")
    lines = []
    for i, (ext, p) in enumerate(probabilities(samples).items()):
        logits = {c: float(np.log(v)) + 3.0 for c, v in zip(CLASSES, p)}  # softmax undoes the log and the shift
        lines.append(json.dumps({"external_id": ext, **logits, "embedding": [i, 0.5, -1.0, 2.0]}))
    r = post(client, ds, eng, "\n".join(lines).encode(), "p.jsonl", normalize="softmax", out_of_fold="false")
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["provenance"]["out_of_fold"] is False and run["info"]["notices"]
    assert run["info"]["embedding"]["dim"] == 4
    folder = Path(settings.data_dir) / "artifacts" / f"run-{run['id']}"
    emb, ids = np.load(folder / "embedding.npy"), np.load(folder / "embedding_sample_ids.npy")
    assert emb.shape == (len(samples), 4) and emb.dtype == np.float32
    assert emb[ids.tolist().index(samples[5].id), 0] == 5
    pred = db.scalar(select(Prediction).where(Prediction.run_id == run["id"], Prediction.sample_id == samples[3].id))
    assert pred.label == "dog" and abs(pred.probs["dog"] - 0.9) < 1e-9
    # With embeddings, the train samples carry the expected gain of a review and the flagged set
    # is ordered by it (app.scoring.review_gain); the other splits have none.
    assert run["info"]["review_order"] == {"order": "gain", "reason": "embeddings"}
    preds = list(db.scalars(select(Prediction).where(Prediction.run_id == run["id"])))
    train = [p for p in preds if p.sample_split == "train"]
    assert all(p.review_gain is not None for p in train)
    assert all(p.review_gain is None for p in preds if p.sample_split != "train")
    flagged = sorted((p for p in train if p.flagged), key=lambda p: p.priority)
    assert flagged and [p.review_gain for p in flagged] == sorted((p.review_gain for p in flagged), reverse=True)
    item = client.get(f"/api/v1/samples/{flagged[0].sample_id}", headers=eng.headers).json()
    assert item["prediction"]["review_gain"] == flagged[0].review_gain
    assert item["prediction"]["queue_reason"].startswith("flagged as a likely label error; expected gain of a review")


def test_parquet_partial_file(client, db):
    """A file that leaves out the test samples: no test metrics, and those samples still list."""
    ds, samples = dataset(db)
    eng = make_user(db, "engineer")
    probs = {s.external_id: p for s, p in zip(samples, probabilities(samples).values()) if s.split != "test"}
    table = pa.table({"external_id": list(probs), **{c: [p[j] for p in probs.values()] for j, c in enumerate(CLASSES)},
                      "embedding": [[1.0, 2.0]] * len(probs)})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    r = post(client, ds, eng, buf.getvalue(), "p.parquet")
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["metrics"]["test"] is None and run["metrics"]["valid"] is not None
    assert "covers_through" not in run["info"]
    listed = client.get(f"/api/v1/datasets/{ds.id}/samples", params={"order": "loss", "limit": 100},
                        headers=eng.headers).json()
    assert len(listed["items"]) == len(samples)


def refused(r, *expected: tuple[object, str, str]):
    """The answer is a 422 naming each (row, field, words in the message)."""
    assert r.status_code == 422, r.text
    body = r.json()
    assert "no run was created" in body["detail"]
    for row, field, words in expected:
        assert any(e["row"] == row and e["field"] == field and words in e["message"] for e in body["errors"]), (
            row, field, words, body["errors"])


def test_bad_files_are_refused_by_row_and_create_nothing(client, db):
    ds, samples = dataset(db)
    eng = make_user(db, "engineer")
    probs = probabilities(samples)
    ids = list(probs)

    missing = "external_id,6,cat\n" + "".join(f"{e},0.5,0.5\n" for e in ids)
    refused(post(client, ds, eng, missing.encode()), (None, "dog", "no probability column for class 'dog'"))

    bad = dict(probs)
    bad[ids[1]] = [0.5, 0.2, 0.1]  # sums to 0.8
    bad[ids[4]] = [float("nan"), 0.5, 0.5]
    bad[ids[6]] = [1.5, -0.25, -0.25]
    refused(post(client, ds, eng, as_csv(bad)), (2, "probabilities", "sum to 0.8"), (5, "6", "missing"),
            (7, "6", "not a probability"))

    unknown = as_csv(probs) + b"nobody,0.2,0.3,0.5\n" + f"{ids[0]},0.2,0.3,0.5\n".encode()
    refused(post(client, ds, eng, unknown), (len(ids) + 1, "external_id", "'nobody' is not a sample"),
            (len(ids) + 2, "external_id", "appears again (first in row 1)"))

    text = as_csv(probs).replace(b"\n" + ids[2].encode() + b",", b"\n" + ids[2].encode() + b",abc,", 1)
    r = post(client, ds, eng, text)
    assert r.status_code == 422

    words = as_csv({e: p for e, p in list(probs.items())[:3]}).decode().splitlines()
    words = [words[0] + ",embedding", words[1] + ',"[1, 2]"', words[2] + ',"[1]"', words[3] + ',"[1, NaN]"']
    refused(post(client, ds, eng, "\n".join(words).encode()), (2, "embedding", "every embedding must have 2"))

    refused(post(client, ds, eng, b"external_id,6,cat,dog\n"), (None, "file", "no rows"))
    refused(post(client, ds, eng, as_csv(probs), "p.txt"), (None, "file", "unsupported file type"))
    refused(post(client, ds, eng, b"\x00\x01garbage", "p.parquet"), (None, "file", "Parquet"))
    assert post(client, ds, eng, as_csv(probs), normalize="sigmoid").status_code == 422
    assert post(client, ds, eng, as_csv(probs), name="").status_code == 422
    assert db.scalar(select(func.count()).select_from(Run)) == 0
    assert db.scalar(select(func.count()).select_from(Prediction)) == 0


def test_roles_and_datasets(client, db):
    ds, samples = dataset(db)
    other = make_dataset(db, classes=CLASSES)
    ann = make_user(db, "annotator")
    eng = make_user(db, "engineer")
    content = as_csv(probabilities(samples))
    assert post(client, ds, ann, content).status_code == 403
    r = client.post(f"/api/v1/datasets/{ds.id}/runs", files={"file": ("p.csv", content)}, data={"name": "m"})
    assert r.status_code == 401
    assert post(client, other, eng, content).status_code == 422, "another dataset's ids are unknown here"
    assert client.post("/api/v1/datasets/999999/runs", files={"file": ("p.csv", content)}, data={"name": "m"},
                       headers=eng.headers).status_code == 404


def test_the_overview_and_the_comparison_tell_an_external_run_from_a_train_run(client, db):
    from html import unescape

    from tests.web.review_builders import confident, make_run
    from tests.web.session import login

    ds, samples = dataset(db)
    eng = make_user(db, "engineer")
    trained = make_run(db, ds, {s.id: confident(s.label or "cat", CLASSES, 0.8) for s in samples})
    run = post(client, ds, eng, as_csv(probabilities(samples))).json()
    login(client, eng.user.username)
    page = unescape(client.get(f"/datasets/{ds.id}").text)
    assert f"External run #{run['id']} <strong>“resnet50-cluster”</strong>" in page
    assert "predictions uploaded from preds.csv (held-out probabilities, no training dynamics)" in page
    assert "data-recipe" not in page, "an external run has no recipe to show"
    assert f"Run #{run['id']}: external model “resnet50-cluster”; run #{trained.id}: train run." in page
    assert f"#{run['id']} · v0 · resnet50-cluster</option>" in page
    compared = client.get(f"/api/v1/datasets/{ds.id}/compare", headers=eng.headers).json()
    assert compared["provenance"]["kind"] == "external" and compared["base_provenance"]["kind"] == "train"
