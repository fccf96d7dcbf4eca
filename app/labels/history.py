"""A dataset's label history: the events of one sample, and the dataset's events newest first."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import Invalid
from app.labels.schemas import DatasetEventRead, LabelEventRead
from app.models import Dataset, LabelEvent, LabelSource, Sample, User

MAX_EVENTS = 500


def sample_history(session: Session, sample_id: int) -> list[LabelEventRead]:
    rows = session.execute(
        select(LabelEvent, User.username)
        .outerjoin(User, User.id == LabelEvent.user_id)
        .where(LabelEvent.sample_id == sample_id)
        .order_by(LabelEvent.id.desc())
    ).all()
    return [_event_read(e, username) for e, username in rows]


def sample_histories(session: Session, sample_ids: list[int]) -> dict[int, list[LabelEventRead]]:
    """sample_history of each of these samples, in one query."""
    out: dict[int, list[LabelEventRead]] = {sid: [] for sid in sample_ids}
    if not sample_ids:
        return out
    rows = session.execute(
        select(LabelEvent, User.username)
        .outerjoin(User, User.id == LabelEvent.user_id)
        .where(LabelEvent.sample_id.in_(sample_ids))
        .order_by(LabelEvent.id.desc())
    ).all()
    for e, username in rows:
        out[e.sample_id].append(_event_read(e, username))
    return out



def dataset_events(
    session: Session,
    ds: Dataset,
    *,
    username: str | None = None,
    source: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> tuple[list[DatasetEventRead], int | None]:
    """The dataset's label events, newest first, optionally by one user or source; keyset by id."""
    limit = max(1, min(limit, MAX_EVENTS))
    stmt = (
        select(LabelEvent, User.username, Sample.external_id, Sample.version)
        .join(Sample, Sample.id == LabelEvent.sample_id)
        .outerjoin(User, User.id == LabelEvent.user_id)
        .where(LabelEvent.dataset_id == ds.id)
    )
    if username is not None:
        stmt = stmt.where(User.username == username)
    if source is not None:
        if source not in set(LabelSource):
            expected = ", ".join(LabelSource)
            raise Invalid(f"source must be one of {expected}", errors=[{"field": "source", "message": f"expected one of {expected}"}])
        stmt = stmt.where(LabelEvent.source == source)
    if before is not None:
        stmt = stmt.where(LabelEvent.id < before)
    rows = session.execute(stmt.order_by(LabelEvent.id.desc()).limit(limit + 1)).all()
    page = rows[:limit]
    sample_ids = {e.sample_id for e, *_ in page}
    latest = dict(
        session.execute(
            select(LabelEvent.sample_id, func.max(LabelEvent.id))
            .where(LabelEvent.sample_id.in_(sample_ids))
            .group_by(LabelEvent.sample_id)
        ).all()
    ) if sample_ids else {}
    items = [
        DatasetEventRead(
            **_event_read(e, username).model_dump(),
            sample_id=e.sample_id,
            external_id=external_id,
            sample_version=version,
            latest=latest.get(e.sample_id) == e.id,
        )
        for e, username, external_id, version in page
    ]
    return items, (page[-1][0].id if len(rows) > limit else None)


def event_users(session: Session, ds: Dataset) -> list[str]:
    """The usernames that appear in the dataset's label events, for a filter."""
    return list(
        session.scalars(
            select(User.username)
            .join(LabelEvent, LabelEvent.user_id == User.id)
            .where(LabelEvent.dataset_id == ds.id)
            .distinct()
            .order_by(User.username)
        )
    )


def _event_read(e: LabelEvent, username: str | None) -> LabelEventRead:
    return LabelEventRead.model_validate(e).model_copy(update={"user": username})
