"""The jobs table as a queue: claim, heartbeat, settle.

Every function opens one short transaction of its own on the engine it is given, so no
transaction stays open while a handler runs. A worker owns a job while the row's
(worker_id, attempts) pair is the one its claim wrote and the status is still running;
every write a worker makes is guarded by that, so a worker whose lease expired and whose
job was claimed again by another worker changes nothing any more.

Claiming is one UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING statement. On
Postgres the inner SELECT takes the row FOR UPDATE SKIP LOCKED, so concurrent workers
never wait for nor take the same row; on SQLite the FOR UPDATE makes app.db take the
database's write lock before that read, so claims are serialised there.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, and_, false, insert, or_, select, true, update
from sqlalchemy.orm import Session, aliased

from app.db import session_scope
from app.models import Job, JobLog, JobStatus, utcnow


class Outcome(enum.StrEnum):
    """How a handler's run ended, as the worker saw it; settle() turns it into a JobStatus."""

    succeeded = "succeeded"
    cancelled = "cancelled"  # the handler stopped on a cancel request
    error = "error"  # the handler raised; retried while attempts remain
    fatal = "fatal"  # retrying cannot help (unknown kind, handler not importable)
    shutdown = "shutdown"  # the worker is stopping: the job goes back to the queue


UNSET: Any = object()


@dataclass(frozen=True)
class Claim:
    """A job as a worker claimed it; (worker_id, attempt) is the worker's fencing token."""

    job_id: int
    kind: str
    params: dict[str, Any]
    dataset_id: int | None
    attempt: int
    max_attempts: int
    worker_id: str


def _claimable(now, job=Job):
    # A running job whose lease expired lost its worker; it is taken again while attempts remain.
    return or_(
        job.status == JobStatus.queued,
        and_(
            job.status == JobStatus.running,
            job.lease_expires_at < now,
            job.attempts < job.max_attempts,
            job.cancel_requested == false(),
        ),
    )


def _lost_for_good(now):
    """Running jobs whose worker was lost and that must not run again."""
    return and_(
        Job.status == JobStatus.running,
        Job.lease_expires_at < now,
        or_(Job.attempts >= Job.max_attempts, Job.cancel_requested == true()),
    )


def _owned(claim: Claim):
    return and_(
        Job.id == claim.job_id,
        Job.worker_id == claim.worker_id,
        Job.attempts == claim.attempt,
        Job.status == JobStatus.running,
    )


def _log_rows(job_id: int, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"job_id": job_id, "level": line["level"], "message": line["message"], "created_at": line["created_at"]}
        for line in lines
    ]


def log_line(message: str, level: str = "info") -> dict[str, Any]:
    """A log line to pass to heartbeat() or settle(), stamped now."""
    return {"level": level[:10], "message": message, "created_at": utcnow()}


def _insert_logs(session: Session, job_id: int, lines: list[dict[str, Any]]) -> None:
    if lines:
        session.execute(insert(JobLog), _log_rows(job_id, lines))


def reap(session: Session) -> list[int]:
    """Finish the running jobs whose lease expired for good: failed (attempts used up) or cancelled."""
    now = utcnow()
    query = select(Job.id, Job.worker_id, Job.attempts, Job.max_attempts, Job.cancel_requested).where(
        _lost_for_good(now)
    ).order_by(Job.id).with_for_update(skip_locked=True)
    done = []
    for row in session.execute(query).all():
        if row.cancel_requested:
            values = {"status": JobStatus.cancelled}
            line = log_line(f"cancelled; its worker {row.worker_id} was lost before it could stop", "warning")
        else:
            reason = (
                f"gave up after {row.attempts} of {row.max_attempts} attempts: the worker was lost "
                f"(its lease expired); last worker {row.worker_id}"
            )
            values = {"status": JobStatus.failed, "error": reason}
            line = log_line(reason, "error")
        changed = session.execute(
            update(Job)
            .where(Job.id == row.id, Job.status == JobStatus.running, Job.lease_expires_at < now)
            .values(**values, finished_at=now, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed:
            _insert_logs(session, row.id, [line])
            done.append(row.id)
    return done


def claim(engine: Engine, worker_id: str, lease_seconds: float, devices: int = 1) -> Claim | None:
    """Claim the oldest claimable job for worker_id that needs at most `devices` (what the worker
    advertises), or None when there is nothing to do."""
    # A read first: an idle worker polling must not take SQLite's write lock every time.
    with session_scope(engine, readonly=True) as session:
        now = utcnow()
        waiting = session.scalar(
            select(Job.id).where(or_(and_(_claimable(now), Job.devices <= devices), _lost_for_good(now))).limit(1)
        )
    if waiting is None:
        return None
    with session_scope(engine) as session:
        reap(session)
        now = utcnow()
        candidate = aliased(Job, name="candidate")
        pick = (
            select(candidate.id)
            .where(_claimable(now, candidate), candidate.devices <= devices)
            .order_by(candidate.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        row = session.execute(
            update(Job)
            .where(Job.id == pick.scalar_subquery())
            .values(
                status=JobStatus.running,
                attempts=Job.attempts + 1,
                worker_id=worker_id,
                started_at=now,
                finished_at=None,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                progress=0.0,
                message=None,
            )
            .returning(Job.id, Job.kind, Job.params, Job.dataset_id, Job.attempts, Job.max_attempts)
            .execution_options(synchronize_session=False)
        ).first()
        if row is None:
            return None
        _insert_logs(
            session, row.id, [log_line(f"attempt {row.attempts} of {row.max_attempts} on worker {worker_id}")]
        )
        return Claim(row.id, row.kind, dict(row.params or {}), row.dataset_id, row.attempts, row.max_attempts, worker_id)


def too_big(engine: Engine, devices: int) -> list[tuple[int, int]]:
    """(job id, devices) of the queued jobs that need more devices than `devices`."""
    with session_scope(engine, readonly=True) as session:
        rows = session.execute(
            select(Job.id, Job.devices).where(Job.status == JobStatus.queued, Job.devices > devices).order_by(Job.id)
        ).all()
    return [(row.id, row.devices) for row in rows]


def note(engine: Engine, job_id: int, message: str, level: str = "warning") -> None:
    """Add a line to a job's log (a queued job's: why it waits)."""
    with session_scope(engine) as session:
        _insert_logs(session, job_id, [log_line(message, level)])


def heartbeat(
    engine: Engine,
    claim: Claim,
    lease_seconds: float,
    *,
    progress: float | None = None,
    message: str | None = UNSET,
    logs: list[dict[str, Any]] | None = None,
) -> bool | None:
    """Renew the lease and write pending progress and log lines.

    Returns the job's cancel_requested flag, or None when the job is no longer this worker's.
    """
    now = utcnow()
    values: dict[str, Any] = {"lease_expires_at": now + timedelta(seconds=lease_seconds)}
    if progress is not None:
        values["progress"] = progress
    if message is not UNSET:
        values["message"] = message
    with session_scope(engine) as session:
        row = session.execute(
            update(Job)
            .where(_owned(claim))
            .values(**values)
            .returning(Job.cancel_requested)
            .execution_options(synchronize_session=False)
        ).first()
        if row is None:
            return None
        _insert_logs(session, claim.job_id, logs or [])
        return bool(row.cancel_requested)


def cancel_flag(engine: Engine, claim: Claim) -> bool | None:
    """The job's cancel_requested flag, read without a write lock; None when it is no longer ours."""
    with session_scope(engine, readonly=True) as session:
        flag = session.scalar(select(Job.cancel_requested).where(_owned(claim)))
    return None if flag is None else bool(flag)


def set_run(engine: Engine, claim: Claim, run_id: int) -> bool:
    """Record the run the job created; False when the job is no longer ours."""
    with session_scope(engine) as session:
        return bool(
            session.execute(
                update(Job)
                .where(_owned(claim))
                .values(run_id=run_id)
                .execution_options(synchronize_session=False)
            ).rowcount
        )


def settle(
    engine: Engine,
    claim: Claim,
    outcome: Outcome,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    progress: float | None = None,
    message: str | None = UNSET,
    logs: list[dict[str, Any]] | None = None,
) -> str | None:
    """Write the end of one attempt and return the job's new status (None: no longer ours).

    A cancel request wins over errors and shutdowns; an error requeues the job while attempts
    remain; a shutdown requeues it without counting the attempt.
    """
    with session_scope(engine) as session:
        query = select(Job.cancel_requested, Job.attempts, Job.max_attempts).where(_owned(claim)).with_for_update()
        row = session.execute(query).first()
        if row is None:
            return None
        now = utcnow()
        lines = list(logs or [])
        values: dict[str, Any] = {"lease_expires_at": None}
        if progress is not None:
            values["progress"] = progress
        if message is not UNSET:
            values["message"] = message
        attempt = f"attempt {row.attempts} of {row.max_attempts}"
        if outcome == Outcome.succeeded:
            values |= {"status": JobStatus.succeeded, "progress": 1.0, "result": result, "error": None, "finished_at": now}
            lines.append(log_line(JobStatus.succeeded))
        elif outcome == Outcome.cancelled or row.cancel_requested:
            values |= {"status": JobStatus.cancelled, "finished_at": now}
            if error:
                values["error"] = error
            lines.append(log_line(JobStatus.cancelled, "warning"))
        elif outcome == Outcome.shutdown:
            values |= {"status": JobStatus.queued, "attempts": Job.attempts - 1, "worker_id": None, "started_at": None}
            lines.append(
                log_line(f"worker {claim.worker_id} shut down; requeued ({attempt} not counted)", "warning")
            )
        elif outcome == Outcome.error and row.attempts < row.max_attempts:
            values |= {"status": JobStatus.queued, "error": error, "worker_id": None}
            lines.append(log_line(f"{attempt} failed: {error}; requeued", "warning"))
        else:
            values |= {"status": JobStatus.failed, "error": error, "finished_at": now}
            lines.append(log_line(f"failed ({attempt}): {error}", "error"))
        session.execute(
            update(Job).where(Job.id == claim.job_id).values(**values).execution_options(synchronize_session=False)
        )
        _insert_logs(session, claim.job_id, lines)
        return values["status"]
