"""Samples: ranked listing, reading, and label changes with optimistic concurrency.

A change is one conditional UPDATE (``WHERE version = :expected``): on either database
exactly one writer wins per version and the others see zero rows and get a conflict.
Every label or split change writes a label event and moves the dataset's label version on.
Undo, revert and bulk changes go through that same UPDATE, so none of them can overwrite a
change they did not see.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy import BigInteger, and_, case, cast, func, literal, or_, select, update
from sqlalchemy.orm import Session

from app.datasets.service import bump_label_version
from app.ids import in_range
from app.jsonsafe import jsonable
from app.labels.schemas import DatasetEventRead, LabelEventRead, PredictionRead, SampleRead, SampleUpdate
from app.models import Dataset, LabelEvent, Prediction, Run, Sample, Split, User, utcnow

# Score name -> (column, True when a high value is suspicious).
SCORES: dict[str, tuple[Any, bool]] = {
    "loss": (Prediction.loss, True),
    "self_confidence": (Prediction.self_confidence, False),
    "normalized_margin": (Prediction.normalized_margin, False),
    "confusion_margin": (Prediction.confusion_margin, False),
    "entropy": (Prediction.entropy, True),
    "aum": (Prediction.aum, False),
    "combined": (Prediction.combined, False),
    "priority": (Prediction.priority, False),
}
ORDERS = [*SCORES, "id", "random"]
MAX_LIMIT = 500


class VersionConflict(Exception):
    def __init__(self, current: Sample) -> None:
        self.current = current


def run_has_score(session: Session, run_id: int, name: str) -> bool:
    """Whether the run stored score `name` for any sample (runs older than a score have none)."""
    column = SCORES[name][0]
    return session.scalar(select(Prediction.id).where(Prediction.run_id == run_id, column.is_not(None)).limit(1)) is not None


def default_order(session: Session, run_id: int) -> str:
    """The review order for labelled samples: the review priority, else (older runs) combined, else loss."""
    for name in ("priority", "combined"):
        if run_has_score(session, run_id, name):
            return name
    return "loss"


def latest_run_id(session: Session, dataset_id: int) -> int | None:
    return session.scalar(
        select(func.max(Run.id)).where(Run.dataset_id == dataset_id, Run.status == "succeeded")
    )


def prediction_read(p: Prediction | None) -> PredictionRead | None:
    if p is None:
        return None
    return PredictionRead(
        run_id=p.run_id,
        label=p.label,
        # JSONB does not keep key order: most probable class first.
        probs=dict(sorted(p.probs.items(), key=lambda kv: -kv[1])),
        loss=p.loss,
        self_confidence=p.self_confidence,
        normalized_margin=p.normalized_margin,
        confusion_margin=p.confusion_margin,
        confusion_pair=[p.confusion_a, p.confusion_b],
        entropy=p.entropy,
        aum=p.aum,
        combined=p.combined,
        priority=p.priority,
        flagged=p.flagged,
        suggested_label=p.suggested_label,
        out_of_fold=p.out_of_fold,
    )


def sample_read(s: Sample, p: Prediction | None = None, history: list[LabelEventRead] | None = None) -> SampleRead:
    return SampleRead(
        id=s.id,
        dataset_id=s.dataset_id,
        external_id=s.external_id,
        split=s.split,
        label=s.label,
        original_label=s.original_label,
        reviewed=s.reviewed,
        version=s.version,
        text=s.text,
        features=s.features,
        image_url=f"/api/v1/samples/{s.id}/image" if s.image_blob else None,
        prediction=prediction_read(p),
        history=history,
    )


def _encode_cursor(values: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> list:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or not all(_cursor_value(v) for v in values):
            raise ValueError
        return values
    except ValueError:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid cursor") from None


def _cursor_value(v) -> bool:
    """A sort key a cursor may carry: what _cursor_of writes (ids, scores, text), in the range
    the database compares without overflowing."""
    if v is None or isinstance(v, str):
        return v is None or len(v) <= 1000
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return abs(v) <= 2**53
    return isinstance(v, float) and math.isfinite(v)


@dataclass
class SampleQuery:
    split: Split | None = None
    label: str | None = None
    predicted: str | None = None
    order: str = "id"
    reverse: bool = False
    limit: int = 50
    cursor: str | None = None
    run_id: int | None = None
    reviewed: bool | None = None
    flagged: bool | None = None  # in (or out of) the run's flagged set of likely label errors


def _ranked(session: Session, ds: Dataset, q: SampleQuery):
    """The filtered, ordered select of (Sample, Prediction, *sort keys) for q, and the run it uses."""
    if q.order not in ORDERS:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"order must be one of {', '.join(ORDERS)}")
    stmt, run_id = _filtered(session, ds, q, select(Sample, Prediction), need_run=q.order in SCORES)

    # Every order is a tuple of keys ending in the id, so pages never skip or repeat.
    if q.order == "id":
        keys = [(Sample.id, not q.reverse)]
    elif q.order == "random":
        rkey = (cast(Sample.id, BigInteger) * 2654435761) % 4294967311
        keys = [(rkey, not q.reverse), (Sample.id, True)]
    else:
        col, high_first = SCORES[q.order]
        descending = high_first != q.reverse
        # Samples without this score (no prediction, or no label for a label score) come last.
        missing = case((col.is_(None), 1), else_=0)
        keys = [(missing, True), (func.coalesce(col, 0.0), not descending), (Sample.id, True)]

    if q.cursor:
        values = _decode_cursor(q.cursor)
        if len(values) != len(keys):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "cursor does not fit this order")
        stmt = stmt.where(_after(keys, values))
    stmt = stmt.order_by(*[(k.asc() if asc else k.desc()) for k, asc in keys])
    key_cols = [k.label(f"_k{i}") for i, (k, _) in enumerate(keys)]
    return stmt.add_columns(*key_cols), run_id


def _filtered(session: Session, ds: Dataset, q: SampleQuery, stmt, *, need_run: bool):
    """stmt restricted to q's dataset, split, given and predicted class and reviewed flag."""
    run_id = q.run_id if q.run_id is not None else latest_run_id(session, ds.id)
    if q.run_id is not None:
        run = session.get(Run, q.run_id)
        if run is None or run.dataset_id != ds.id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {q.run_id} not found in dataset {ds.id}")
    if (need_run or q.predicted is not None or q.flagged is not None) and run_id is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"dataset {ds.id} has no finished run to rank by; train one first or use order=id",
        )
    stmt = stmt.where(Sample.dataset_id == ds.id)
    join_cond = and_(Prediction.sample_id == Sample.id, Prediction.run_id == (run_id if run_id is not None else -1))
    stmt = stmt.outerjoin(Prediction, join_cond)
    if q.split is not None:
        stmt = stmt.where(Sample.split == q.split.value)
    if q.label is not None:
        stmt = stmt.where(Sample.label == q.label)
    if q.predicted is not None:
        stmt = stmt.where(Prediction.label == q.predicted)
    if q.reviewed is not None:
        stmt = stmt.where(Sample.reviewed == q.reviewed)
    if q.flagged is not None:
        stmt = stmt.where(Prediction.flagged == q.flagged)
    return stmt, run_id


def list_samples(session: Session, ds: Dataset, q: SampleQuery) -> tuple[list[SampleRead], str | None, int | None]:
    """One page of samples, the most suspicious first under q.order, with keyset pagination."""
    limit = max(1, min(q.limit, MAX_LIMIT))
    stmt, run_id = _ranked(session, ds, q)
    rows = session.execute(stmt.limit(limit + 1)).all()

    items = [sample_read(r[0], r[1]) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = _cursor_of(rows[limit - 1])
    return items, next_cursor, run_id


def _cursor_of(row) -> str:
    """The cursor that lists the rows after this one (row = Sample, Prediction, *keys)."""
    return _encode_cursor([jsonable(v) for v in row[2:]])


@dataclass
class QueueHead:
    """The first sample of a queue at a cursor, the cursor just past it, and the one after it."""

    sample: Sample | None
    cursor_after: str | None
    upcoming: Sample | None
    run_id: int | None


def queue_head(session: Session, ds: Dataset, q: SampleQuery) -> QueueHead:
    """The sample a review queue shows next: the first one under q from q.cursor on."""
    stmt, run_id = _ranked(session, ds, q)
    rows = session.execute(stmt.limit(2)).all()
    if not rows:
        return QueueHead(None, None, None, run_id)
    return QueueHead(rows[0][0], _cursor_of(rows[0]), rows[1][0] if len(rows) > 1 else None, run_id)


def review_progress(session: Session, ds: Dataset, q: SampleQuery) -> tuple[int, int]:
    """(reviewed, total) over the samples that q's filters select, whatever q.reviewed says."""
    unfiltered = SampleQuery(split=q.split, label=q.label, predicted=q.predicted, run_id=q.run_id, flagged=q.flagged)
    reviewed = func.coalesce(func.sum(case((Sample.reviewed.is_(True), 1), else_=0)), 0)
    stmt, _ = _filtered(session, ds, unfiltered, select(reviewed, func.count(Sample.id)), need_run=False)
    done, total = session.execute(stmt).one()
    return int(done), int(total)


def _after(keys, values):
    """Rows strictly after `values` in the lexicographic order given by keys."""
    clauses = []
    for i, (key, asc) in enumerate(keys):
        prefix = [keys[j][0] == values[j] for j in range(i)]
        cmp = key > values[i] if asc else key < values[i]
        clauses.append(and_(*prefix, cmp) if prefix else cmp)
    return or_(*clauses) if clauses else literal(True)


def get_sample(session: Session, sample_id: int) -> Sample:
    s = session.get(Sample, sample_id)
    if s is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"sample {sample_id} not found")
    return s


def sample_history(session: Session, sample_id: int) -> list[LabelEventRead]:
    rows = session.execute(
        select(LabelEvent, User.username)
        .outerjoin(User, User.id == LabelEvent.user_id)
        .where(LabelEvent.sample_id == sample_id)
        .order_by(LabelEvent.id.desc())
    ).all()
    return [_event_read(e, username) for e, username in rows]


def sample_detail(session: Session, s: Sample, run_id: int | None = None) -> SampleRead:
    """A sample with its latest prediction and its label history."""
    run_id = run_id if run_id is not None else latest_run_id(session, s.dataset_id)
    p = None
    if run_id is not None:
        p = session.scalar(select(Prediction).where(Prediction.run_id == run_id, Prediction.sample_id == s.id))
    return sample_read(s, p, sample_history(session, s.id))


def parse_if_match(value: str | None) -> int:
    if value is None:
        raise HTTPException(
            status.HTTP_428_PRECONDITION_REQUIRED,
            "If-Match header required: send the sample's current version (e.g. If-Match: 3)",
        )
    v = value.strip()
    if v.startswith("W/"):
        v = v[2:]
    v = v.strip('"')
    if not v.isdigit() or not in_range(int(v)):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"If-Match must be a version number, not {value!r}")
    return int(v)


def update_sample(
    session: Session,
    sample_id: int,
    expected_version: int,
    change: SampleUpdate,
    user: User | None,
    source: str,
) -> Sample:
    """Apply change if the sample is still at expected_version; raise VersionConflict otherwise."""
    return change_sample(session, sample_id, expected_version, change, user, source)[0]


def change_sample(
    session: Session,
    sample_id: int,
    expected_version: int,
    change: SampleUpdate,
    user: User | None,
    source: str,
) -> tuple[Sample, LabelEvent | None]:
    """update_sample, also returning the label event it wrote (None when label and split stayed)."""
    s = get_sample(session, sample_id)
    ds = session.get(Dataset, s.dataset_id)
    fields = change.model_fields_set
    new_label = s.label
    new_split = s.split
    if "label" in fields:
        if change.label is None or change.label not in ds.classes:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"label must be one of the dataset's classes {ds.classes}, not {change.label!r}",
            )
        new_label = change.label
    if "split" in fields and change.split is not None:
        new_split = change.split.value
    if new_label is not None and new_split == Split.unlabelled.value:
        if "split" in fields and change.split == Split.unlabelled:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "a labelled sample cannot be in the unlabelled split")
        # An unlabelled sample that gets a label joins train (a dataset setting, on by default).
        if ds.settings.get("unlabelled_joins_train", True):
            new_split = Split.train.value
    if new_label is None and new_split != Split.unlabelled.value:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"an unlabelled sample cannot move to {new_split}; give it a label")

    reviewed = s.reviewed if change.reviewed is None else change.reviewed
    if "label" in fields:
        reviewed = True  # a label chosen by a person is a reviewed label
    return _write(session, s, expected_version, new_label, new_split, reviewed, user, source, change.reason)


def _write(
    session: Session,
    s: Sample,
    expected_version: int,
    new_label: str | None,
    new_split: str,
    reviewed: bool,
    user: User | None,
    source: str,
    reason: str | None,
) -> tuple[Sample, LabelEvent | None]:
    """The one conditional UPDATE every change goes through, plus its label event."""
    label_changed = new_label != s.label or new_split != s.split
    old_label, old_split = s.label, s.split
    now = utcnow()
    result = session.execute(
        update(Sample)
        .where(Sample.id == s.id, Sample.version == expected_version)
        .values(label=new_label, split=new_split, reviewed=reviewed, version=Sample.version + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 0:
        session.expire(s)
        session.refresh(s)
        raise VersionConflict(s)
    event = None
    if label_changed:
        version = bump_label_version(session, s.dataset_id)
        event = LabelEvent(
            dataset_id=s.dataset_id,
            sample_id=s.id,
            old_label=old_label,
            new_label=new_label,
            old_split=old_split,
            new_split=new_split,
            source=source,
            user_id=user.id if user else None,
            reason=reason,
            label_version=version,
            created_at=now,
        )
        session.add(event)
    session.flush()
    session.expire(s)
    session.refresh(s)
    return s, event


# --- undo and revert ----------------------------------------------------------------------


class EventSuperseded(Exception):
    """The event to revert is no longer the sample's latest: reverting it would undo later work."""

    def __init__(self, event: LabelEvent, current: Sample) -> None:
        self.event = event
        self.current = current


def get_event(session: Session, event_id: int) -> LabelEvent:
    event = session.get(LabelEvent, event_id)
    if event is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"label event {event_id} not found")
    return event


def latest_event_id(session: Session, sample_id: int) -> int | None:
    return session.scalar(select(func.max(LabelEvent.id)).where(LabelEvent.sample_id == sample_id))


def revert_event(
    session: Session,
    event_id: int,
    user: User | None,
    expected_version: int | None = None,
    *,
    force: bool = False,
    source: str = "annotator",
    reason: str | None = "undo",
) -> tuple[Sample, LabelEvent | None]:
    """Restore the label and split a sample had before event_id, as a new change.

    Refused with EventSuperseded when a later event exists (unless force), and with
    VersionConflict when the sample is no longer at expected_version (its current version
    when None). The sample goes back to unreviewed: a reverted label deserves another look.
    """
    event = get_event(session, event_id)
    s = get_sample(session, event.sample_id)
    # Read the version before the latest event: a change after this read fails the UPDATE.
    session.refresh(s)
    expected = s.version if expected_version is None else expected_version
    if not force and latest_event_id(session, s.id) != event.id:
        raise EventSuperseded(event, s)
    ds = session.get(Dataset, s.dataset_id)
    new_label = event.old_label
    if new_label is not None and new_label not in ds.classes:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"cannot restore {new_label!r}: it is no longer one of the dataset's classes",
        )
    new_split = event.old_split or s.split
    if new_label is None:
        new_split = Split.unlabelled.value
    elif new_split == Split.unlabelled.value:
        new_split = Split.train.value
    return _write(session, s, expected, new_label, new_split, False, user, source, reason)


def unreview(session: Session, sample_id: int, expected_version: int, user: User | None, source: str = "annotator") -> Sample:
    """Undo a 'keep': the sample goes back into the review queue, its label untouched."""
    return update_sample(session, sample_id, expected_version, SampleUpdate(reviewed=False), user, source)


def undo_change(
    session: Session,
    user: User | None,
    ds: Dataset,
    *,
    version: int,
    event_id: int | None = None,
    sample_id: int | None = None,
) -> Sample:
    """Undo one change from dataset ds's review queue or grid, if the sample is still at `version`.

    A label change (event_id) is reverted as a new change with reason "undo"; a keep
    (sample_id, no event) is un-reviewed. An event or sample of another dataset is 404: the
    undo steps come back from the browser, so they are checked like any id in a request.
    Raises VersionConflict or EventSuperseded.
    """
    if event_id is not None:
        if get_event(session, event_id).dataset_id != ds.id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"label event {event_id} not found in dataset {ds.id}")
        return revert_event(session, event_id, user, version, source="annotator", reason="undo")[0]
    if sample_id is None:
        raise ValueError("undo_change needs an event_id or a sample_id")
    if get_sample(session, sample_id).dataset_id != ds.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"sample {sample_id} not found in dataset {ds.id}")
    return unreview(session, sample_id, version, user)


# --- bulk changes -------------------------------------------------------------------------


@dataclass
class BulkResult:
    """What a bulk change did, sample by sample: nothing is overwritten on a conflict."""

    changed: list[tuple[Sample, LabelEvent]]
    kept: list[Sample]
    conflicts: list[Sample]
    skipped: list[tuple[int, str]]


def bulk_relabel(
    session: Session,
    ds: Dataset,
    items: list[tuple[int, int]],
    user: User | None,
    *,
    label: str | None = None,
    accept_predicted: bool = False,
    run_id: int | None = None,
    source: str = "annotator",
) -> BulkResult:
    """Set `label` (or each sample's predicted class) on (sample_id, expected_version) pairs.

    Each sample goes through the same conditional update as a single change; a sample that
    moved on since its version is reported in conflicts and left as it is.
    """
    if accept_predicted == (label is not None):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "give either a label or accept_predicted")
    if label is not None and label not in ds.classes:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"label must be one of the dataset's classes {ds.classes}, not {label!r}"
        )
    ids = [i for i, _ in items]
    owned = set(session.scalars(select(Sample.id).where(Sample.id.in_(ids), Sample.dataset_id == ds.id))) if ids else set()
    predicted: dict[int, str] = {}
    if accept_predicted:
        run_id = run_id if run_id is not None else latest_run_id(session, ds.id)
        if run_id is None:
            raise HTTPException(status.HTTP_409_CONFLICT, f"dataset {ds.id} has no finished run to take predictions from")
        if ids:
            predicted = dict(
                session.execute(
                    select(Prediction.sample_id, Prediction.label).where(
                        Prediction.run_id == run_id, Prediction.sample_id.in_(ids)
                    )
                ).all()
            )
    result = BulkResult([], [], [], [])
    for sample_id, version in items:
        if sample_id not in owned:
            result.skipped.append((sample_id, f"sample {sample_id} is not in dataset {ds.id}"))
            continue
        target = label if label is not None else predicted.get(sample_id)
        if target is None:
            result.skipped.append((sample_id, f"sample {sample_id} has no prediction"))
            continue
        try:
            s, event = change_sample(session, sample_id, version, SampleUpdate(label=target), user, source)
        except VersionConflict as conflict:
            result.conflicts.append(conflict.current)
            continue
        if event is None:
            result.kept.append(s)
        else:
            result.changed.append((s, event))
    return result


# --- history ------------------------------------------------------------------------------


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
    limit = max(1, min(limit, MAX_LIMIT))
    stmt = (
        select(LabelEvent, User.username, Sample.external_id, Sample.version)
        .join(Sample, Sample.id == LabelEvent.sample_id)
        .outerjoin(User, User.id == LabelEvent.user_id)
        .where(LabelEvent.dataset_id == ds.id)
    )
    if username is not None:
        stmt = stmt.where(User.username == username)
    if source is not None:
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
    return LabelEventRead(
        id=e.id,
        old_label=e.old_label,
        new_label=e.new_label,
        old_split=e.old_split,
        new_split=e.new_split,
        source=e.source,
        user=username,
        reason=e.reason,
        label_version=e.label_version,
        created_at=e.created_at,
    )


__all__ = ["SCORES", "ORDERS", "SampleQuery", "VersionConflict", "EventSuperseded", "BulkResult", "QueueHead"]
