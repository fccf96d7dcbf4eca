"""Duplicate groups: exact duplicates, the samples of a dataset that share a content key
(app.datasets.content), and near duplicates, a run's groups of samples close in its embedding
space (app.scoring.neighbours; exact duplicates included).

Groups are read along the (dataset_id, content_hash) index in key order, a page at a time,
so that a page costs the walk to its `limit` groups, not a sort of the dataset; a run's near
groups along (run_id, duplicate_group) the same way. A group shows
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

from app.errors import BadRequest, NotFound
from app.models import Dataset, Prediction, Run, Sample, Split
from app.runs.retention import check_kept
from app.runs.service import latest_run

MAX_GROUPS = 500
CURSOR = re.compile(r"^[0-9a-f]{1,64}$")
NEAR_CURSOR = re.compile(r"^[0-9]{1,18}$")
Scope = Literal["all", "leak", "conflict"]
Kind = Literal["exact", "near"]


class DuplicateGroup(BaseModel):
    kind: Kind = "exact"
    key: str = Field(description="exact: the content key the members share; near: the group's id under the run "
                                 "(its lowest sample id)")
    sample_ids: list[int]
    external_ids: list[str | None]
    splits: list[str]
    labels: list[str | None]
    leak: bool = Field(description="members in train and in valid or test")
    conflict: bool = Field(description="labelled members with different labels")


class DuplicatePage(BaseModel):
    run_id: int | None = Field(default=None, description="near: the run whose embeddings grouped the samples")
    groups: list[DuplicateGroup]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


def _split_value(split) -> str:
    return split.value if isinstance(split, Split) else str(split)


def duplicate_groups(session: Session, ds: Dataset, *, kind: Kind = "exact", run_id: int | None = None,
                     split: Split | None = None, scope: Scope = "all", cursor: str | None = None,
                     limit: int = 50) -> DuplicatePage:
    """A page of duplicate groups, in key order: all of them, those with a member in `split`,
    those that leak across splits, or those whose labels disagree. Exact groups come from the
    content keys; near groups from a run (`run_id`, else the dataset's reference or newest run)."""
    if kind == "near":
        return _near_groups(session, ds, run_id, split, scope, cursor, limit)
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


def _run(session: Session, ds: Dataset, run_id: int | None) -> Run | None:
    if run_id is None:
        run = latest_run(session, ds.id)
    else:
        run = session.get(Run, run_id)
        if run is None or run.dataset_id != ds.id:
            raise NotFound(f"run {run_id} not found in dataset {ds.id}")
    if run is not None:
        check_kept(run)
    return run


def _near_groups(session: Session, ds: Dataset, run_id: int | None, split: Split | None, scope: Scope,
                 cursor: str | None, limit: int) -> DuplicatePage:
    if cursor is not None and not NEAR_CURSOR.match(cursor):
        raise BadRequest("cursor must be the next_cursor of an earlier page")
    limit = max(1, min(limit, MAX_GROUPS))
    run = _run(session, ds, run_id)
    if run is None:
        return DuplicatePage(run_id=None, groups=[], next_cursor=None)
    evaluated = [Split.valid.value, Split.test.value]
    train = func.sum(case((Prediction.sample_split == Split.train.value, 1), else_=0))
    held_out = func.sum(case((Prediction.sample_split.in_(evaluated), 1), else_=0))
    keys = (
        select(Prediction.duplicate_group)
        .where(Prediction.run_id == run.id, Prediction.duplicate_group.is_not(None))
        .group_by(Prediction.duplicate_group)
        .order_by(Prediction.duplicate_group)
        .limit(limit + 1)
    )
    if cursor is not None:
        keys = keys.where(Prediction.duplicate_group > int(cursor))
    if split is not None:
        keys = keys.having(func.sum(case((Prediction.sample_split == split.value, 1), else_=0)) > 0)
    if scope == "leak":
        keys = keys.having(and_(train > 0, held_out > 0))
    elif scope == "conflict":
        keys = keys.having(func.count(func.distinct(Prediction.sample_label)) > 1)
    found = session.scalars(keys).all()
    more = len(found) > limit
    found = found[:limit]
    members: dict[int, list] = {k: [] for k in found}
    if found:
        rows = session.execute(
            select(Sample.id, Sample.external_id, Sample.split, Sample.label, Prediction.duplicate_group)
            .join(Sample, Sample.id == Prediction.sample_id)
            .where(Prediction.run_id == run.id, Prediction.duplicate_group.in_(found))
            .order_by(Prediction.duplicate_group, Sample.id)
        ).all()
        for r in rows:
            members[r.duplicate_group].append(r)
    groups = []
    for key in found:
        rows = members[key]
        splits = [_split_value(r.split) for r in rows]
        labels = [r.label for r in rows]
        groups.append(DuplicateGroup(
            kind="near", key=str(key), sample_ids=[r.id for r in rows], external_ids=[r.external_id for r in rows],
            splits=splits, labels=labels, leak="train" in splits and bool(set(splits) & set(evaluated)),
            conflict=len({lab for lab in labels if lab is not None}) > 1,
        ))
    return DuplicatePage(run_id=run.id, groups=groups, next_cursor=str(found[-1]) if more else None)
