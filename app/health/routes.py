"""GET /api/v1/datasets/{id}/health: validation health, for engineers (who choose between runs)."""

from __future__ import annotations

from fastapi import APIRouter

from app.auth.deps import EngineerUser
from app.datasets.service import get_dataset
from app.db import SessionDep
from app.health.service import HealthRead, health
from app.ids import PathId

router = APIRouter(tags=["runs"])


@router.get("/datasets/{dataset_id}/health", response_model=HealthRead)
def dataset_health(dataset_id: PathId, session: SessionDep, user: EngineerUser) -> HealthRead:
    """Do valid and test move together over the dataset's runs (Pearson, Spearman, n)? Is the
    valid split big enough per class? How much does the latest seeds job say one recipe varies?"""
    return health(session, get_dataset(session, dataset_id))
