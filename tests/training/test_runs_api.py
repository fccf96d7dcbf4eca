"""GET /api/v1/datasets/{id}/runs and GET /api/v1/runs/{id}."""

from datetime import timedelta

from app.evaluation.metrics import classification_metrics
from app.models import Run, utcnow
from tests.builders import make_dataset


def _runs(db, ds):
    valid = classification_metrics([0, 1, 1], [0, 1, 0], ["a", "b"])
    test = classification_metrics([0, 1], [0, 1], ["a", "b"])
    t0 = utcnow()
    old = Run(dataset_id=ds.id, status="succeeded", params={"epochs": 2}, label_version=1,
              metrics={"valid": valid, "test": test}, history=[{"model": "final", "epoch": 1, "train_loss": 0.5}],
              info={"lr": 0.01, "notices": []}, artifact="/data/artifacts/run-1/model.pt",
              created_at=t0 - timedelta(minutes=5), finished_at=t0 - timedelta(minutes=1))
    running = Run(dataset_id=ds.id, status="running", params={"epochs": 3}, label_version=2, history=[], info={},
                  created_at=t0)
    db.add_all([old, running])
    db.commit()
    return old, running


def test_runs_of_a_dataset_newest_first_with_summary_metrics(client, db, annotator):
    ds = make_dataset(db, classes=["a", "b"])
    other = make_dataset(db)
    old, running = _runs(db, ds)
    _runs(db, other)
    r = client.get(f"/api/v1/datasets/{ds.id}/runs", headers=annotator.headers)
    assert r.status_code == 200
    body = r.json()
    assert [x["id"] for x in body] == [running.id, old.id]
    assert body[0]["status"] == "running" and body[0]["finished_at"] is None
    assert body[0]["summary"] == {"valid_accuracy": None, "valid_macro_f1": None, "test_accuracy": None, "test_macro_f1": None}
    first = body[1]
    assert first["params"] == {"epochs": 2} and first["label_version"] == 1 and first["dataset_id"] == ds.id
    assert first["summary"]["valid_accuracy"] == 2 / 3
    assert first["summary"]["test_macro_f1"] == 1.0
    assert first["created_at"] and first["finished_at"]
    assert client.get(f"/api/v1/datasets/{ds.id}/runs?limit=1", headers=annotator.headers).json()[0]["id"] == running.id


def test_one_run_with_metrics_history_and_info(client, db, annotator):
    ds = make_dataset(db, classes=["a", "b"])
    old, _ = _runs(db, ds)
    r = client.get(f"/api/v1/runs/{old.id}", headers=annotator.headers)
    assert r.status_code == 200
    body = r.json()
    assert {"id", "dataset_id", "job_id", "status", "params", "label_version", "metrics", "history", "info",
            "created_at", "finished_at"} <= set(body)
    assert body["metrics"]["valid"]["per_class"]["b"]["recall"] == 0.5
    assert body["metrics"]["valid"]["confusion"] == {"labels": ["a", "b"], "matrix": [[1, 0], [1, 1]]}
    assert body["metrics"]["test"]["accuracy"] == 1.0
    assert body["history"] == [{"model": "final", "epoch": 1, "train_loss": 0.5}]
    assert body["info"]["lr"] == 0.01


def test_per_class_metrics_come_in_the_dataset_class_order(client, db, annotator):
    classes = ["zebra", "ox", "cat"]
    ds = make_dataset(db, classes=classes)
    m = classification_metrics([0, 1, 2], [0, 1, 1], classes)
    run = Run(dataset_id=ds.id, status="succeeded", params={}, label_version=0, metrics={"valid": m, "test": None},
              history=[], info={})
    db.add(run)
    db.commit()
    body = client.get(f"/api/v1/runs/{run.id}", headers=annotator.headers).json()
    assert list(body["metrics"]["valid"]["per_class"]) == classes
    assert body["metrics"]["valid"]["per_class"]["cat"]["recall"] == 0.0
    assert body["metrics"]["test"] is None


def test_a_run_without_metrics_has_null_splits(client, db, annotator):
    ds = make_dataset(db)
    _, running = _runs(db, ds)
    body = client.get(f"/api/v1/runs/{running.id}", headers=annotator.headers).json()
    assert body["metrics"] == {"valid": None, "test": None}
    assert body["history"] == [] and body["status"] == "running"


def test_missing_runs_and_datasets_are_404_and_anonymous_is_401(client, db, annotator):
    ds = make_dataset(db)
    assert client.get("/api/v1/runs/999999", headers=annotator.headers).status_code == 404
    assert client.get("/api/v1/datasets/999999/runs", headers=annotator.headers).status_code == 404
    assert client.get(f"/api/v1/datasets/{ds.id}/runs").status_code == 401
    assert client.get("/api/v1/runs/1").status_code == 401
