"""Samples: ranked listing, reading, and label changes with optimistic concurrency.

A change is one conditional UPDATE (``WHERE version = :expected``): on either database
exactly one writer wins per version and the others see zero rows and get a conflict.
Every label or split change writes a label event and moves the dataset's label version on.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy import BigInteger, and_, case, cast, func, literal, or_, select, update
from sqlalchemy.orm import Session

from app.datasets.service import bump_label_version
from app.labels.schemas import LabelEventRead, PredictionRead, SampleRead, SampleUpdate
from app.models import Dataset, LabelEvent, Prediction, Run, Sample, Split, User, utcnow

# Score name -> (column, True when a high value is suspicious).
SCORES: dict[str, tuple[Any, bool]] = {
    "loss": (Prediction.loss, True),
    "self_confidence": (Prediction.self_confidence, False),
    "normalized_margin": (Prediction.normalized_margin, False),
    "confusion_margin": (Prediction.confusion_margin, False),
    "entropy": (Prediction.entropy, True),
    "aum": (Prediction.aum, False),
}
ORDERS = [*SCORES, "id", "random"]
MAX_LIMIT = 500


class VersionConflict(Exception):
    def __init__(self, current: Sample) -> None:
        self.current = current


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
        probs=p.probs,
        loss=p.loss,
        self_confidence=p.self_confidence,
        normalized_margin=p.normalized_margin,
        confusion_margin=p.confusion_margin,
        confusion_pair=[p.confusion_a, p.confusion_b],
        entropy=p.entropy,
        aum=p.aum,
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
        if not isinstance(values, list):
            raise ValueError
        return values
    except ValueError:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid cursor") from None


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


def list_samples(session: Session, ds: Dataset, q: SampleQuery) -> tuple[list[SampleRead], str | None, int | None]:
    """One page of samples, the most suspicious first under q.order, with keyset pagination."""
    if q.order not in ORDERS:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"order must be one of {', '.join(ORDERS)}")
    limit = max(1, min(q.limit, MAX_LIMIT))
    run_id = q.run_id if q.run_id is not None else latest_run_id(session, ds.id)
    if q.run_id is not None:
        run = session.get(Run, q.run_id)
        if run is None or run.dataset_id != ds.id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {q.run_id} not found in dataset {ds.id}")
    if (q.order in SCORES or q.predicted is not None) and run_id is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"dataset {ds.id} has no finished run to rank by; train one first or use order=id",
        )

    stmt = select(Sample, Prediction).where(Sample.dataset_id == ds.id)
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
    rows = session.execute(stmt.add_columns(*key_cols).limit(limit + 1)).all()

    items = [sample_read(r[0], r[1]) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = _encode_cursor([_jsonable(v) for v in last[2:]])
    return items, next_cursor, run_id


def _jsonable(v):
    return float(v) if isinstance(v, float) else v


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
    return [
        LabelEventRead(
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
        for e, username in rows
    ]


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
    if not v.isdigit():
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

    label_changed = new_label != s.label or new_split != s.split
    reviewed = s.reviewed if change.reviewed is None else change.reviewed
    if "label" in fields:
        reviewed = True  # a label chosen by a person is a reviewed label
    old_label, old_split = s.label, s.split
    now = utcnow()
    result = session.execute(
        update(Sample)
        .where(Sample.id == sample_id, Sample.version == expected_version)
        .values(label=new_label, split=new_split, reviewed=reviewed, version=Sample.version + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 0:
        session.expire(s)
        session.refresh(s)
        raise VersionConflict(s)
    if label_changed:
        version = bump_label_version(session, ds.id)
        session.add(
            LabelEvent(
                dataset_id=ds.id,
                sample_id=s.id,
                old_label=old_label,
                new_label=new_label,
                old_split=old_split,
                new_split=new_split,
                source=source,
                user_id=user.id if user else None,
                reason=change.reason,
                label_version=version,
                created_at=now,
            )
        )
    session.flush()
    session.expire(s)
    session.refresh(s)
    return s


__all__ = ["SCORES", "ORDERS", "SampleQuery", "VersionConflict"]
