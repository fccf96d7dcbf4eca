"""Exact duplicates: the samples of a dataset that share a content key (app.datasets.content).

Groups are read along the (dataset_id, content_hash) index in key order, a page at a time,
so that a page costs the walk to its `limit` groups, not a sort of the dataset. A group shows
every member with its split and label: a group that spans train and valid or test leaks (the
model is scored on samples it trained on), a group whose members carry different labels is a
label error in disguise (at least one of them is wrong).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from app.errors import BadRequest
from app.models import Dataset, Sample, Split

MAX_GROUPS = 500
CURSOR = re.compile(r"^[0-9a-f]{1,64}$")
Scope = Literal["all", "leak", "conflict"]


class DuplicateGroup(BaseModel):
    kind: Literal["exact"] = "exact"
    key: str = Field(description="the content key the members share")
    sample_ids: list[int]
    external_ids: list[str | None]
    splits: list[str]
    labels: list[str | None]
    leak: bool = Field(description="members in train and in valid or test")
    conflict: bool = Field(description="labelled members with different labels")


class DuplicatePage(BaseModel):
    groups: list[DuplicateGroup]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


def _split_value(split) -> str:
    return split.value if isinstance(split, Split) else str(split)


def duplicate_groups(session: Session, ds: Dataset, *, split: Split | None = None, scope: Scope = "all",
                     cursor: str | None = None, limit: int = 50) -> DuplicatePage:
    """A page of exact-duplicate groups, in key order: all of them, those with a member in
    `split`, those that leak across splits, or those whose labels disagree."""
    if cursor is not None and not CURSOR.match(cursor):
        raise BadRequest("cursor must be the next_cursor of an earlier page")
    limit = max(1, min(limit, MAX_GROUPS))
    evaluated = [Split.valid.value, Split.test.value]
    train = func.sum(case((Sample.split == Split.train, 1), else_=0))
    held_out = func.sum(case((Sample.split.in_(evaluated), 1), else_=0))
    keys = (
        select(Sample.content_hash)
        .where(Sample.dataset_id == ds.id, Sample.content_hash.is_not(None))
        .group_by(Sample.content_hash)
        .having(func.count() > 1)
        .order_by(Sample.content_hash)
        .limit(limit + 1)
    )
    if cursor is not None:
        keys = keys.where(Sample.content_hash > cursor)
    if split is not None:
        keys = keys.having(func.sum(case((Sample.split == split, 1), else_=0)) > 0)
    if scope == "leak":
        keys = keys.having(and_(train > 0, held_out > 0))
    elif scope == "conflict":
        keys = keys.having(func.count(func.distinct(Sample.label)) > 1)
    found = session.scalars(keys).all()
    more = len(found) > limit
    found = found[:limit]
    members: dict[str, list] = {k: [] for k in found}
    if found:
        rows = session.execute(
            select(Sample.id, Sample.external_id, Sample.split, Sample.label, Sample.content_hash)
            .where(Sample.dataset_id == ds.id, Sample.content_hash.in_(found))
            .order_by(Sample.content_hash, Sample.id)
        ).all()
        for r in rows:
            members[r.content_hash].append(r)
    groups = []
    for key in found:
        rows = members[key]
        splits = [_split_value(r.split) for r in rows]
        labels = [r.label for r in rows]
        groups.append(DuplicateGroup(
            key=key, sample_ids=[r.id for r in rows], external_ids=[r.external_id for r in rows], splits=splits,
            labels=labels, leak="train" in splits and bool(set(splits) & set(evaluated)),
            conflict=len({lab for lab in labels if lab is not None}) > 1,
        ))
    return DuplicatePage(groups=groups, next_cursor=found[-1] if more else None)
