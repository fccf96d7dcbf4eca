"""A search run in-process: trials in Optuna's tables on Curate's database, pruning, the best
trial, the REST view of the study, training with the best, cancel and recovery of a lost trial."""

from __future__ import annotations

import math
from datetime import datetime

import optuna
import pytest
from sqlalchemy import select

from app.jobs.context import JobCancelled
from app.models import Job
from app.search import storage as st
from app.jobs.registry import run_job
from tests.builders import make_user
from tests.search.helpers import (
    PRUNING_SEARCH,
    QUICK_SEARCH,
    enqueue_search,
    local_ctx,
    search_run,
    optuna_trials,
    trial_user_attrs,
)
from tests.training.factories import tabular_dataset


def test_a_search_stores_its_trials_on_curate_s_database_prunes_and_finds_the_best(client, engine, settings, db):
    ds, _ = tabular_dataset(db)
    job_id = enqueue_search(db, ds.id, PRUNING_SEARCH)
    ctx = local_ctx(engine, settings, job_id, ds.id, PRUNING_SEARCH)
    result = run_job(ctx, "search")

    rows = optuna_trials(db, job_id)
    assert [r.number for r in rows] == [0, 1, 2, 3]
    states = [r.state for r in rows]
    assert "PRUNED" in states and "FAIL" not in states and "WAITING" not in states, states
    counts = result["counts"]
    assert counts["complete"] + counts["pruned"] == 4 and counts["pruned"] == states.count("PRUNED")
    assert counts["finished"] == 4 and counts["failed"] == counts["running"] == counts["waiting"] == 0
    for r in rows:
        assert trial_user_attrs(db, r.trial_id).items() >= {"worker": f"local-job-{job_id}", "job_id": job_id}.items()
    assert ctx.fractions[-1] == 1.0 and ctx.messages[-1].startswith("4/4 trials")

    storage = st.get_storage(settings)
    study = optuna.load_study(study_name=f"curate-search-{job_id}", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    best = min(complete, key=lambda t: t.value)
    assert result["best"]["number"] == best.number and math.isclose(result["best"]["value"], best.value)
    assert result["best"]["train_params"] == {"epochs": 3, "batch_size": 16, "lr": best.params["lr"]}
    # A pruned trial stopped before its last epoch; a complete one reported every epoch.
    assert all(len(t.intermediate_values) < 3 for t in pruned)
    assert all(sorted(t.intermediate_values) == [1, 2, 3] for t in complete)
    # The pruned lr is far below the best one: it barely moved the loss.
    assert all(t.params["lr"] < best.params["lr"] for t in pruned)

    engineer, annotator = make_user(db, "engineer"), make_user(db, "annotator")
    r = client.get(f"/api/v1/jobs/{job_id}/search", headers=engineer.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["study"], body["metric"], body["direction"], body["n_trials"]) == (
        f"curate-search-{job_id}", "valid_loss", "minimize", 4)
    assert body["progress"] == 1.0 and body["counts"] == counts
    assert body["best"]["number"] == best.number
    listed = {t["number"]: t for t in body["trials"]}
    assert sorted(listed) == [0, 1, 2, 3]
    for t in pruned:
        item = listed[t.number]
        # Optuna keeps a pruned trial's last reported value as its value.
        assert item["state"] == "pruned" and item["value"] == t.intermediate_values[max(t.intermediate_values)]
        assert item["intermediate_values"] == {str(k): v for k, v in t.intermediate_values.items()}
    top = listed[best.number]
    assert top["state"] == "complete" and top["params"] == best.params and top["value"] == best.value
    assert top["worker"] == f"local-job-{job_id}" and top["job_id"] == job_id and top["duration_s"] > 0
    assert set(top["metrics"]["valid"]) == {"accuracy", "macro_f1"}
    # Date-times carry their offset, as OpenAPI's date-time format says (Optuna's are naive).
    assert datetime.fromisoformat(top["started_at"]).utcoffset() is not None
    assert datetime.fromisoformat(top["finished_at"]).utcoffset() is not None
    assert client.get(f"/api/v1/jobs/{job_id}/search", headers=annotator.headers).status_code == 403

    # Train with the best: a train job with the base and the best trial's params.
    assert client.post(f"/api/v1/jobs/{job_id}/search/train-best", headers=annotator.headers).status_code == 403
    r = client.post(f"/api/v1/jobs/{job_id}/search/train-best", headers=engineer.headers)
    assert r.status_code == 202, r.text
    train = db.get(Job, r.json()["id"])
    assert (train.kind, train.status, train.dataset_id) == ("train", "queued", ds.id)
    assert train.params == {"epochs": 3, "batch_size": 16, "lr": best.params["lr"]}
    assert train.created_by == engineer.user.id


def test_train_best_before_any_complete_trial_is_409_and_other_jobs_are_404(client, db):
    ds, _ = tabular_dataset(db)
    engineer = make_user(db, "engineer")
    job_id = enqueue_search(db, ds.id, QUICK_SEARCH)
    r = client.get(f"/api/v1/jobs/{job_id}/search", headers=engineer.headers)
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["trials"], r.json()["best"], r.json()["study"]) == ("queued", [], None, None)
    assert client.post(f"/api/v1/jobs/{job_id}/search/train-best", headers=engineer.headers).status_code == 409
    train = client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "train", "params": {"epochs": 1}},
                        headers=engineer.headers).json()
    assert client.get(f"/api/v1/jobs/{train['id']}/search", headers=engineer.headers).status_code == 404
    assert client.get("/api/v1/jobs/999999/search", headers=engineer.headers).status_code == 404


class CancelInFirstTrial:
    """Requests cancel as soon as the first trial starts."""

    def __init__(self, ctx):
        self.ctx = ctx
        original = ctx.log

        def log(message, level="info"):
            original(message, level)
            if message.startswith("trial 0:"):
                ctx.cancel_event.set()

        ctx.log = log


def test_cancel_stops_the_running_trial_and_starts_no_other(engine, settings, db):
    ds, _ = tabular_dataset(db)
    params = {**QUICK_SEARCH, "n_trials": 3, "base": {"epochs": 3}}
    job_id = enqueue_search(db, ds.id, params)
    ctx = local_ctx(engine, settings, job_id, ds.id, params)
    CancelInFirstTrial(ctx)
    with pytest.raises(JobCancelled):
        run_job(ctx, "search")
    rows = optuna_trials(db, job_id)
    # The interrupted trial failed and waits again with its params; the others never started.
    assert [r.state for r in rows] == ["FAIL", "WAITING", "WAITING", "WAITING"]
    assert trial_user_attrs(db, rows[0].trial_id)["interrupted"] is True


def test_a_trial_left_running_by_an_earlier_attempt_is_run_again(engine, settings, db):
    ds, _ = tabular_dataset(db)
    job_id = enqueue_search(db, ds.id, QUICK_SEARCH)
    ctx = local_ctx(engine, settings, job_id, ds.id, QUICK_SEARCH)
    # The first attempt took trial 0, then its worker died.
    run = search_run(ctx)
    study = run.open_study()
    lost = run.take_waiting(study)
    study._storage.set_trial_user_attr(lost, "job_id", job_id)

    result = run_job(local_ctx(engine, settings, job_id, ds.id, QUICK_SEARCH), "search")
    rows = optuna_trials(db, job_id)
    assert [r.state for r in rows] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert result["counts"].items() >= {"finished": 2, "complete": 2, "failed": 1, "running": 0, "waiting": 0}.items()
    retried = optuna.load_study(study_name=f"curate-search-{job_id}", storage=st.get_storage(settings)).trials[2]
    assert retried.system_attrs["failed_trial"] == 0


def test_a_study_left_by_a_job_of_the_same_id_is_not_reused(engine, settings, db):
    ds, _ = tabular_dataset(db)
    job_id = enqueue_search(db, ds.id, QUICK_SEARCH)
    storage = st.get_storage(settings)
    try:  # an earlier test's study of the same id: exactly what the job must not reuse
        optuna.delete_study(study_name=f"curate-search-{job_id}", storage=storage)
    except KeyError:
        pass
    stale = optuna.create_study(study_name=f"curate-search-{job_id}", storage=storage)
    stale.set_user_attr("job_token", "another job")
    stale.enqueue_trial({"lr": 0.5})
    run = search_run(local_ctx(engine, settings, job_id, ds.id, QUICK_SEARCH))
    study = run.open_study()
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.WAITING] * 2
    assert all(t.system_attrs["fixed_params"] == {} for t in study.trials)
    assert db.scalar(select(Job.id).where(Job.id == job_id)) == job_id

