"""A search as the API and the pages see it: its trials, the best one, training with the best.

Optuna (and so the storage) is imported only when a search is read, never at app start.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.errors import Conflict, NotFound
from app.jobs import service as job_service
from app.jsonsafe import jsonable
from app.models import Job, JobStatus, User
from app.search.params import KIND, SearchParams

STATE_NAMES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def owner_job(session: Session, job_id: int) -> Job:
    """The search job that owns the study of `job_id` (itself, or the first job of its search); 404 otherwise."""
    job = job_service.get_job(session, job_id)
    if job.kind != KIND:
        raise NotFound(f"job {job_id} is a {job.kind} job, not a search")
    parent = (job.params or {}).get("parent_job")
    if parent:
        job = job_service.get_job(session, int(parent))
    return job


def _params(job: Job) -> SearchParams:
    return SearchParams.model_validate(job.params or {})


def _trial(t) -> dict[str, Any]:
    duration = None
    if t.datetime_start is not None and t.datetime_complete is not None:
        duration = round((t.datetime_complete - t.datetime_start).total_seconds(), 3)
    return {
        "number": t.number,
        "state": STATE_NAMES.get(t.state.name, t.state.name.lower()),
        "params": dict(t.params),
        "value": jsonable(t.value) if t.values else None,
        "intermediate_values": {str(k): jsonable(v) for k, v in sorted(t.intermediate_values.items())},
        "worker": t.user_attrs.get("worker"),
        "job_id": t.user_attrs.get("job_id"),
        "duration_s": duration,
        "started_at": _aware(t.datetime_start),
        "finished_at": _aware(t.datetime_complete),
        "retry_of": t.system_attrs.get("failed_trial"),
        "error": t.user_attrs.get("error"),
        "metrics": {k: t.user_attrs[k] for k in ("valid", "test") if k in t.user_attrs},
    }


def read_search(session: Session, settings: Settings, job_id: int) -> dict[str, Any]:
    """The search of job `job_id`: its jobs, progress, trials (oldest first) and the best trial."""
    job = owner_job(session, job_id)
    p = _params(job)
    jobs = list(session.scalars(select(Job).where(Job.id == job.id)))
    jobs += list(session.scalars(
        select(Job).where(Job.kind == KIND, Job.dataset_id == job.dataset_id, Job.id > job.id).order_by(Job.id)
    ))
    jobs = [j for j in jobs if j.id == job.id or (j.params or {}).get("parent_job") == job.id]
    trials: list[Any] = []
    space = None
    study = None
    from app.search.job import best_of, counts
    from app.search.storage import find_study_id, get_storage

    storage = get_storage(settings, readonly=True)
    study_id = find_study_id(storage, job.id, job.created_at)
    if study_id is not None:
        trials = storage.get_all_trials(study_id, deepcopy=False)
        space = storage.get_study_user_attrs(study_id).get("space")
        study = storage.get_study_name_from_id(study_id)
    c = counts(trials)
    best = best_of(trials, p.direction)
    running = [j for j in jobs if j.status in (JobStatus.queued, JobStatus.running)]
    return {
        "job_id": job.id,
        "dataset_id": job.dataset_id,
        "study": study,
        "status": job.status,
        "active": bool(running),
        "metric": p.metric,
        "direction": p.direction,
        "pruner": p.pruner,
        "n_trials": p.n_trials,
        "workers": p.workers,
        "timeout_s": p.timeout_s,
        "progress": min(1.0, c["finished"] / p.n_trials),
        "counts": c,
        "space": space,
        "base": p.base,
        "best": None if best is None else {
            "number": best.number,
            "value": best.value,
            "params": dict(best.params),
            "train_params": {**p.base, **best.params},
        },
        "trials": [_trial(t) for t in trials],
        "jobs": [{"id": j.id, "status": j.status, "worker_id": j.worker_id, "progress": j.progress} for j in jobs],
    }


def train_best(session: Session, settings: Settings, job_id: int, user: User, max_attempts: int | None = None) -> Job:
    """Queue a train job with the search's base params and its best trial's params (409 before any trial completed)."""
    job = owner_job(session, job_id)
    search = read_search(session, settings, job.id)
    if search["best"] is None:
        raise Conflict(f"search job {job.id} has no completed trial yet")
    return job_service.enqueue(
        session, "train", search["best"]["train_params"], dataset_id=job.dataset_id, user=user,
        max_attempts=max_attempts,
    )


def _aware(value: datetime | None) -> datetime | None:
    """Optuna's naive local-time timestamps as UTC with an offset, as the API's date-times are."""
    return value.astimezone(timezone.utc) if value is not None else None
