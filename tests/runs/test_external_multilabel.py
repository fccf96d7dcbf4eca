"""An external run on a multi-label dataset: one probability (or logit) per tag, thresholds
chosen on valid, the multi-label metrics, per-tag label errors flagged with the suggested set,
and the refusals that name the row and field (both databases)."""

from __future__ import annotations

import csv
import io

import numpy as np
from sqlalchemy import func, select

from app.datasets import tagsets
from app.models import Prediction, Run
from tests.builders import add_samples, make_user
from tests.datasets.test_multilabel import make_multilabel

TAGS = ["cat", "dog", "car"]
# Train samples whose given set misses a tag the model is sure of (index: the missing tag).
MISSING = {4: "car", 11: "dog"}


def given_sets() -> list[tuple[str, str | None]]:
    """(split, given tag set): 40 train, 12 valid, 12 test, 3 unlabelled."""
    rng = np.random.default_rng(5)
    out = []
    for split, n in (("train", 40), ("valid", 12), ("test", 12)):
        for _ in range(n):
            tags = [t for t in TAGS if rng.random() < 0.45]
            out.append((split, "|".join(tags)))
    out += [("unlabelled", None)] * 3
    for i, tag in MISSING.items():  # the true set holds the tag the given one misses
        split, label = out[i]
        out[i] = (split, "|".join(t for t in TAGS if t in tagsets.to_list(label) or t == tag))
    return out


def dataset(db):
    ds = make_multilabel(db, classes=TAGS)
    rows = []
    for i, (split, label) in enumerate(given_sets()):
        if i in MISSING:
            label = "|".join(t for t in TAGS if t in tagsets.to_list(label) and t != MISSING[i])
        rows.append({"split": split, "label": label, "external_id": f"m{i}"})
    return ds, add_samples(db, ds, rows)


def probabilities(samples) -> dict[str, list[float]]:
    """Per external id: confident in each true tag (the given set, plus the MISSING tag)."""
    truth = given_sets()
    out = {}
    for i, s in enumerate(samples):
        true = tagsets.to_list(truth[i][1]) or []
        out[s.external_id] = [0.98 if i in MISSING and t == MISSING[i] else 0.93 - 0.01 * (i % 5) if t in true
                              else 0.04 + 0.01 * (i % 3) for t in TAGS]
    return out


def as_csv(probs: dict[str, list[float]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["external_id", *TAGS])
    for ext, p in probs.items():
        w.writerow([ext, *p])
    return buf.getvalue().encode()


def post(client, ds, user, content: bytes, **form):
    data = {"name": "tagger-v2", "out_of_fold": "true", **form}
    return client.post(f"/api/v1/datasets/{ds.id}/runs", files={"file": ("p.csv", content)}, data=data,
                       headers=user.headers)


def test_an_external_multilabel_run_flags_the_missing_tags_and_measures_the_sets(client, db):
    ds, samples = dataset(db)
    eng, ann = make_user(db, "engineer"), make_user(db, "annotator")
    r = post(client, ds, eng, as_csv(probabilities(samples)))
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["status"] == "succeeded" and run["provenance"]["kind"] == "external"
    assert set(run["info"]["thresholds"]) == set(TAGS)
    valid = run["metrics"]["valid"]
    assert valid["exact_match"] == 1.0 and valid["hamming_loss"] == 0.0 and set(valid["per_class"]) == set(TAGS)

    rows = {p.sample_id: p for p in db.scalars(select(Prediction).where(Prediction.run_id == run["id"]))}
    assert len(rows) == len(samples)
    flagged = {s.external_id: rows[s.id].suggested_label for s in samples if rows[s.id].flagged}
    for i, tag in MISSING.items():
        s = samples[i]
        assert s.external_id in flagged, (s.label, rows[s.id].probs)
        assert tag in tagsets.to_list(flagged[s.external_id])
        assert rows[s.id].out_of_fold and rows[s.id].fold is None
    assert run["info"]["flagged"]["count"] == len(flagged)
    assert all(samples[i].split == "train" for i, s in enumerate(samples) if s.external_id in flagged)

    # The review priority puts the flagged samples first.
    page = client.get(f"/api/v1/datasets/{ds.id}/samples", params={"split": "train", "order": "priority", "limit": len(flagged)},
                      headers=ann.headers).json()
    assert {item["external_id"] for item in page["items"]} == set(flagged)


def test_logits_are_read_with_sigmoid(client, db):
    ds, samples = dataset(db)
    eng = make_user(db, "engineer")
    probs = probabilities(samples)
    logits = {e: [float(np.log(p / (1 - p))) for p in ps] for e, ps in probs.items()}
    r = post(client, ds, eng, as_csv(logits), normalize="sigmoid")
    assert r.status_code == 201, r.text
    stored = db.scalar(select(Prediction).where(Prediction.run_id == r.json()["id"],
                                                Prediction.sample_id == samples[0].id))
    want = dict(zip(TAGS, probs[samples[0].external_id]))
    assert all(abs(stored.probs[t] - want[t]) < 1e-9 for t in stored.probs)


def test_a_multilabel_file_is_refused_by_row_and_field(client, db):
    ds, samples = dataset(db)
    eng = make_user(db, "engineer")
    probs = probabilities(samples)
    r = post(client, ds, eng, as_csv(probs), normalize="softmax")
    assert r.status_code == 422 and "normalize" in r.text and "independent" in r.text
    bad = dict(probs)
    bad[samples[2].external_id] = [1.4, 0.1, 0.2]
    r = post(client, ds, eng, as_csv(bad))
    assert r.status_code == 422
    (err,) = r.json()["errors"]
    assert (err["row"], err["field"]) == (3, "cat") and "normalize=sigmoid" in err["message"]
    assert db.scalar(select(func.count()).select_from(Run)) == 0
