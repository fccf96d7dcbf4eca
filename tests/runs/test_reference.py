"""A run pinned as the dataset's reference leads the queue, the listing, the dataset's
current run and the exports instead of the newest run, until it is unpinned (docs/rest.md,
Runs)."""

from __future__ import annotations

import csv
import io
from html import unescape

from fastapi.testclient import TestClient

from sqlalchemy import update

from app.models import Dataset, Run
from tests.builders import add_samples, make_dataset, make_user
from tests.web.review_builders import confident, make_run
from tests.web.session import login

CLASSES = ["a", "b"]


def two_runs(db):
    """An older run that predicts every sample as its label's other class (so it suspects all
    of them, most the first), and a newer one that agrees with the labels."""
    ds = make_dataset(db, classes=CLASSES)
    samples = add_samples(db, ds, [{"label": CLASSES[i % 2]} for i in range(6)])
    older = make_run(db, ds, {s.id: confident(CLASSES[(i + 1) % 2], CLASSES, 0.99 - i / 100)
                              for i, s in enumerate(samples)})
    newer = make_run(db, ds, {s.id: confident(CLASSES[i % 2], CLASSES, 0.9) for i, s in enumerate(samples)})
    return ds, samples, older, newer


def test_a_pinned_reference_leads_until_unpinned(client, db):
    ds, samples, older, newer = two_runs(db)
    eng, ann = make_user(db, "engineer"), make_user(db, "annotator")
    listing = lambda: client.get(f"/api/v1/datasets/{ds.id}/samples", params={"order": "loss", "limit": 3},  # noqa: E731
                                 headers=ann.headers).json()
    assert listing()["run_id"] == newer.id, "without a pin, the newest run leads"

    assert client.post(f"/api/v1/runs/{older.id}/pin", headers=ann.headers).status_code == 403
    r = client.post(f"/api/v1/runs/{older.id}/pin", headers=eng.headers)
    assert r.status_code == 200 and r.json()["reference"] is True and r.json()["pinned"] is True
    assert client.get(f"/api/v1/datasets/{ds.id}", headers=ann.headers).json()["reference_run_id"] == older.id
    page = listing()
    assert page["run_id"] == older.id
    assert [i["prediction"]["label"] for i in page["items"]] == [CLASSES[(i + 1) % 2] for i in range(3)]
    queue = client.get(f"/api/v1/datasets/{ds.id}/queue", params={"limit": 2}, headers=ann.headers).json()
    assert queue["run_id"] == older.id
    runs = {r["id"]: r["reference"] for r in client.get(f"/api/v1/datasets/{ds.id}/runs", headers=ann.headers).json()}
    assert runs == {older.id: True, newer.id: False}
    assert client.get(f"/api/v1/runs/{older.id}", headers=ann.headers).json()["reference"] is True
    exported = client.get(f"/api/v1/datasets/{ds.id}/export", headers=eng.headers).text
    predicted = {row["predicted"] for row in csv.DictReader(io.StringIO(exported))}
    assert predicted == set(CLASSES) and all(
        row["predicted"] != row["label"] for row in csv.DictReader(io.StringIO(exported))), "the reference's predictions"

    # A newer run does not take over; unpinning hands the lead back to the newest.
    third = make_run(db, db.get(Dataset, ds.id), {s.id: confident("a", CLASSES, 0.7) for s in samples})
    assert listing()["run_id"] == older.id
    assert client.delete(f"/api/v1/runs/{older.id}/pin", headers=eng.headers).status_code == 204
    assert listing()["run_id"] == third.id
    assert client.get(f"/api/v1/datasets/{ds.id}", headers=ann.headers).json()["reference_run_id"] is None
    assert client.delete(f"/api/v1/runs/{older.id}/pin", headers=eng.headers).status_code == 204, "idempotent"


def test_only_a_succeeded_run_can_be_the_reference_and_a_failed_one_is_ignored(client, db):
    ds, _, older, newer = two_runs(db)
    eng = make_user(db, "engineer")
    db.execute(update(Run).where(Run.id == older.id).values(status="failed"))
    db.commit()
    r = client.post(f"/api/v1/runs/{older.id}/pin", headers=eng.headers)
    assert r.status_code == 409 and "succeeded" in r.json()["detail"]
    assert client.post("/api/v1/runs/999999/pin", headers=eng.headers).status_code == 404
    # A reference that stopped being usable (here: marked failed after the pin) is ignored.
    db.execute(update(Run).where(Run.id == older.id).values(status="succeeded"))
    db.commit()
    assert client.post(f"/api/v1/runs/{older.id}/pin", headers=eng.headers).status_code == 200
    db.execute(update(Run).where(Run.id == older.id).values(status="failed"))
    db.commit()
    body = client.get(f"/api/v1/datasets/{ds.id}/samples", params={"order": "loss"}, headers=eng.headers).json()
    assert body["run_id"] == newer.id


def test_the_overview_pins_and_unpins_a_reference_and_shows_the_recipe(client, db):
    ds, _, older, newer = two_runs(db)
    eng = make_user(db, "engineer")
    csrf = login(client, eng.user.username)
    page = client.get(f"/datasets/{ds.id}").text
    assert f"Run #{newer.id}" in page and "data-reference title" not in page
    assert '<pre data-recipe>{\n  "epochs": 1\n}</pre>' in unescape(page), "the run's resolved params"
    assert f'<option value="{older.id}">#{older.id}' in page and "data-reference-form" in page
    r = client.post(f"/datasets/{ds.id}/reference", data={"run": older.id, "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    page = client.get(f"/datasets/{ds.id}").text
    assert f"Run #{older.id} <span class=\"badge\" data-reference" in page
    assert f"Run #{newer.id} is newer; this one leads while it is pinned." in page
    assert f"Unpin run #{older.id}" in page
    other = make_dataset(db, classes=CLASSES)
    assert client.post(f"/datasets/{other.id}/reference", data={"run": older.id, "csrf_token": csrf}).status_code == 404
    assert client.post(f"/datasets/{ds.id}/reference", data={"run": older.id}).status_code == 403, "CSRF"
    client.post(f"/datasets/{ds.id}/reference", data={"run": older.id, "clear": "true", "csrf_token": csrf})
    db.expire_all()
    assert db.get(Dataset, ds.id).reference_run_id is None
    ann = make_user(db, "annotator")
    with TestClient(client.app) as other_client:
        ann_csrf = login(other_client, ann.user.username)
        assert "data-reference-form" not in other_client.get(f"/datasets/{ds.id}").text
        assert other_client.post(f"/datasets/{ds.id}/reference",
                                 data={"run": older.id, "csrf_token": ann_csrf}).status_code == 403
