"""Assignments: a queue (filters and an overlap) an engineer gives to chosen annotators, who see
it first on their home page with its progress (docs/annotations.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import Conflict, Invalid, NotFound
from app.labels import queries
from app.labels.annotations import MAX_OVERLAP, overlap_of, refuse_multilabel
from app.labels.queue import review_progress
from app.models import Assignment, AssignmentUser, Dataset, Role, Split, User


class AssignmentFilters(BaseModel):
    """The queue an assignment gives: the filters of the review queue."""

    model_config = ConfigDict(extra="forbid")

    split: Literal["train", "valid", "test", "unlabelled", "all"] = "train"
    label: str | None = Field(default=None, max_length=200, description="given class")
    predicted: str | None = Field(default=None, max_length=200)
    flagged: bool = False
    order: str | None = Field(default=None, description="default: the queue's default order")


class AssignmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    filters: AssignmentFilters = Field(default_factory=AssignmentFilters)
    overlap: int | None = Field(default=None, ge=1, le=MAX_OVERLAP, description="answers per sample; default: the dataset's")
    users: list[str] = Field(min_length=1, max_length=500, description="usernames of the annotators it is for")


class AssignmentRead(BaseModel):
    id: int
    dataset_id: int
    dataset_name: str
    name: str
    filters: AssignmentFilters
    overlap: int
    users: list[str]
    reviewed: int | None = None
    total: int | None = None
    queue_url: str = Field(description="the browser queue for it")


def create(session: Session, ds: Dataset, body: AssignmentCreate, creator: User) -> Assignment:
    f = body.filters
    for name, value in (("label", f.label), ("predicted", f.predicted)):
        if value is not None and value not in ds.classes:
            raise Invalid(f"filters.{name} must be one of the dataset's classes",
                          errors=[{"field": f"filters.{name}", "message": f"expected one of {', '.join(ds.classes)}"}])
    if f.order is not None and f.order not in queries.ORDERS:
        raise Invalid("filters.order is not an order", errors=[{"field": "filters.order",
                                                               "message": f"expected one of {', '.join(queries.ORDERS)}"}])
    names = list(dict.fromkeys(body.users))
    users = dict(session.execute(select(User.username, User.id).where(User.username.in_(names),
                                                                       User.is_active.is_(True))).all())
    unknown = [n for n in names if n not in users]
    if unknown:
        raise Invalid(f"unknown or inactive users: {', '.join(unknown[:10])}",
                      errors=[{"field": "users", "message": f"no active user {n!r}"} for n in unknown[:10]])
    filters = f.model_dump(exclude_none=True)
    if body.overlap is not None and body.overlap > 1:
        refuse_multilabel(ds, "overlap")
    if body.overlap is not None:
        filters["overlap"] = body.overlap
    a = Assignment(dataset_id=ds.id, name=body.name.strip() or body.name, filters=filters, created_by=creator.id)
    session.add(a)
    session.flush()
    session.add_all([AssignmentUser(assignment_id=a.id, user_id=users[n]) for n in names])
    session.flush()
    return a


def get(session: Session, ds: Dataset, assignment_id: int, user: User) -> Assignment:
    """The dataset's assignment, if the user may work it (assigned, or an engineer or admin)."""
    a = session.get(Assignment, assignment_id)
    if a is None or a.dataset_id != ds.id or not may_work(session, a, user):
        raise NotFound(f"assignment {assignment_id} not found in dataset {ds.id}")
    return a


def may_work(session: Session, a: Assignment, user: User) -> bool:
    if Role(user.role).rank >= Role.engineer.rank:
        return True
    return session.get(AssignmentUser, (a.id, user.id)) is not None


def overlap(ds: Dataset, a: Assignment | None) -> int:
    """The answers per sample a queue asks for: its assignment's, else the dataset's (1 on a
    multi-label dataset)."""
    value = (a.filters or {}).get("overlap") if a is not None and not ds.multilabel else None
    return value if isinstance(value, int) and 1 <= value <= MAX_OVERLAP else overlap_of(ds)


def filters_of(a: Assignment) -> AssignmentFilters:
    return AssignmentFilters.model_validate({k: v for k, v in (a.filters or {}).items() if k != "overlap"})


def query_of(a: Assignment) -> queries.SampleQuery:
    f = filters_of(a)
    return queries.SampleQuery(split=None if f.split == "all" else Split(f.split), label=f.label,
                               predicted=f.predicted, flagged=True if f.flagged else None)


def of_dataset(session: Session, ds: Dataset, user: User) -> list[Assignment]:
    query = select(Assignment).where(Assignment.dataset_id == ds.id).order_by(Assignment.id)
    if Role(user.role).rank < Role.engineer.rank:
        query = query.join(AssignmentUser, AssignmentUser.assignment_id == Assignment.id).where(
            AssignmentUser.user_id == user.id)
    return list(session.scalars(query))


def of_user(session: Session, user: User) -> list[Assignment]:
    query = (select(Assignment).join(AssignmentUser, AssignmentUser.assignment_id == Assignment.id)
             .where(AssignmentUser.user_id == user.id).order_by(Assignment.id.desc()).limit(50))
    return list(session.scalars(query))


def read(session: Session, a: Assignment, *, progress: bool = False) -> AssignmentRead:
    ds = session.get(Dataset, a.dataset_id)
    users = list(session.scalars(select(User.username).join(AssignmentUser, AssignmentUser.user_id == User.id)
                                 .where(AssignmentUser.assignment_id == a.id).order_by(User.username)))
    f = filters_of(a)
    done = total = None
    if progress:
        try:
            done, total = review_progress(session, ds, query_of(a))
        except Conflict:  # it filters by a run's predictions and the dataset has none now
            pass
    return AssignmentRead(id=a.id, dataset_id=ds.id, dataset_name=ds.name, name=a.name, filters=f,
                          overlap=overlap(ds, a), users=users, reviewed=done, total=total,
                          queue_url=f"/datasets/{ds.id}/review?assignment={a.id}")
