"""Jobs as the API and the pages see them: enqueue, read, list, cancel.

These functions add and flush on the caller's session; the caller commits.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.config import get_settings
from app.deps import get_dataset
from app.jobs import queue
from app.jobs.registry import known_kinds
from app.jobs.schemas import JobDetail, JobLogRead, JobRead
from app.models import Job, JobLog, User, utcnow

LOG_LINES = 200
MAX_LIST = 500


def kinds() -> list[str]:
    """Every job kind a worker can run, including those CURATE_EXTRA_JOB_HANDLERS adds."""
    extra = [
        item.split("=", 1)[0].strip()
        for item in os.environ.get("CURATE_EXTRA_JOB_HANDLERS", "").split(",")
        if "=" in item
    ]
    return sorted(set(known_kinds()) | set(extra))


def enqueue(
    session: Session,
    kind: str,
    params: dict[str, Any] | None = None,
    *,
    dataset_id: int | None = None,
    user: User | None = None,
    max_attempts: int | None = None,
) -> Job:
    """Queue a job of a known kind (422 otherwise) for a dataset that exists (404 otherwise)."""
    dataset = get_dataset(session, dataset_id) if dataset_id is not None else None
    known = kinds()
    if kind not in known:
        raise HTTPException(
            422, f"unknown job kind {kind!r}; known kinds: {', '.join(known)}"
        )
    if kind == "train" and dataset is not None:
        # Refuse bad params now, naming the field, rather than failing later in the worker.
        from app.training.recipe import RecipeError, resolve_recipe

        try:
            resolve_recipe(params, dataset.task)
        except RecipeError as exc:
            raise HTTPException(422, str(exc)) from None
    if kind == "search":
        from app.search.params import check_search_params

        check_search_params(session, params, dataset)
    if kind in ("seeds", "prune") and dataset is not None:
        from app.advisor.prune import check_prune_params
        from app.health.params import ParamsError, check_seeds_params

        try:
            if kind == "seeds":
                check_seeds_params(params, dataset.task)
            else:
                check_prune_params(params, dataset.classes or [], dataset.task)
        except ParamsError as exc:
            raise HTTPException(422, str(exc)) from None
    job = Job(
        kind=kind,
        params=dict(params or {}),
        dataset_id=dataset_id,
        status=queue.QUEUED,
        progress=0.0,
        attempts=0,
        max_attempts=max_attempts or get_settings().job_max_attempts,
        cancel_requested=False,
        created_by=user.id if user else None,
    )
    session.add(job)
    session.flush()
    session.add(JobLog(job_id=job.id, level="info", message=f"queued by {user.username if user else 'the system'}"))
    session.flush()
    return job


def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} not found")
    return job


def list_jobs(session: Session, dataset_id: int, status_: str | None = None, limit: int = 50) -> list[Job]:
    """A dataset's jobs, newest first (404 for an unknown dataset)."""
    get_dataset(session, dataset_id)
    query = select(Job).where(Job.dataset_id == dataset_id)
    if status_ is not None:
        query = query.where(Job.status == status_)
    return list(session.scalars(query.order_by(Job.id.desc()).limit(min(limit, MAX_LIST))))


def cancel_job(session: Session, job_id: int, user: User | None = None) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next batch.

    Cancelling a cancelled job changes nothing; a job that succeeded or failed is a 409.
    """
    job = get_job(session, job_id)
    if job.status == queue.CANCELLED:
        return job
    who = user.username if user else "the system"
    now = utcnow()
    # Guarded updates, so a worker claiming the job at this moment cannot slip between read and write.
    cancelled = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == queue.QUEUED)
        .values(status=queue.CANCELLED, cancel_requested=True, finished_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if cancelled:
        session.add(JobLog(job_id=job_id, level="warning", message=f"cancelled by {who} before it started"))
    else:
        flagged = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == queue.RUNNING)
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        ).rowcount
        if flagged:
            session.add(JobLog(job_id=job_id, level="warning", message=f"cancel requested by {who}"))
    session.flush()
    session.refresh(job)
    if job.status in (queue.SUCCEEDED, queue.FAILED):
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} already {job.status}; nothing to cancel")
    return job


def job_logs(session: Session, job_id: int, limit: int = LOG_LINES) -> list[JobLogRead]:
    """The last `limit` lines of a job's log, oldest first."""
    rows = session.scalars(select(JobLog).where(JobLog.job_id == job_id).order_by(JobLog.id.desc()).limit(limit)).all()
    return [JobLogRead(at=r.created_at, level=r.level, message=r.message) for r in reversed(rows)]


def to_read(job: Job) -> JobRead:
    return JobRead.model_validate(job)


def to_detail(session: Session, job: Job) -> JobDetail:
    return JobDetail(**JobRead.model_validate(job).model_dump(), logs=job_logs(session, job.id))
