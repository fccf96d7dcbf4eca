"""Every id a request carries besides the one in its path must belong to the resource in the path.

An undo step, an event to revert, a run, a snapshot, a job or a sample of dataset 1 sent
through a route of dataset 2 is refused (404, or "skipped" per item in bulk), and nothing
of dataset 1 changes.
"""

from __future__ import annotations

from sqlalchemy import select

from app.models import Job, LabelEvent, Sample, Snapshot
from tests.builders import add_samples, make_dataset
from tests.web.review_builders import confident, make_run
from tests.web.session import htmx, login


def _state(db, sample_id: int) -> tuple:
    db.expire_all()
    s = db.get(Sample, sample_id)
    return s.label, s.version, s.reviewed


def test_another_datasets_ids_are_refused_and_change_nothing(client, db, annotator, engineer):
    one, two = make_dataset(db, name="one"), make_dataset(db, name="two")
    (s1,) = add_samples(db, one, [{"label": "a", "external_id": "one-1"}])
    (s2,) = add_samples(db, two, [{"label": "a", "external_id": "two-1"}])
    run1 = make_run(db, one, {s1.id: confident("b", one.classes)})
    make_run(db, two, {s2.id: confident("b", two.classes)})
    # A change in dataset one, through the API: event e1 leaves s1 at version 2 (label b).
    r = client.patch(f"/api/v1/samples/{s1.id}", json={"label": "b"}, headers={**annotator.headers, "If-Match": "1"})
    assert r.status_code == 200
    e1 = db.scalar(select(LabelEvent.id).where(LabelEvent.sample_id == s1.id))
    snap1 = client.post(f"/api/v1/datasets/{one.id}/snapshots", json={}, headers=engineer.headers).json()["id"]
    job1 = Job(kind="train", params={}, dataset_id=one.id, status="running", max_attempts=1)
    db.add(job1)
    db.commit()
    before = _state(db, s1.id)

    csrf = login(client, annotator.user.username)
    h = htmx(csrf)
    for path, data in (
        # Grid and queue undo with dataset one's event, and with its sample (a keep).
        (f"/datasets/{two.id}/review/grid", {"action": "undo", "undo": f"e{e1}v2"}),
        (f"/datasets/{two.id}/review/grid", {"action": "undo", "undo": f"k{s1.id}v2"}),
        (f"/datasets/{two.id}/review", {"action": "undo", "undo": f"e{e1}v2"}),
        (f"/datasets/{two.id}/review", {"action": "undo", "undo": f"k{s1.id}v2"}),
        # Acting on dataset one's sample from dataset two's queue.
        (f"/datasets/{two.id}/review", {"action": "set", "set": "c", "current": str(s1.id), "version": "2"}),
        # Reverting dataset one's event from dataset two's history, or from another sample's.
        (f"/datasets/{two.id}/history/revert", {"event_id": str(e1), "version": "2"}),
        (f"/samples/{s2.id}/history/revert", {"event_id": str(e1), "version": "2"}),
    ):
        r = client.post(path, data=data, headers=h)
        assert r.status_code == 404, (path, data, r.status_code)
        assert _state(db, s1.id) == before, (path, data)

    r = client.post(f"/datasets/{two.id}/review/grid", data={"action": "set", "set_label": "c", "ids": [f"{s1.id}:2"]},
                    headers=h)
    assert r.status_code == 200 and _state(db, s1.id) == before

    api = engineer.headers
    for path in (
        f"/api/v1/datasets/{two.id}/samples?run={run1.id}",
        f"/api/v1/datasets/{two.id}/compare?run={run1.id}",
        f"/api/v1/datasets/{two.id}/export?snapshot={snap1}",
    ):
        r = client.get(path, headers=api)
        assert r.status_code == 404, (path, r.status_code, r.text)
    r = client.get(f"/datasets/{two.id}/activity?job={job1.id}", headers=h)
    assert r.status_code == 404
    r = client.post(f"/api/v1/datasets/{two.id}/samples/bulk",
                    json={"label": "c", "items": [{"id": s1.id, "version": 2}]}, headers=api)
    assert r.status_code == 200 and r.json()["items"][0]["status"] == "skipped"
    assert _state(db, s1.id) == before
    assert db.scalar(select(Snapshot.dataset_id).where(Snapshot.id == snap1)) == one.id
