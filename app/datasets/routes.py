"""REST routes for datasets and snapshots."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from app.auth.deps import CurrentUser, EngineerUser
from app.datasets import service
from app.datasets.schemas import DatasetCreate, DatasetRead, DatasetUpdate, SnapshotCreate, SnapshotRead
from app.db import SessionDep
from app.deps import DatasetDep
from app.models import Snapshot

router = APIRouter(tags=["datasets"])


@router.post("/datasets", status_code=201, response_model=DatasetRead)
def create_dataset(data: DatasetCreate, session: SessionDep, user: EngineerUser) -> DatasetRead:
    """Create an empty dataset."""
    ds = service.create_dataset(session, data, user)
    return service.to_read(session, ds)


@router.get("/datasets", response_model=list[DatasetRead])
def list_datasets(session: SessionDep, user: CurrentUser) -> list[DatasetRead]:
    """Every dataset with its split counts."""
    return service.list_datasets(session)


@router.get("/datasets/{dataset_id}", response_model=DatasetRead)
def get_dataset(user: CurrentUser, ds: DatasetDep, session: SessionDep) -> DatasetRead:
    """One dataset with its split counts and label version."""
    return service.to_read(session, ds)


@router.patch("/datasets/{dataset_id}", response_model=DatasetRead)
def update_dataset(user: EngineerUser, ds: DatasetDep, data: DatasetUpdate, session: SessionDep) -> DatasetRead:
    """Change settings: the description, unlabelled_joins_train, overlap (answers per sample)."""
    ds.settings = {**(ds.settings or {}), **data.model_dump(exclude_unset=True, exclude_none=True)}
    session.flush()
    return service.to_read(session, ds)


@router.post("/datasets/{dataset_id}/snapshots", status_code=201, response_model=SnapshotRead)
def create_snapshot(
    user: EngineerUser, ds: DatasetDep, session: SessionDep, data: SnapshotCreate | None = None
) -> SnapshotRead:
    """Freeze the current labels; exports can be pinned to the snapshot later."""
    return service.create_snapshot(session, ds, user, data.name if data else None)


@router.get("/datasets/{dataset_id}/snapshots", response_model=list[SnapshotRead])
def list_snapshots(user: CurrentUser, ds: DatasetDep, session: SessionDep) -> list[SnapshotRead]:
    """The dataset's snapshots, newest first."""
    return session.scalars(
        select(Snapshot).where(Snapshot.dataset_id == ds.id).order_by(Snapshot.id.desc())
    ).all()
