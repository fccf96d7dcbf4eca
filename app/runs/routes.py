"""REST routes for training runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.auth.deps import CurrentUser, EngineerUser
from app.db import SessionDep
from app.deps import DatasetDep, RunDep
from app.runs import retention, service
from app.runs.schemas import RunListItem, RunRead, RunUpdate

router = APIRouter(tags=["runs"])


@router.get("/datasets/{dataset_id}/runs", response_model=list[RunListItem])
def list_runs(
    ds: DatasetDep,
    session: SessionDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=service.MAX_RUNS)] = 100,
) -> list[RunListItem]:
    """The dataset's runs, newest first, with valid and test accuracy and macro F1."""
    return service.list_runs(session, ds.id, limit)


@router.get("/runs/{run_id}", response_model=RunRead)
def get_run(run: RunDep, user: CurrentUser) -> RunRead:
    """One run: its recipe, label version, metrics per split, per-epoch history and info."""
    return service.run_read(run)


@router.patch("/runs/{run_id}", response_model=RunRead)
def update_run(user: EngineerUser, run: RunDep, data: RunUpdate, session: SessionDep) -> RunRead:
    """Pin a run to keep its per-sample predictions past the retention rule (the latest
    CURATE_KEEP_RUNS succeeded runs of a dataset keep theirs), or unpin it. 409 when pinning
    a run whose predictions were already dropped."""
    retention.set_pinned(session, run, data.pinned)
    return service.run_read(run)
