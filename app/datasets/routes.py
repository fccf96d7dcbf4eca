"""REST routes for datasets and snapshots."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from app.auth.deps import CurrentUser, EngineerUser
from app.datasets import duplicates, leakage, service
from app.datasets.schemas import DatasetCreate, DatasetRead, DatasetUpdate, SnapshotCreate, SnapshotRead
from app.db import SessionDep
from app.ids import MAX_ID
from app.labels.annotations import refuse_multilabel
from app.deps import DatasetDep
from app.models import Snapshot, Split

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
    """Change settings: the description, unlabelled_joins_train, overlap (answers per sample;
    1 on a multi-label dataset)."""
    if (data.overlap or 1) > 1:
        refuse_multilabel(ds, "overlap")
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


@router.get("/datasets/{dataset_id}/duplicates", response_model=duplicates.DuplicatePage)
def list_duplicates(
    user: CurrentUser,
    ds: DatasetDep,
    session: SessionDep,
    kind: Annotated[duplicates.Kind, Query(description="exact: the same content (image bytes, normalised text, "
                                                       "feature vector), found at import; near: close in a run's "
                                                       "embedding space (exact ones included)")] = "exact",
    run: Annotated[int | None, Query(ge=1, le=MAX_ID, description="near: the run whose groups to list; default "
                                                                  "the dataset's reference run, else its newest")] = None,
    split: Annotated[Split | None, Query(description="only groups with a member in this split")] = None,
    scope: Annotated[duplicates.Scope, Query(description="all groups; leak: members in train and in valid or "
                                                         "test; conflict: members with different labels")] = "all",
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=duplicates.MAX_GROUPS)] = 50,
) -> duplicates.DuplicatePage:
    """Groups of samples with the same content (exact) or close in a run's embedding space
    (near), a page at a time in key order; each group lists its members' ids, external ids,
    splits and labels, and whether it leaks across splits or its labels disagree."""
    return duplicates.duplicate_groups(session, ds, kind=kind, run_id=run, split=split, scope=scope, cursor=cursor,
                                       limit=limit)


@router.get("/datasets/{dataset_id}/leakage", response_model=leakage.LeakageRead)
def dataset_leakage(user: CurrentUser, ds: DatasetDep, session: SessionDep) -> leakage.LeakageRead:
    """Valid and test samples whose exact content is also in train, and the metrics of the
    dataset's run with and without them, per split (the estimated effect of the leak)."""
    return leakage.leakage_report(session, ds)
