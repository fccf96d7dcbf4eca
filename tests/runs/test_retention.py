"""Retention: a dataset keeps the per-sample predictions of its latest CURATE_KEEP_RUNS
succeeded runs and of pinned runs; older runs keep their row and lose their predictions,
and nothing that reads predictions by run reads a dropped one."""

from __future__ import annotations

from sqlalchemy import func, select

from app.jobs.context import LocalJobContext
from app.jobs.registry import run_job
from app.models import Prediction, Run, utcnow
from app.runs.retention import apply_retention, runs_to_drop
from tests.builders import add_samples, make_dataset
from tests.training.factories import tabular_dataset


def _scored_runs(db, statuses: list[str]):
    """A dataset of 4 samples and one run per status (oldest first), each with a prediction per sample."""
    ds = make_dataset(db, classes=["a", "b"])
    samples = add_samples(db, ds, [{"label": "a"}, {"label": "b"}, {"label": "a"}, {"label": "b"}])
    runs = []
    for status in statuses:
        run = Run(dataset_id=ds.id, status=status, params={}, label_version=0, history=[],
                  info={"covers_through": samples[-1].id}, metrics={"valid": {"accuracy": 0.5}}, finished_at=utcnow())
        db.add(run)
        db.flush()
        for s in samples:
            db.add(Prediction(run_id=run.id, sample_id=s.id, given_label=s.label, label="a", probs={"a": 1.0},
                              loss=0.1, confusion_margin=0.5, confusion_a="a", confusion_b="b", entropy=0.1))
        runs.append(run)
    db.commit()
    return ds, runs


def _counts(db, runs) -> list[int]:
    return [db.scalar(select(func.count()).select_from(Prediction).where(Prediction.run_id == r.id)) for r in runs]


def test_the_latest_runs_and_pinned_ones_keep_their_predictions(engine, db):
    ds, runs = _scored_runs(db, ["succeeded", "succeeded", "failed", "succeeded", "succeeded", "succeeded"])
    runs[1].pinned = True
    db.commit()
    assert runs_to_drop(engine, ds.id, keep=2) == [runs[3].id, runs[0].id]
    assert apply_retention(engine, ds.id, keep=2) == [runs[3].id, runs[0].id]
    # Kept: the two latest succeeded, the pinned one, and the failed one (not a succeeded run).
    assert _counts(db, runs) == [0, 4, 4, 0, 4, 4]
    db.expire_all()
    assert runs[0].predictions_dropped_at is not None and runs[0].metrics == {"valid": {"accuracy": 0.5}}
    assert [r.predictions_dropped_at is None for r in runs] == [False, True, True, False, True, True]
    assert apply_retention(engine, ds.id, keep=2) == []  # nothing more to do
    assert apply_retention(engine, ds.id, keep=1) == [runs[4].id]
    assert _counts(db, runs) == [0, 4, 4, 0, 0, 4]


def test_drops_in_batches_and_leaves_other_datasets_alone(engine, db, monkeypatch):
    from app.runs import retention

    monkeypatch.setattr(retention, "DROP_BATCH", 3)
    ds, runs = _scored_runs(db, ["succeeded", "succeeded"])
    other, other_runs = _scored_runs(db, ["succeeded", "succeeded"])
    assert apply_retention(engine, ds.id, keep=1) == [runs[0].id]
    assert _counts(db, runs) == [0, 4]
    assert _counts(db, other_runs) == [4, 4]


def test_a_dropped_run_is_refused_by_name_where_its_predictions_would_be_read(client, engine, db, engineer):
    ds, runs = _scored_runs(db, ["succeeded", "succeeded"])
    apply_retention(engine, ds.id, keep=1)
    url = f"/api/v1/datasets/{ds.id}/samples"
    r = client.get(url, params={"run": runs[0].id, "order": "loss"}, headers=engineer.headers)
    assert r.status_code == 409 and f"run {runs[0].id}'s per-sample predictions were dropped" in r.json()["detail"]
    assert client.get(url, params={"run": runs[1].id, "order": "loss"}, headers=engineer.headers).status_code == 200
    # Its row stays readable, saying so.
    body = client.get(f"/api/v1/runs/{runs[0].id}", headers=engineer.headers).json()
    assert body["predictions_dropped_at"] and body["metrics"]["valid"]["accuracy"] == 0.5 and body["pinned"] is False
    sample_id = db.scalar(select(Prediction.sample_id).where(Prediction.run_id == runs[1].id).limit(1))
    r = client.post(f"/api/v1/datasets/{ds.id}/samples/bulk", headers=engineer.headers,
                    json={"items": [{"id": sample_id, "version": 1}], "accept_predicted": True, "run": runs[0].id})
    assert r.status_code == 409 and "dropped" in r.json()["detail"], r.text


def test_pinning_is_for_engineers_and_a_dropped_run_cannot_be_pinned_back(client, engine, db, engineer, annotator):
    ds, runs = _scored_runs(db, ["succeeded", "succeeded", "succeeded"])
    url = f"/api/v1/runs/{runs[0].id}"
    assert client.patch(url, json={"pinned": True}, headers=annotator.headers).status_code == 403
    assert client.patch(url, json={"pinned": "maybe"}, headers=engineer.headers).status_code == 422
    assert client.patch(url, json={"pinned": True, "status": "failed"}, headers=engineer.headers).status_code == 422
    r = client.patch(url, json={"pinned": True}, headers=engineer.headers)
    assert r.status_code == 200 and r.json()["pinned"] is True
    assert apply_retention(engine, ds.id, keep=1) == [runs[1].id]
    assert _counts(db, runs) == [4, 0, 4]
    r = client.patch(f"/api/v1/runs/{runs[1].id}", json={"pinned": True}, headers=engineer.headers)
    assert r.status_code == 409 and "dropped" in r.json()["detail"]
    # Unpinned, the run goes at the next pass.
    assert client.patch(url, json={"pinned": False}, headers=engineer.headers).json()["pinned"] is False
    assert apply_retention(engine, ds.id, keep=1) == [runs[0].id]
    assert client.patch("/api/v1/runs/999999", json={"pinned": True}, headers=engineer.headers).status_code == 404


def test_a_train_job_that_succeeds_applies_the_rule(engine, settings, db):
    ds, _ = tabular_dataset(db, counts={"train": 24, "valid": 8})
    settings = settings.model_copy(update={"keep_runs": 1})
    ids = []
    for _ in range(2):
        ctx = LocalJobContext(engine=engine, settings=settings, params={"epochs": 1, "scoring": "in_sample"},
                              dataset_id=ds.id)
        ids.append(run_job(ctx, "train")["run_id"])
    first, second = db.get(Run, ids[0]), db.get(Run, ids[1])
    db.refresh(first)
    db.refresh(second)
    assert first.predictions_dropped_at is not None and first.metrics["valid"]["accuracy"] is not None
    assert second.predictions_dropped_at is None
    assert _counts(db, [first, second]) == [0, 32]
