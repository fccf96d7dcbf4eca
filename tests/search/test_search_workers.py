"""Two worker processes (`python -m app.cli worker`) take the trials of one study."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app.db import session_scope
from app.models import Job
from tests.jobs.conftest import load_job, wait_for
from tests.search.helpers import enqueue_search, optuna_trials, trial_user_attrs
from tests.training.factories import tabular_dataset

pytestmark = pytest.mark.slow

WARM_UP = {"n_trials": 1, "pruner": "none", "space": {"lr": {"low": 0.01, "high": 0.1}}, "base": {"epochs": 1}}
SHARED = {
    "n_trials": 4, "workers": 2, "pruner": "none", "seed": 3,
    "space": {"lr": {"low": 0.005, "high": 0.1, "log": True}, "batch_size": {"choices": [8, 16]}},
    "base": {"epochs": 2},
}


def _done(engine, ids):
    jobs = [load_job(engine, i) for i in ids]
    return jobs if all(j.status in ("succeeded", "failed", "cancelled") for j in jobs) else None


def test_two_workers_share_the_trials_of_one_study(db, engine, worker_process):
    ds, _ = tabular_dataset(db)
    a, b = worker_process("a"), worker_process("b")
    # One warm-up search each, so that both workers have loaded torch before the shared search:
    # the second would otherwise still be importing while the first ran every trial.
    warm = [enqueue_search(db, ds.id, WARM_UP) for _ in range(2)]
    jobs = wait_for(lambda: _done(engine, warm), "the warm-up searches")
    assert {j.worker_id for j in jobs} == {"a", "b"} and all(j.status == "succeeded" for j in jobs), (
        [(j.worker_id, j.status, j.error) for j in jobs], a.output(), b.output())

    first = enqueue_search(db, ds.id, SHARED)
    wait_for(lambda: load_job(engine, first).status in ("succeeded", "failed"), "the search to finish")
    with session_scope(engine, readonly=True) as session:
        ids = list(session.scalars(select(Job.id).where(Job.kind == "search", Job.id > first)))
    assert len(ids) == 1, "the first job queues workers - 1 more"
    jobs = wait_for(lambda: _done(engine, [first, *ids]), "every job of the search")
    assert all(j.status == "succeeded" for j in jobs), ([(j.id, j.status, j.error) for j in jobs], a.output(), b.output())
    assert load_job(engine, ids[0]).params == {**SHARED, "parent_job": first}

    rows = optuna_trials(db, first)
    assert [r.state for r in rows] == ["COMPLETE"] * 4, "exactly n_trials, each run once"
    attrs = [trial_user_attrs(db, r.trial_id) for r in rows]
    assert {x["worker"] for x in attrs} == {"a", "b"}, attrs
    assert {x["job_id"] for x in attrs} == {first, ids[0]}
    for job in jobs:
        result = job.result
        assert result["study"] == f"curate-search-{first}" and result["counts"]["finished"] == 4
        assert result["best"] == jobs[0].result["best"] and result["jobs"] == [first, ids[0]]
    assert sum(j.result["trials_run_here"] for j in jobs) == 4
    assert json.loads(json.dumps(jobs[0].result))["best"]["train_params"]["epochs"] == 2
