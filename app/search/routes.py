"""REST routes of a search: its trials and the best one, and training with the best params.

    GET  /api/v1/jobs/{job_id}/search              the study of a search job (any job of the search)
    POST /api/v1/jobs/{job_id}/search/train-best   202: a train job with base + the best trial's params

A search is started like any job: POST /api/v1/datasets/{id}/jobs {"kind": "search", "params": {...}}.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from app.auth.deps import EngineerUser
from app.db import SessionDep
from app.jobs import service as job_service
from app.jobs.schemas import JobDetail
from app.search import service
from app.ids import PathId

router = APIRouter(tags=["search"])


class TrialRead(BaseModel):
    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    intermediate_values: dict[str, float | None]
    worker: str | None
    job_id: int | None
    duration_s: float | None
    started_at: datetime | None
    finished_at: datetime | None
    retry_of: int | None
    error: str | None
    metrics: dict[str, Any]


class BestTrial(BaseModel):
    number: int
    value: float
    params: dict[str, Any]
    train_params: dict[str, Any]


class SearchRead(BaseModel):
    job_id: int
    dataset_id: int | None
    study: str | None
    status: str
    active: bool
    metric: str
    direction: str
    pruner: str
    n_trials: int
    workers: int
    timeout_s: float | None
    progress: float
    counts: dict[str, int]
    space: dict[str, Any] | None
    base: dict[str, Any]
    best: BestTrial | None
    trials: list[TrialRead]
    jobs: list[dict[str, Any]]


@router.get("/jobs/{job_id}/search", response_model=SearchRead)
def get_search(job_id: PathId, request: Request, session: SessionDep, user: EngineerUser) -> dict:
    """The search's study: trials (number, state, params, value, per-epoch values, worker, duration) and the best."""
    return service.read_search(session, request.app.state.settings, job_id)


@router.post("/jobs/{job_id}/search/train-best", status_code=202, response_model=JobDetail)
def train_best(job_id: PathId, request: Request, session: SessionDep, user: EngineerUser) -> JobDetail:
    """Queue a train job whose params are the search's base plus its best trial's params."""
    settings = request.app.state.settings
    job = service.train_best(session, settings, job_id, user, max_attempts=settings.job_max_attempts)
    return job_service.to_detail(session, job)
