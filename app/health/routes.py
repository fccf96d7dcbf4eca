"""GET /api/v1/datasets/{id}/health: validation health, for engineers (who choose between runs)."""

from __future__ import annotations

from fastapi import APIRouter

from app.auth.deps import EngineerUser
from app.db import SessionDep
from app.deps import DatasetDep
from app.health.service import HealthRead, health

router = APIRouter(tags=["runs"])


@router.get("/datasets/{dataset_id}/health", response_model=HealthRead)
def dataset_health(user: EngineerUser, ds: DatasetDep, session: SessionDep) -> HealthRead:
    """Do valid and test move together over the dataset's runs (Pearson, Spearman, n)? Is the
    valid split big enough per class? How much does the latest seeds job say one recipe varies?"""
    return health(session, ds)
