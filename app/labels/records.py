"""Annotation rows: one annotator's answer for one sample, written beside every reviewed change
and by the second-opinion queue (app.labels.annotations, docs/annotations.md)."""

from __future__ import annotations

from sqlalchemy import bindparam, delete, exists, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.models import Annotation, ConsensusState, SampleConsensus, utcnow

MAX_SECONDS = 3600.0  # longer than this on one sample is a break, not work: not counted


def record(session: Session, dataset_id: int, sample_id: int, user_id: int, label: str, seconds: float | None) -> None:
    """Write the user's answer for the sample, replacing an earlier one of theirs."""
    if seconds is not None and not 0 <= seconds <= MAX_SECONDS:
        seconds = None
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(Annotation).values(dataset_id=dataset_id, sample_id=sample_id, user_id=user_id, label=label,
                                     seconds=seconds, created_at=utcnow())
    stmt = stmt.on_conflict_do_update(
        index_elements=[Annotation.sample_id, Annotation.user_id],
        set_={"label": stmt.excluded.label, "seconds": stmt.excluded.seconds, "created_at": stmt.excluded.created_at},
    )
    session.execute(stmt)


def drop(session: Session, sample_id: int, user_id: int) -> None:
    """Take back the user's answer for the sample (their change was undone)."""
    stmt = delete(Annotation).where(Annotation.sample_id == sample_id, Annotation.user_id == user_id)
    session.execute(stmt.execution_options(synchronize_session=False))


def count(session: Session, sample_id: int) -> int:
    return int(session.scalar(select(func.count()).select_from(Annotation).where(Annotation.sample_id == sample_id)))


def blind_exclusions(sample_id, claimant=None) -> list:
    """The conditions of a second-opinion queue (overlap k > 1): leave out what the claimant
    has answered already and what is complete (decided, resolved, or a tie waiting for a
    reviewer). With no claimant, it binds `claimant` (for cached statements)."""
    claimant = bindparam("claimant") if claimant is None else claimant
    return [
        ~exists().where(Annotation.sample_id == sample_id, Annotation.user_id == claimant),
        ~exists().where(SampleConsensus.sample_id == sample_id, SampleConsensus.state != ConsensusState.pending),
    ]
