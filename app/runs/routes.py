"""REST routes for training runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.auth.deps import CurrentUser
from app.datasets.service import get_dataset
from app.db import SessionDep
from app.runs import service
from app.runs.schemas import RunListItem, RunRead
from app.ids import PathId

router = APIRouter(tags=["runs"])


@router.get("/datasets/{dataset_id}/runs", response_model=list[RunListItem])
def list_runs(
    dataset_id: PathId,
    session: SessionDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=service.MAX_RUNS)] = 100,
) -> list[RunListItem]:
    """The dataset's runs, newest first, with valid and test accuracy and macro F1."""
    get_dataset(session, dataset_id)
    return service.list_runs(session, dataset_id, limit)


@router.get("/runs/{run_id}", response_model=RunRead)
def get_run(run_id: PathId, session: SessionDep, user: CurrentUser) -> RunRead:
    """One run: its recipe, label version, metrics per split, per-epoch history and info."""
    return service.run_read(service.get_run(session, run_id))
