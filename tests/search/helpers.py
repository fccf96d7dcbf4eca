"""Shared pieces of the search tests: tiny searches on the tabular factory dataset."""

from __future__ import annotations

from sqlalchemy import text

from app.jobs import service
from app.jobs.context import LocalJobContext
from app.jobs.registry import job_kind

# Four trials of a tiny MLP; the lr range reaches down to rates that leave the model where it
# started, so the median pruner (active after one finished trial) must prune some of them.
PRUNING_SEARCH = {
    "n_trials": 4, "metric": "valid_loss", "pruner": "median", "startup_trials": 1, "seed": 0,
    "space": {"lr": {"low": 1e-6, "high": 0.1, "log": True}},
    "base": {"epochs": 3, "batch_size": 16},
}
QUICK_SEARCH = {
    "n_trials": 2, "pruner": "none", "seed": 1,
    "space": {"lr": {"low": 0.01, "high": 0.1, "log": True}, "batch_size": {"choices": [16, 32]}},
    "base": {"epochs": 1},
}


def enqueue_search(db, dataset_id: int, params: dict) -> int:
    job = service.enqueue(db, "search", params, dataset_id=dataset_id, max_attempts=3)
    db.commit()
    return job.id


def local_ctx(engine, settings, job_id: int, dataset_id: int, params: dict) -> LocalJobContext:
    return LocalJobContext(engine=engine, settings=settings, params=params, dataset_id=dataset_id, job_id=job_id)


def search_run(ctx):
    """The SearchRun of a search job's context, set up as the worker sets it up."""
    from app.search.job import SearchRun

    return SearchRun(ctx, *job_kind("search", ctx.settings).arguments(ctx))


def optuna_trials(db, job_id: int) -> list:
    """The study's trials read straight from Optuna's tables in Curate's database."""
    return db.execute(
        text(
            "SELECT t.trial_id, t.number, t.state FROM trials t JOIN studies s ON s.study_id = t.study_id "
            "WHERE s.study_name = :name ORDER BY t.number"
        ),
        {"name": f"curate-search-{job_id}"},
    ).all()


def trial_user_attrs(db, trial_id: int) -> dict:
    import json

    rows = db.execute(
        text("SELECT key, value_json FROM trial_user_attributes WHERE trial_id = :t"), {"t": trial_id}
    ).all()
    return {k: json.loads(v) for k, v in rows}
