"""REST routes of the evaluation: two runs of a dataset compared class by class."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from app.auth.deps import CurrentUser
from app.db import SessionDep
from app.deps import DatasetDep
from app.evaluation import compare as cmp
from app.ids import QueryId

router = APIRouter(tags=["runs"])

SplitName = Literal["valid", "test"]


@router.get("/datasets/{dataset_id}/compare", response_model=cmp.Comparison)
def compare_runs(
    ds: DatasetDep,
    session: SessionDep,
    user: CurrentUser,
    run: QueryId = None,
    base: QueryId = None,
    split: SplitName = "valid",
) -> cmp.Comparison:
    """Two runs class by class (default: the latest succeeded run against the one before it),
    with the label changes between the label versions they saw."""
    return cmp.compare_runs(session, ds.id, run, base, split)
