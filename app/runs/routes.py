"""REST routes for training runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

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
def get_run(run: RunDep, user: CurrentUser, session: SessionDep) -> RunRead:
    """One run: its recipe, label version, metrics per split, per-epoch history and info."""
    return service.run_read(run, service.reference_run_id(session, run.dataset_id) == run.id)


@router.patch("/runs/{run_id}", response_model=RunRead)
def update_run(user: EngineerUser, run: RunDep, data: RunUpdate, session: SessionDep) -> RunRead:
    """Pin a run to keep its per-sample predictions past the retention rule (the latest
    CURATE_KEEP_RUNS succeeded runs of a dataset keep theirs), or unpin it. 409 when pinning
    a run whose predictions were already dropped."""
    retention.set_pinned(session, run, data.pinned)
    return service.run_read(run, service.reference_run_id(session, run.dataset_id) == run.id)


@router.post("/runs/{run_id}/pin", response_model=RunRead)
def pin_reference(user: EngineerUser, run: RunDep, session: SessionDep) -> RunRead:
    """Make this run the dataset's reference: the headline metrics, the review queue's order,
    the scores, the advisor and the exports follow it, not merely the newest run, until it is
    unpinned or another is pinned. Its predictions are kept past retention. 409 for a run
    that has not succeeded or whose predictions are gone."""
    return service.run_read(service.set_reference(session, run), True)


@router.delete("/runs/{run_id}/pin", status_code=204)
def unpin_reference(user: EngineerUser, run: RunDep, session: SessionDep) -> Response:
    """Stop following this run (when it is the reference): the newest succeeded run leads again."""
    service.clear_reference(session, run)
    return Response(status_code=204)
