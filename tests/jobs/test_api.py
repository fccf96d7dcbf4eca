"""The job routes: enqueue, read, list, cancel; validation, 404s and roles."""

from __future__ import annotations

import pytest

from app.errors import Invalid
from app.jobs import queue, service
from app.jobs.worker import Worker
from tests.builders import make_dataset
from tests.jobs.conftest import load_job

JOB_FIELDS = {
    "id", "kind", "status", "progress", "message", "result", "error", "run_id", "attempts", "max_attempts",
    "cancel_requested", "worker_id", "created_at", "started_at", "finished_at", "dataset_id", "params", "devices",
}


def test_engineer_enqueues_a_job(client, db, engineer, settings):
    ds = make_dataset(db)
    r = client.post(
        f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "train", "params": {"epochs": 2}}, headers=engineer.headers
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) == JOB_FIELDS | {"logs"}
    assert (body["kind"], body["status"], body["params"], body["dataset_id"]) == ("train", "queued", {"epochs": 2}, ds.id)
    assert (body["progress"], body["attempts"], body["max_attempts"]) == (0.0, 0, settings.job_max_attempts)
    assert body["result"] is None and body["run_id"] is None and body["started_at"] is None
    assert [line["message"] for line in body["logs"]] == [f"queued by {engineer.user.username}"]
    assert set(body["logs"][0]) == {"at", "level", "message"}


def test_params_default_to_an_empty_object(client, db, engineer):
    ds = make_dataset(db)
    r = client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "train"}, headers=engineer.headers)
    assert r.status_code == 202 and r.json()["params"] == {}


def test_an_unknown_kind_is_422_and_lists_the_known_ones(client, db, engineer):
    ds = make_dataset(db)
    r = client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "bake"}, headers=engineer.headers)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "unknown job kind 'bake'" in detail and "train" in detail and "t_echo" in detail
    assert [e["field"] for e in r.json()["errors"]] == ["kind"]


def test_a_kind_that_trains_needs_a_dataset(db):
    with pytest.raises(Invalid, match="a seeds job needs a dataset"):
        service.enqueue(db, "seeds", {})
    assert service.enqueue(db, "t_echo").dataset_id is None


def test_params_must_be_an_object(client, db, engineer):
    ds = make_dataset(db)
    for params in ([1, 2], "epochs=2", 3):
        r = client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "train", "params": params}, headers=engineer.headers)
        assert r.status_code == 422, params
        assert r.json()["errors"][0]["loc"] == ["body", "params"] and r.json()["detail"].startswith("body.params: ")


def test_enqueue_for_a_missing_dataset_is_404(client, engineer):
    r = client.post("/api/v1/datasets/999/jobs", json={"kind": "train"}, headers=engineer.headers)
    assert r.status_code == 404 and "dataset 999" in r.json()["detail"]


def test_annotator_can_read_but_not_enqueue_or_cancel(client, db, engineer, annotator):
    ds = make_dataset(db)
    r = client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "train"}, headers=annotator.headers)
    assert r.status_code == 403
    job_id = client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "train"}, headers=engineer.headers).json()["id"]

    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=annotator.headers).status_code == 403
    r = client.get(f"/api/v1/jobs/{job_id}", headers=annotator.headers)
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert [j["id"] for j in client.get(f"/api/v1/datasets/{ds.id}/jobs", headers=annotator.headers).json()] == [job_id]


def test_job_routes_need_authentication(client, db):
    ds = make_dataset(db)
    assert client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "train"}).status_code == 401
    assert client.get(f"/api/v1/datasets/{ds.id}/jobs").status_code == 401
    assert client.get("/api/v1/jobs/1").status_code == 401
    assert client.post("/api/v1/jobs/1/cancel").status_code == 401


def test_missing_jobs_and_datasets_are_404(client, annotator, engineer):
    assert client.get("/api/v1/jobs/999", headers=annotator.headers).status_code == 404
    assert client.post("/api/v1/jobs/999/cancel", headers=engineer.headers).status_code == 404
    r = client.get("/api/v1/datasets/999/jobs", headers=annotator.headers)
    assert r.status_code == 404 and "dataset 999" in r.json()["detail"]


def test_list_is_newest_first_and_per_dataset(client, db, engineer):
    ds, other = make_dataset(db), make_dataset(db)
    ids = [
        client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "train", "params": {"seed": i}},
                    headers=engineer.headers).json()["id"]
        for i in range(3)
    ]
    client.post(f"/api/v1/datasets/{other.id}/jobs", json={"kind": "train"}, headers=engineer.headers)
    jobs = client.get(f"/api/v1/datasets/{ds.id}/jobs", headers=engineer.headers).json()
    assert [j["id"] for j in jobs] == ids[::-1]
    assert set(jobs[0]) == JOB_FIELDS
    limited = client.get(f"/api/v1/datasets/{ds.id}/jobs", params={"limit": 2}, headers=engineer.headers).json()
    assert [j["id"] for j in limited] == ids[:0:-1]

    client.post(f"/api/v1/jobs/{ids[1]}/cancel", headers=engineer.headers)
    cancelled = client.get(f"/api/v1/datasets/{ds.id}/jobs", params={"status": "cancelled"}, headers=engineer.headers)
    assert [j["id"] for j in cancelled.json()] == [ids[1]]


def test_cancel_a_queued_job_through_the_api(client, db, engine, engineer):
    ds = make_dataset(db)
    job_id = client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "t_echo"}, headers=engineer.headers).json()["id"]
    r = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=engineer.headers)
    assert r.status_code == 202
    body = r.json()
    assert (body["status"], body["cancel_requested"]) == ("cancelled", True) and body["finished_at"]
    assert f"cancelled by {engineer.user.username} before it started" in [line["message"] for line in body["logs"]]
    # Cancelling again changes nothing.
    again = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=engineer.headers)
    assert again.status_code == 202 and again.json()["finished_at"] == body["finished_at"]
    assert queue.claim(engine, "w", 30) is None


def test_cancel_a_running_job_flags_it(client, db, engine, engineer):
    ds = make_dataset(db)
    job_id = client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "t_echo"}, headers=engineer.headers).json()["id"]
    queue.claim(engine, "w", 30)
    r = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=engineer.headers)
    assert r.status_code == 202
    assert (r.json()["status"], r.json()["cancel_requested"]) == ("running", True)
    assert load_job(engine, job_id).cancel_requested is True


def test_a_finished_job_cannot_be_cancelled(client, db, engine, engineer, settings):
    ds = make_dataset(db)
    job_id = client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "t_echo", "params": {"k": "v"}},
                         headers=engineer.headers).json()["id"]
    Worker(settings, engine, "w").run_one()
    r = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=engineer.headers)
    assert r.status_code == 409 and "already succeeded" in r.json()["detail"]
    body = client.get(f"/api/v1/jobs/{job_id}", headers=engineer.headers).json()
    assert (body["status"], body["progress"], body["worker_id"]) == ("succeeded", 1.0, "w")
    assert body["result"] == {"echo": {"k": "v"}, "dataset_id": ds.id}


def test_the_api_shows_the_last_200_log_lines(client, db, engine, settings, annotator):
    job_id = service.enqueue(db, "t_chatty", {"n": 300}).id
    db.commit()
    Worker(settings, engine, "w").run_one()
    body = client.get(f"/api/v1/jobs/{job_id}", headers=annotator.headers).json()
    messages = [line["message"] for line in body["logs"]]
    assert len(messages) == 200
    assert messages[-1] == "succeeded" and messages[-2] == "line 299" and messages[0] == "line 101"
    assert {line["level"] for line in body["logs"]} == {"info"}


def test_bad_train_params_are_refused_at_enqueue_naming_the_field(client, db, engineer):
    from tests.builders import make_dataset

    ds = make_dataset(db, task="tabular")
    r = client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "train", "params": {"epochs": -3}},
                    headers=engineer.headers)
    assert r.status_code == 422
    assert r.json()["detail"].startswith("invalid training params: epochs: ")
    assert [e["field"] for e in r.json()["errors"]] == ["epochs"]
    ok = client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "train", "params": {"epochs": 2}},
                     headers=engineer.headers)
    assert ok.status_code == 202, ok.text
