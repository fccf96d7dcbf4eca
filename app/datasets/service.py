"""Datasets: create, find, count, label versions and snapshots."""

from __future__ import annotations

from sqlalchemy import func, insert, literal, select, update
from sqlalchemy.orm import Session

from app.datasets.schemas import DatasetCreate, DatasetSettings, DatasetRead, SplitCounts
from app.errors import Conflict
from app.models import Dataset, Sample, Snapshot, SnapshotItem, User



def create_dataset(session: Session, data: DatasetCreate, user: User | None = None) -> Dataset:
    if session.scalar(select(Dataset.id).where(Dataset.name == data.name)) is not None:
        raise Conflict(f"a dataset named {data.name!r} already exists")
    ds = Dataset(
        name=data.name,
        task=data.task.value,
        classes=data.classes or [],
        settings=(data.settings or DatasetSettings()).model_dump(exclude_none=True),
        label_version=0,
        created_by=user.id if user else None,
        multilabel=data.multilabel,
    )
    session.add(ds)
    session.flush()
    return ds


def find_dataset(session: Session, ref: str) -> Dataset | None:
    """A dataset by id (digits) or by name."""
    if ref.isdigit():
        ds = session.get(Dataset, int(ref))
        if ds is not None:
            return ds
    return session.scalar(select(Dataset).where(Dataset.name == ref))


def split_counts(session: Session, dataset_ids: list[int]) -> dict[int, SplitCounts]:
    rows = session.execute(
        select(Sample.dataset_id, Sample.split, func.count())
        .where(Sample.dataset_id.in_(dataset_ids))
        .group_by(Sample.dataset_id, Sample.split)
    ).all()
    out = {i: SplitCounts() for i in dataset_ids}
    for ds_id, split, n in rows:
        setattr(out[ds_id], split, n)
    return out


def to_read(session: Session, ds: Dataset, counts: SplitCounts | None = None) -> DatasetRead:
    counts = counts or split_counts(session, [ds.id])[ds.id]
    return DatasetRead(
        id=ds.id,
        name=ds.name,
        task=ds.task,
        classes=ds.classes,
        counts=counts,
        label_version=ds.label_version,
        settings=ds.settings,
        reference_run_id=ds.reference_run_id,
        multilabel=ds.multilabel,
        created_at=ds.created_at,
    )


def list_datasets(session: Session) -> list[DatasetRead]:
    rows = session.scalars(select(Dataset).order_by(Dataset.id)).all()
    counts = split_counts(session, [d.id for d in rows]) if rows else {}
    return [to_read(session, d, counts[d.id]) for d in rows]


def bump_label_version(session: Session, dataset_id: int) -> int:
    """Move the dataset's label version on by one, atomically; returns the new version."""
    return session.execute(
        update(Dataset)
        .where(Dataset.id == dataset_id)
        .values(label_version=Dataset.label_version + 1)
        .returning(Dataset.label_version)
    ).scalar_one()


def create_snapshot(session: Session, ds: Dataset, user: User | None = None, name: str | None = None) -> Snapshot:
    """Freeze the split and label of every sample now, in one INSERT ... SELECT."""
    # Lock the dataset row so that the copied labels and the recorded version agree.
    version = session.execute(
        select(Dataset.label_version).where(Dataset.id == ds.id).with_for_update()
    ).scalar_one()
    snap = Snapshot(dataset_id=ds.id, label_version=version, name=name, created_by=user.id if user else None)
    session.add(snap)
    session.flush()
    session.execute(
        insert(SnapshotItem).from_select(
            ["snapshot_id", "sample_id", "split", "label"],
            select(literal(snap.id), Sample.id, Sample.split, Sample.label).where(Sample.dataset_id == ds.id),
        )
    )
    # rowcount of INSERT ... SELECT is not reported by every driver; count instead.
    snap.sample_count = session.scalar(
        select(func.count()).select_from(SnapshotItem).where(SnapshotItem.snapshot_id == snap.id)
    )
    session.flush()
    return snap
