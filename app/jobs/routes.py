"""REST routes for jobs: enqueue, read (with the tail of the log), list, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.auth.deps import CurrentUser, EngineerUser
from app.db import SessionDep
from app.deps import JobDep, SettingsDep
from app.jobs import service
from app.jobs.schemas import JobCreate, JobDetail, JobRead, JobStatus
from app.ids import PathId

router = APIRouter(tags=["jobs"])


@router.post("/datasets/{dataset_id}/jobs", status_code=202, response_model=JobDetail)
def enqueue_job(
    dataset_id: PathId, data: JobCreate, session: SessionDep, user: EngineerUser, settings: SettingsDep
) -> JobDetail:
    """Queue a job (train, search, seeds, prune) for a dataset; a worker picks it up."""
    job = service.enqueue(session, data.kind, data.params, dataset_id=dataset_id, user=user, settings=settings)
    return service.to_detail(session, job)


@router.get("/datasets/{dataset_id}/jobs", response_model=list[JobRead])
def list_jobs(
    dataset_id: PathId,
    session: SessionDep,
    user: CurrentUser,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_LIST)] = 50,
) -> list[JobRead]:
    """The dataset's jobs, newest first."""
    jobs = service.list_jobs(session, dataset_id, status.value if status else None, limit)
    return [service.to_read(job) for job in jobs]


@router.get("/jobs/{job_id}", response_model=JobDetail)
def get_job(user: CurrentUser, job: JobDep, session: SessionDep) -> JobDetail:
    """One job: status, progress, result or error, and the last lines of its log."""
    return service.to_detail(session, job)


@router.post("/jobs/{job_id}/cancel", status_code=202, response_model=JobDetail)
def cancel_job(job_id: PathId, session: SessionDep, user: EngineerUser) -> JobDetail:
    """Cancel a queued job at once, or ask a running one to stop at its next batch."""
    job = service.cancel_job(session, job_id, user)
    return service.to_detail(session, job)
