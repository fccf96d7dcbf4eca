"""POST /api/v1/datasets/{id}/samples/bulk: per-item results, stale versions reported, never overwritten."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models import Dataset, Sample
from tests.builders import add_samples, make_dataset, make_user
from tests.web.review_builders import confident, events_of, make_run


def bulk(client, ds, account, body):
    return client.post(f"/api/v1/datasets/{ds.id}/samples/bulk", json=body, headers=account.headers)


def items(*samples, version=1):
    return [{"id": s.id, "version": version} for s in samples]


def test_set_label_changes_each_sample_once_and_reports_every_item(client, db, annotator):
    ds = make_dataset(db)
    a, b, c = add_samples(db, ds, [{"label": "a"}, {"label": "b"}, {"label": "a"}])
    r = bulk(client, ds, annotator, {"items": items(a, b, c), "label": "b"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["counts"] == {"changed": 2, "kept": 1, "conflict": 0, "skipped": 0}
    assert [(i["id"], i["status"]) for i in body["items"]] == [(a.id, "changed"), (b.id, "kept"), (c.id, "changed")]
    changed = body["items"][0]
    assert (changed["sample"]["label"], changed["sample"]["version"], changed["sample"]["reviewed"]) == ("b", 2, True)
    assert changed["event_id"] is not None and changed["detail"] is None and changed["current"] is None
    kept = body["items"][1]
    assert (kept["sample"]["version"], kept["sample"]["reviewed"], kept["event_id"]) == (2, True, None)
    assert body["label_version"] == 2
    me = annotator.user.id
    assert events_of(db, ds) == [(a.id, "a", "b", "api", me, None), (c.id, "a", "b", "api", me, None)]
    assert db.get(Dataset, ds.id).label_version == 2


def test_a_stale_version_is_a_conflict_with_the_current_sample_and_nothing_is_overwritten(client, db, annotator):
    ds = make_dataset(db)
    a, b = add_samples(db, ds, [{"label": "a"}, {"label": "a"}])
    other = make_user(db, "annotator")
    r = client.patch(f"/api/v1/samples/{b.id}", json={"label": "c"}, headers={**other.headers, "If-Match": "1"})
    assert r.status_code == 200

    r = bulk(client, ds, annotator, {"items": items(a, b), "label": "b"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["counts"] == {"changed": 1, "kept": 0, "conflict": 1, "skipped": 0}
    conflict = body["items"][1]
    assert (conflict["id"], conflict["status"], conflict["sample"]) == (b.id, "conflict", None)
    assert conflict["detail"] == f"sample {b.id} changed: you sent version 1, it is now at 2"
    current = conflict["current"]
    assert (current["label"], current["version"]) == ("c", 2)
    assert [(h["old_label"], h["new_label"], h["user"]) for h in current["history"]] == [("a", "c", other.user.username)]
    db.expire_all()
    assert db.get(Sample, b.id).label == "c", "the other annotator's change stays"
    assert [e[:3] for e in events_of(db, ds)] == [(b.id, "a", "c"), (a.id, "a", "b")]

    # Resent with the version the conflict reported, it goes through.
    r = bulk(client, ds, annotator, {"items": [{"id": b.id, "version": current["version"]}], "label": "b"})
    assert r.json()["items"][0]["status"] == "changed"
    db.expire_all()
    assert db.get(Sample, b.id).label == "b"


def test_accept_predicted_takes_each_sample_s_predicted_class(client, db, annotator):
    ds = make_dataset(db)
    a, b, c, d = add_samples(db, ds, [{"label": "a"}, {"label": "b"}, {"label": "c"}, {"label": "a"}])
    make_run(db, ds, {a.id: confident("b", ds.classes), b.id: confident("b", ds.classes), c.id: confident("a", ds.classes)})
    r = bulk(client, ds, annotator, {"items": items(a, b, c, d), "accept_predicted": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(i["id"], i["status"]) for i in body["items"]] == [
        (a.id, "changed"), (b.id, "kept"), (c.id, "changed"), (d.id, "skipped")]
    assert body["items"][3]["detail"] == f"sample {d.id} has no prediction"
    assert body["items"][0]["sample"]["prediction"]["label"] == "b"
    assert [e[:3] for e in events_of(db, ds)] == [(a.id, "a", "b"), (c.id, "c", "a")]


def test_accept_predicted_from_a_named_run(client, db, annotator):
    ds = make_dataset(db)
    (a,) = add_samples(db, ds, [{"label": "a"}])
    older = make_run(db, ds, {a.id: confident("c", ds.classes)})
    make_run(db, ds, {a.id: confident("b", ds.classes)})
    r = bulk(client, ds, annotator, {"items": items(a), "accept_predicted": True, "run": older.id})
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["sample"]["label"] == "c"


def test_samples_of_another_dataset_are_skipped_and_left_alone(client, db, annotator):
    ds, elsewhere = make_dataset(db), make_dataset(db)
    (a,) = add_samples(db, ds, [{"label": "a"}])
    (x,) = add_samples(db, elsewhere, [{"label": "a"}])
    r = bulk(client, ds, annotator, {"items": items(a, x) + [{"id": 999999, "version": 1}], "label": "c"})
    assert r.status_code == 200, r.text
    statuses = [(i["id"], i["status"], i["detail"]) for i in r.json()["items"]]
    assert statuses == [
        (a.id, "changed", None),
        (x.id, "skipped", f"sample {x.id} is not in dataset {ds.id}"),
        (999999, "skipped", f"sample 999999 is not in dataset {ds.id}"),
    ]
    db.expire_all()
    assert db.get(Sample, x.id).label == "a"


def test_an_unlabelled_sample_that_gets_a_label_joins_train(client, db, annotator):
    ds = make_dataset(db)
    (u,) = add_samples(db, ds, [{"label": None}])
    r = bulk(client, ds, annotator, {"items": items(u), "label": "a"})
    assert (r.json()["items"][0]["sample"]["split"], r.json()["items"][0]["sample"]["label"]) == ("train", "a")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": [{"id": 1, "version": 1}]}, "accept_predicted"),
        ({"items": [{"id": 1, "version": 1}], "label": "a", "accept_predicted": True}, "accept_predicted"),
        ({"items": [], "label": "a"}, "items"),
        ({"label": "a"}, "items"),
        ({"items": [{"id": 1, "version": 1}, {"id": 1, "version": 2}], "label": "a"}, "appears more than once"),
        ({"items": [{"id": 1}], "label": "a"}, "version"),
        ({"items": [{"id": 1, "version": 0}], "label": "a"}, "version"),
        ({"items": [{"id": "x", "version": 1}], "label": "a"}, "id"),
        ({"items": [{"id": 1, "version": 1}], "label": "a", "run": 3}, "run"),
        ({"items": [{"id": 1, "version": 1}], "label": "a", "colour": "red"}, "colour"),
        ({"items": [{"id": i, "version": 1} for i in range(501)], "label": "a"}, "items"),
    ],
)
def test_malformed_bodies_are_422_naming_the_field(client, db, annotator, body, field):
    ds = make_dataset(db)
    r = bulk(client, ds, annotator, body)
    assert r.status_code == 422, r.text
    assert field in str(r.json()["detail"])


def test_a_label_outside_the_classes_is_422_and_writes_nothing(client, db, annotator):
    ds = make_dataset(db)
    (a,) = add_samples(db, ds, [{"label": "a"}])
    r = bulk(client, ds, annotator, {"items": items(a), "label": "zebra"})
    assert r.status_code == 422
    assert "label" in r.json()["detail"] and "zebra" in r.json()["detail"]
    assert events_of(db, ds) == []


def test_accept_predicted_without_a_finished_run_is_409(client, db, annotator):
    ds = make_dataset(db)
    (a,) = add_samples(db, ds, [{"label": "a"}])
    r = bulk(client, ds, annotator, {"items": items(a), "accept_predicted": True})
    assert r.status_code == 409
    assert "no finished run" in r.json()["detail"]


def test_a_run_of_another_dataset_or_unfinished_is_refused(client, db, annotator):
    ds, elsewhere = make_dataset(db), make_dataset(db)
    (a,) = add_samples(db, ds, [{"label": "a"}])
    (x,) = add_samples(db, elsewhere, [{"label": "a"}])
    foreign = make_run(db, elsewhere, {x.id: confident("b", elsewhere.classes)})
    r = bulk(client, ds, annotator, {"items": items(a), "accept_predicted": True, "run": foreign.id})
    assert r.status_code == 404
    assert f"run {foreign.id}" in r.json()["detail"]
    running = make_run(db, ds, {a.id: confident("b", ds.classes)})
    running.status = "running"
    db.commit()
    r = bulk(client, ds, annotator, {"items": items(a), "accept_predicted": True, "run": running.id})
    assert r.status_code == 409
    assert "running" in r.json()["detail"]


def test_unknown_dataset_is_404_and_no_token_is_401(client, db, annotator):
    r = client.post("/api/v1/datasets/424242/samples/bulk", json={"items": [{"id": 1, "version": 1}], "label": "a"},
                    headers=annotator.headers)
    assert r.status_code == 404
    r = client.post("/api/v1/datasets/1/samples/bulk", json={"items": [{"id": 1, "version": 1}], "label": "a"})
    assert r.status_code == 401


def test_the_contract_is_in_the_openapi_schema(client):
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/api/v1/datasets/{dataset_id}/samples/bulk"]["post"]
    assert "conflict" in op["description"] and "not all or nothing" in op["description"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("BulkRelabelResult")


def test_concurrent_bulk_requests_on_shared_samples_never_lose_an_update(live_server, db, annotator):
    """Threads race bulk requests over the same samples with the versions they read: per
    version exactly one writer wins, and each sample's event chain is unbroken."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    threads, rounds = 6, 4
    ds = make_dataset(db, classes=[f"c{i}" for i in range(threads)] + ["start"])
    samples = add_samples(db, ds, [{"label": "start"} for _ in range(5)])
    barrier = threading.Barrier(threads)
    outcomes: list[tuple[int, str]] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        with httpx.Client(base_url=live_server, headers=annotator.headers, timeout=60) as http:
            for _ in range(rounds):
                seen = [http.get(f"/api/v1/samples/{s.id}").json() for s in samples]
                barrier.wait()
                body = {"items": [{"id": s["id"], "version": s["version"]} for s in seen], "label": f"c{i}"}
                r = http.post(f"/api/v1/datasets/{ds.id}/samples/bulk", json=body)
                assert r.status_code == 200, r.text
                with lock:
                    outcomes.extend((item["id"], item["status"]) for item in r.json()["items"])
                barrier.wait()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))

    db.expire_all()
    for s in samples:
        mine = [status for sid, status in outcomes if sid == s.id]
        # Every round everyone read the same version: one wins it, the rest conflict.
        assert mine.count("conflict") == rounds * (threads - 1), mine
        assert mine.count("changed") + mine.count("kept") == rounds
        chain = [e for e in events_of(db, ds) if e[0] == s.id]
        assert len(chain) == mine.count("changed")
        label = "start"
        for _, old, new, *_ in chain:
            assert old == label
            label = new
        assert db.scalar(select(Sample.label).where(Sample.id == s.id)) == label
        assert db.get(Sample, s.id).version == rounds + 1
