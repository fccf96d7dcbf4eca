"""Answers under an overlap, and their consensus, weigh one class per answer: a multi-label
dataset refuses them with a 422 naming the field (an overlap above 1 in its settings, at
creation or later, or in an assignment; an answer through POST /samples/{id}/annotations),
keeps one answer per sample in its queues, and leaves its tag sets out of the agreement."""

from __future__ import annotations

from sqlalchemy import update

from app.models import Dataset
from tests.builders import add_samples, make_user
from tests.datasets.test_multilabel import make_multilabel


def refused(r, field: str) -> None:
    assert r.status_code == 422, r.text
    body = r.json()
    assert "multi-label" in body["detail"] or "multi-label" in str(body["errors"])
    assert field in str(body["errors"]) or field in body["detail"]


def test_an_overlap_above_one_is_refused_on_a_multi_label_dataset(client, db, engineer):
    ds = make_multilabel(db, classes=["cat", "dog"])
    r = client.patch(f"/api/v1/datasets/{ds.id}", json={"overlap": 2}, headers=engineer.headers)
    refused(r, "overlap")
    r = client.patch(f"/api/v1/datasets/{ds.id}", json={"overlap": 1}, headers=engineer.headers)
    assert r.status_code == 200 and r.json()["settings"]["overlap"] == 1
    r = client.post("/api/v1/datasets", json={"name": "tags", "task": "text", "classes": ["cat", "dog"],
                                              "multilabel": True, "settings": {"overlap": 3}}, headers=engineer.headers)
    refused(r, "overlap")
    r = client.post("/api/v1/datasets", json={"name": "one", "task": "text", "classes": ["cat", "dog"],
                                              "settings": {"overlap": 3}}, headers=engineer.headers)
    assert r.status_code == 201, "a single-label dataset still takes an overlap"
    ann = make_user(db, "annotator")
    body = {"name": "second opinions", "users": [ann.user.username]}
    r = client.post(f"/api/v1/datasets/{ds.id}/assignments", json={**body, "overlap": 2}, headers=engineer.headers)
    refused(r, "overlap")
    r = client.post(f"/api/v1/datasets/{ds.id}/assignments", json=body, headers=engineer.headers)
    assert r.status_code == 201 and r.json()["overlap"] == 1


def test_answers_are_refused_and_an_older_overlap_setting_is_one(client, db, engineer):
    ds = make_multilabel(db, classes=["cat", "dog"])
    s = add_samples(db, ds, [{"label": "cat|dog", "text": "a"}])[0]
    # A setting stored before multi-label datasets refused it.
    db.execute(update(Dataset).where(Dataset.id == ds.id).values(settings={"overlap": 3}))
    db.commit()
    ann = make_user(db, "annotator")
    r = client.post(f"/api/v1/samples/{s.id}/annotations", json={"label": "cat"}, headers=ann.headers)
    refused(r, "label")
    r = client.get(f"/api/v1/datasets/{ds.id}/agreement", headers=engineer.headers)
    assert r.status_code == 200 and r.json()["overlap"] == 1
    # Relabelling keeps each annotator's answer beside the sample, but tag sets make no agreement.
    for who in (ann, make_user(db, "annotator")):
        version = client.get(f"/api/v1/samples/{s.id}", headers=who.headers).json()["version"]
        r = client.patch(f"/api/v1/samples/{s.id}", json={"labels": ["cat"]}, headers={**who.headers, "If-Match": str(version)})
        assert r.status_code == 200, r.text
    r = client.get(f"/api/v1/datasets/{ds.id}/agreement", headers=engineer.headers)
    assert r.status_code == 200 and r.json()["annotations"] == 0 and r.json()["kappa"] is None
