"""Jobs as the API and the pages see them: enqueue, read, list, cancel.

These functions add and flush on the caller's session; the caller commits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.deps import get_dataset, get_job
from app.errors import Conflict, Invalid
from app.jobs.registry import job_kind, known_kinds
from app.jobs.schemas import JobDetail, JobLogRead, JobRead
from app.models import Job, JobLog, JobStatus, User, utcnow

LOG_LINES = 200
TRAIN_KIND = "train"  # the one kind that trains a model on several devices (`devices`)
MAX_LIST = 500


def kinds(settings: Settings | None = None) -> list[str]:
    """Every job kind a worker can run, including those of Settings.extra_job_handlers."""
    return known_kinds(settings)


def required_devices(params: dict[str, Any] | None, kind: str = TRAIN_KIND) -> int:
    """The devices a worker must advertise to take a job: a train job's validated `devices`
    (an integer, or "all", which any worker can take: it uses what that worker has). Every
    other kind needs 1: search, seeds and prune train each model in one process (their
    recipes' `devices` must be 1), and no other kind trains data-parallel."""
    if kind != TRAIN_KIND:
        return 1
    value = (params or {}).get("devices", 1)
    if isinstance(value, str) and value.strip().lower() == "all":
        return 1
    try:
        return max(1, int(value))
    except (TypeError, ValueError):  # a kind whose params are not validated here
        return 1


def enqueue(
    session: Session,
    kind: str,
    params: dict[str, Any] | None = None,
    *,
    dataset_id: int | None = None,
    user: User | None = None,
    max_attempts: int | None = None,
    settings: Settings | None = None,
) -> Job:
    """Queue a job of a known kind for a dataset that exists (NotFound otherwise), its params
    validated by its kind's model against the dataset (Invalid naming each bad field)."""
    settings = settings or get_settings()
    dataset = get_dataset(session, dataset_id) if dataset_id is not None else None
    try:
        entry = job_kind(kind, settings)
    except KeyError:
        known = ", ".join(kinds(settings))
        raise Invalid(f"unknown job kind {kind!r}; known kinds: {known}",
                      errors=[{"field": "kind", "message": f"one of {known}"}]) from None
    if entry.needs_dataset and dataset is None:
        raise Invalid(f"a {kind} job needs a dataset")
    if entry.params is not None:
        # Refuse bad params now, naming the field, rather than failing later in the worker.
        context = {"session": session}
        if dataset is not None:
            context.update(dataset=dataset, task=dataset.task, classes=list(dataset.classes or []), dataset_id=dataset.id,
                           multilabel=bool(dataset.multilabel))
        entry.validate(params, **context)
    job = Job(
        kind=kind,
        params=dict(params or {}),
        dataset_id=dataset_id,
        status=JobStatus.queued,
        progress=0.0,
        attempts=0,
        max_attempts=max_attempts or settings.job_max_attempts,
        cancel_requested=False,
        created_by=user.id if user else None,
        devices=required_devices(params, kind),
    )
    session.add(job)
    session.flush()
    session.add(JobLog(job_id=job.id, level="info", message=f"queued by {user.username if user else 'the system'}"))
    session.flush()
    return job


def list_jobs(session: Session, dataset_id: int, status_: str | None = None, limit: int = 50) -> list[Job]:
    """A dataset's jobs, newest first (NotFound for an unknown dataset)."""
    get_dataset(session, dataset_id)
    query = select(Job).where(Job.dataset_id == dataset_id)
    if status_ is not None:
        query = query.where(Job.status == status_)
    return list(session.scalars(query.order_by(Job.id.desc()).limit(min(limit, MAX_LIST))))


def cancel_job(session: Session, job_id: int, user: User | None = None) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next batch.

    Cancelling a cancelled job changes nothing; a job that succeeded or failed is a Conflict.
    """
    job = get_job(session, job_id)
    if job.status == JobStatus.cancelled:
        return job
    who = user.username if user else "the system"
    now = utcnow()
    # Guarded updates, so a worker claiming the job at this moment cannot slip between read and write.
    cancelled = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued)
        .values(status=JobStatus.cancelled, cancel_requested=True, finished_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if cancelled:
        session.add(JobLog(job_id=job_id, level="warning", message=f"cancelled by {who} before it started"))
    else:
        flagged = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.running)
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        ).rowcount
        if flagged:
            session.add(JobLog(job_id=job_id, level="warning", message=f"cancel requested by {who}"))
    session.flush()
    session.refresh(job)
    if job.status in (JobStatus.succeeded, JobStatus.failed):
        raise Conflict(f"job {job_id} already {job.status}; nothing to cancel")
    return job


def job_logs(session: Session, job_id: int, limit: int = LOG_LINES) -> list[JobLogRead]:
    """The last `limit` lines of a job's log, oldest first."""
    rows = session.scalars(select(JobLog).where(JobLog.job_id == job_id).order_by(JobLog.id.desc()).limit(limit)).all()
    return [JobLogRead(at=r.created_at, level=r.level, message=r.message) for r in reversed(rows)]


def to_read(job: Job) -> JobRead:
    return JobRead.model_validate(job)


def to_detail(session: Session, job: Job) -> JobDetail:
    return JobDetail(**JobRead.model_validate(job).model_dump(), logs=job_logs(session, job.id))
