"""Samples read: the ranked, filtered listing with keyset cursors and one sample with its
history (the review queue's hand-outs build on the listing: app.labels.queue).

Every order is a tuple of sort keys ending in the sample id, so a cursor (the keys of the
last row, base64 JSON) continues a listing without skipping or repeating a sample even while
other people change labels.
"""

from __future__ import annotations

import base64
import functools
import json
import math
from typing import Any

from sqlalchemy import Float, Integer, and_, bindparam, literal, or_, select, union_all
from sqlalchemy.orm import Session, object_session

from app.datasets.tagsets import to_list
from app.errors import Conflict, Invalid, NotFound
from app.jsonsafe import jsonable
from app.labels.schemas import LabelEventRead, PredictionRead, SampleRead
from app.labels.prepared import BoundStatement, run_generic
from app.models import Dataset, Prediction, Run, Sample
from app.models.tables import shuffle_key
from app.labels.claims import others_claim
from app.labels.history import sample_histories, sample_history
from app.labels.ranges import (SampleQuery, Shape, by_predictions, index_ranges, merged_by_key, range_conditions,
                               range_params)
from app.labels.records import blind_exclusions
from app.labels.tag_filters import ERROR_FILTERS, by_tag, check_error_filters, has_tag, tag_error, tag_patterns
from app.runs.retention import check_kept
from app.runs.service import current_run, latest_run_id

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
    "outlier": (Prediction.outlier, True),
}
ORDERS = [*SCORES, "id", "random"]
MAX_LIMIT = 500


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

def sample_read(s: Sample, p: Prediction | None = None, history: list[LabelEventRead] | None = None) -> SampleRead:
    """The sample's row as SampleRead, with its prediction (under one run) and history if given."""
    return SampleRead.model_validate(s).model_copy(
        update={
            "image_url": f"/api/v1/samples/{s.id}/image" if s.image_blob else None,
            "prediction": PredictionRead.model_validate(p) if p is not None else None,
            "history": history,
            "labels": to_list(s.label) if _multilabel(s) else None,
        }
    )


def _multilabel(s: Sample) -> bool:
    """Whether the sample's dataset is multi-label: its row from the session's identity map,
    where the route that read the sample has nearly always loaded it already."""
    session = object_session(s)
    ds = session.get(Dataset, s.dataset_id) if session is not None else None
    return bool(ds is not None and ds.multilabel)


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
        raise Invalid("invalid cursor", errors=[{"field": "cursor", "message": "not a cursor this API gave out"}]) from None


def _cursor_value(v) -> bool:
    """A sort key a cursor may carry: what cursor_of writes (ids, scores, text), in the range
    the database compares without overflowing."""
    if v is None or isinstance(v, str):
        return v is None or len(v) <= 1000
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return abs(v) <= 2**53
    return isinstance(v, float) and math.isfinite(v)


def listing_statements(session: Session, ds: Dataset, q: SampleQuery, limit: int) -> tuple[list, int | None]:
    """The statements that list q's samples in order from q.cursor, each with its limit, and
    the run they use. Their rows are (Sample, Prediction, *sort keys); run them in turn until
    `limit` rows are had.

    Every order is a tuple of keys ending in the sample id, so pages never skip or repeat. An
    order by a score is two statements, so that an index on (run_id, score) serves each: the
    samples that have the score, walked along that index, then those without it (no
    prediction under the run, or none for this score: the unlabelled, for a score that needs
    a label), by id. Their keys are (0, score, id) and (1, 0.0, id), as one ordering.
    """
    if q.order not in ORDERS:
        expected = f"one of {', '.join(ORDERS)}"
        raise Invalid(f"order must be {expected}", errors=[{"field": "order", "message": f"expected {expected}"}])
    check_error_filters(ds, q.missed, q.extra)
    values = _decode_cursor(q.cursor) if q.cursor else None
    if q.order in SCORES:
        return _score_statements(session, ds, q, limit, values)
    if values is not None:  # by id: (id,); at random: (shuffle key, id); whole numbers both
        _check_cursor(values, 1 if q.order == "id" else 2)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise Invalid("cursor does not fit this order", errors=[{"field": "cursor", "message": "from another order"}])
    run_id = _run_of(session, ds, q, need_run=False)
    if run_id is not None and by_predictions(q):
        return [_from_predictions(ds, q, run_id, limit, values)], run_id
    if q.order == "id":
        keys = [(Sample.id, not q.reverse)]
    else:
        rkey = shuffle_key(Sample.id)
        keys = [(rkey, not q.reverse), (Sample.id, True)]
    join_on = None
    if values is not None:
        if q.order == "id":
            # The same bound on the predictions' side of the join, so that a merge join
            # starts its index there too, not at the run's first sample.
            join_on = Prediction.sample_id < values[0] if q.reverse else Prediction.sample_id > values[0]
    stmt = _filter(select(Sample, Prediction), ds, q, run_id, join_on=join_on)
    if values is not None:
        stmt = stmt.where(_after(keys, values))
    stmt = stmt.order_by(*[(k.asc() if asc else k.desc()) for k, asc in keys])
    return [stmt.add_columns(*[k.label(f"_k{i}") for i, (k, _) in enumerate(keys)]).limit(limit)], run_id


@functools.lru_cache(maxsize=256)
def _merged(shape: Shape, bound: bool):
    """The statement that merges one ordered, limited read per index range and reads the
    page's samples and predictions, keyed (0, score, sid), or (1, 0.0, sid) for the tail.

    Binds: run, ds, lim, and per range i: g{i} (unless null), p{i} (cell ranges), r{i}, f{i};
    the checks' values; with `bound`, the cursor: v and last (by the score) or after (tail);
    with shape.claims, claimant and claim_now."""
    col = SCORES[shape.order][0]
    legs = []
    for i, given_null in enumerate(shape.ranges):
        leg = select(Prediction.sample_id.label("sid"), col.label("score")).where(*range_conditions(shape, i, given_null))
        if shape.tail:
            leg = leg.where(col.is_(None))
            if bound:
                leg = leg.where(Prediction.sample_id > bindparam("after"))
            # By the score (all null here), then the id: the index's own order, which Postgres
            # cannot see behind `IS NULL` with the id alone, and sorts the whole tail instead.
            leg = leg.order_by(col.asc(), Prediction.sample_id.asc())
        else:
            leg = leg.where(col.is_not(None))
            if bound:
                # `col <= v AND (...)` rather than the OR alone, so the index range starts at v.
                v, last = bindparam("v", type_=Float), bindparam("last")
                if shape.descending:
                    leg = leg.where(col <= v, or_(col < v, Prediction.sample_id > last))
                else:
                    leg = leg.where(col >= v, or_(col > v, Prediction.sample_id > last))
            leg = leg.order_by(col.desc() if shape.descending else col.asc(), Prediction.sample_id.asc())
        legs.append(leg.limit(bindparam("lim", type_=Integer, literal_execute=True)).subquery())
    merged = legs[0] if len(legs) == 1 else union_all(*[select(*sq.c) for sq in legs]).subquery()
    score = merged.c.score
    if shape.tail:
        # (score, sid) as in each range, though the score is null: so the ranges are merged as
        # they are read (Merge Append), not each read to its limit and sorted.
        order, keys = [score.asc(), merged.c.sid.asc()], (literal(1), literal(0.0), merged.c.sid)
    else:
        order = [score.desc() if shape.descending else score.asc(), merged.c.sid.asc()]
        keys = (literal(0), score, merged.c.sid)
    return (
        select(Sample, Prediction)
        .select_from(merged)
        .join(Prediction, and_(Prediction.run_id == bindparam("run"), Prediction.sample_id == merged.c.sid))
        .join(Sample, Sample.id == merged.c.sid)
        .where(Sample.dataset_id == bindparam("ds"))
        .order_by(*order)
        .add_columns(*[k.label(f"_k{i}") for i, k in enumerate(keys)])
        .limit(bindparam("lim", type_=Integer, literal_execute=True))
    )


def _from_predictions(ds: Dataset, q: SampleQuery, run_id: int, limit: int, values: list | None):
    """A listing by id or at random whose filters keep only samples the run scored: the run's
    predictions in the filters' index ranges, walked in the order and merged (app.labels.ranges)."""
    random = q.order == "random"
    params = {"run": run_id, "ds": ds.id, "lim": limit}
    if values is not None:  # checked by listing_statements
        params |= {"v": values[0], "last": values[1]} if random else {"after": values[0]}
    cell, ranges, checks, filter_values = index_ranges(ds, q)
    params |= filter_values | range_params(cell, ranges)
    if q.claimant is not None:
        params |= {"claimant": q.claimant, "claim_now": q.claim_now}
    shape = Shape(q.order, q.reverse, cell, tuple(cell and r["g"] is None for r in ranges), tuple(checks), tail=False,
                  claims=q.claimant is not None, blind=q.blind)
    return BoundStatement(merged_by_key(shape, values is not None), params)


def _score_statements(session: Session, ds: Dataset, q: SampleQuery, limit: int, values: list | None):
    descending = SCORES[q.order][1] != q.reverse
    if values is not None:
        _check_cursor(values, 3)
    run_id, info = _run_of(session, ds, q, need_run=True, with_info=True)
    through = info.get("covers_through")
    if not isinstance(through, int) or isinstance(through, bool):
        return _statements_without_record(ds, q, run_id, descending, limit, values), run_id
    cell, ranges, checks, common = index_ranges(ds, q)
    common |= {"run": run_id, "ds": ds.id, "lim": limit} | range_params(cell, ranges)
    claims = q.claimant is not None
    if claims:
        common |= {"claimant": q.claimant, "claim_now": q.claim_now}
    given_null = tuple(cell and r["g"] is None for r in ranges)
    statements = []
    if values is None or values[0] == 0:
        params = dict(common)
        if values is not None:
            if not isinstance(values[1], int | float):
                raise Invalid("cursor does not fit this order", errors=[{"field": "cursor", "message": "from another order"}])
            params |= {"v": values[1], "last": values[2]}
        shape = Shape(q.order, descending, cell, given_null, tuple(checks), tail=False, claims=claims, blind=q.blind)
        statements.append(BoundStatement(_merged(shape, values is not None), params))
    after = values[2] if values is not None and values[0] == 1 else None
    # The samples without the score: the run's predictions whose score is null, by sample id
    # along the same indexes, then the samples above the ones the run read (docs/queries.md).
    if after is None or after < through:
        shape = Shape(q.order, descending, cell, given_null, tuple(checks), tail=True, claims=claims, blind=q.blind)
        statements.append(BoundStatement(_merged(shape, after is not None), {**common, "after": after}))
    keys = (literal(1).label("_k0"), literal(0.0).label("_k1"), Sample.id.label("_k2"))
    newer = _filter(select(Sample, Prediction), ds, q, run_id, by_id=True).where(Sample.id > max(after or 0, through))
    statements.append(newer.order_by(Sample.id.asc()).add_columns(*keys).limit(limit))
    return statements, run_id


def _statements_without_record(ds: Dataset, q: SampleQuery, run_id: int, descending: bool, limit: int,
                               values: list | None) -> list:
    """A run from before info["covers_through"]: its scored samples walked along the score's
    index with every filter checked on the sample, then every sample of the dataset without
    the score, checked against the run one by one."""
    col = SCORES[q.order][0]
    statements = []
    if values is None or values[0] == 0:
        scored = _filter(select(Sample, Prediction), ds, q, run_id, inner=True).where(col.is_not(None))
        if values is not None:
            v, last = values[1], values[2]
            if not isinstance(v, int | float):
                raise Invalid("cursor does not fit this order", errors=[{"field": "cursor", "message": "from another order"}])
            if descending:
                scored = scored.where(col <= v, or_(col < v, Sample.id > last))
            else:
                scored = scored.where(col >= v, or_(col > v, Sample.id > last))
        scored = scored.order_by(col.desc() if descending else col.asc(), Sample.id.asc())
        keys = (literal(0).label("_k0"), col.label("_k1"), Sample.id.label("_k2"))
        statements.append(scored.add_columns(*keys).limit(limit))
    after = values[2] if values is not None and values[0] == 1 else None
    keys = (literal(1).label("_k0"), literal(0.0).label("_k1"), Sample.id.label("_k2"))
    missing = _filter(select(Sample, Prediction), ds, q, run_id).where(col.is_(None))
    if after is not None:
        missing = missing.where(Sample.id > after)
    statements.append(missing.order_by(Sample.id.asc()).add_columns(*keys).limit(limit))
    return statements


def _check_cursor(values: list, n: int) -> None:
    if len(values) != n or (n == 3 and values[0] not in (0, 1)) or not isinstance(values[-1], int):
        raise Invalid("cursor does not fit this order", errors=[{"field": "cursor", "message": "from another order"}])


def listed_rows(session: Session, ds: Dataset, q: SampleQuery, limit: int) -> tuple[list, int | None]:
    """Up to `limit` rows (Sample, Prediction, *keys) of q's listing from its cursor, and the run."""
    statements, run_id = listing_statements(session, ds, q, limit)
    rows: list = []
    for stmt in statements:
        stmt = stmt.limit(limit - len(rows))
        rows += run_generic(session, stmt) if isinstance(stmt, BoundStatement) else session.execute(stmt).all()
        if len(rows) >= limit:
            break
    return rows, run_id


def filtered(session: Session, ds: Dataset, q: SampleQuery, stmt, *, need_run: bool):
    """stmt restricted to q's filters, joined to q's run's predictions; and that run."""
    check_error_filters(ds, q.missed, q.extra)
    run_id = _run_of(session, ds, q, need_run)
    return _filter(stmt, ds, q, run_id), run_id


def _run_of(session: Session, ds: Dataset, q: SampleQuery, need_run: bool, with_info: bool = False):
    """The run q lists by: its own (checked to be the dataset's) or the latest finished one;
    with_info, (that run, its info), read in the same query."""
    info: dict = {}
    if q.run_id is not None:
        run = session.get(Run, q.run_id)
        if run is None or run.dataset_id != ds.id:
            raise NotFound(f"run {q.run_id} not found in dataset {ds.id}")
        check_kept(run)
        run_id, info = run.id, run.info or {}
    elif with_info:
        latest = session.execute(select(Run.id, Run.info).where(Run.id == current_run(ds.id))).first()
        run_id, info = (latest[0], latest[1] or {}) if latest is not None else (None, {})
    else:
        run_id = latest_run_id(session, ds.id)
    if (need_run or q.predicted is not None or q.flagged is not None or q.missed or q.extra) and run_id is None:
        raise Conflict(f"dataset {ds.id} has no finished run to rank by; train one first or use order=id")
    return (run_id, info) if with_info else run_id


def _filter(stmt, ds: Dataset, q: SampleQuery, run_id: int | None, inner: bool = False, by_id: bool = False,
            join_on=None):
    """stmt restricted to q's dataset, split, given and predicted class, reviewed and flagged
    flags and (a hand-out's) others' claims, joined to the run's predictions (inner: only
    samples that have one; join_on: a further condition of the join, which must not change
    its result). With by_id, the dataset is checked row by row (`dataset_id + 0`), so that no
    index on it is chosen over the primary key's range that the statement reads."""
    stmt = stmt.where((Sample.dataset_id + 0 if by_id else Sample.dataset_id) == ds.id)
    join_cond = and_(Prediction.sample_id == Sample.id, Prediction.run_id == (run_id if run_id is not None else -1),
                     *([join_on] if join_on is not None else []))
    stmt = stmt.join(Prediction, join_cond) if inner else stmt.outerjoin(Prediction, join_cond)
    if q.split is not None:
        stmt = stmt.where(Sample.split == q.split.value)
    if q.label is not None:
        stmt = stmt.where(has_tag(Sample.label, tag_patterns(q.label)) if by_tag(ds, q.label) else Sample.label == q.label)
    if q.predicted is not None:
        stmt = stmt.where(has_tag(Prediction.label, tag_patterns(q.predicted)) if by_tag(ds, q.predicted)
                          else Prediction.label == q.predicted)
    for name, missed in ERROR_FILTERS:
        if getattr(q, name) is not None:
            stmt = stmt.where(tag_error(Sample.label, Prediction.label, tag_patterns(getattr(q, name)), missed))
    if q.reviewed is not None:
        stmt = stmt.where(Sample.reviewed == q.reviewed)
    if q.flagged is not None:
        stmt = stmt.where(Prediction.flagged == q.flagged)
    if q.claimant is not None:
        stmt = stmt.where(~others_claim(Sample.id, q.claimant, q.claim_now))
        if q.blind:
            stmt = stmt.where(*blind_exclusions(Sample.id, q.claimant))
    return stmt


def list_samples(session: Session, ds: Dataset, q: SampleQuery) -> tuple[list[SampleRead], str | None, int | None]:
    """One page of samples, the most suspicious first under q.order, with keyset pagination."""
    limit = max(1, min(q.limit, MAX_LIMIT))
    rows, run_id = listed_rows(session, ds, q, limit + 1)

    items = [sample_read(r[0], r[1]) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = cursor_of(rows[limit - 1])
    return items, next_cursor, run_id


def cursor_of(row) -> str:
    """The cursor that lists the rows after this one (row = Sample, Prediction, *keys)."""
    return _encode_cursor([jsonable(v) for v in row[2:]])


def _after(keys, values):
    """Rows strictly after `values` in the lexicographic order given by keys: the first key
    bounded on its own as well (`k0 >= v0 AND (...)`), so an index range can start there."""
    clauses = []
    for i, (key, asc) in enumerate(keys):
        prefix = [keys[j][0] == values[j] for j in range(i)]
        cmp = key > values[i] if asc else key < values[i]
        clauses.append(and_(*prefix, cmp) if prefix else cmp)
    if not clauses:
        return literal(True)
    first, asc = keys[0]
    bound = first >= values[0] if asc else first <= values[0]
    return and_(bound, or_(*clauses))

def sample_detail(session: Session, s: Sample, run_id: int | None = None) -> SampleRead:
    """A sample with its latest prediction and its label history."""
    run_id = run_id if run_id is not None else latest_run_id(session, s.dataset_id)
    p = None
    if run_id is not None:
        p = session.scalar(select(Prediction).where(Prediction.run_id == run_id, Prediction.sample_id == s.id))
    return sample_read(s, p, sample_history(session, s.id))


def sample_details(session: Session, ds: Dataset, sample_ids: list[int]) -> dict[int, SampleRead]:
    """sample_detail of each of these samples of ds, in three queries whatever their number."""
    samples = session.scalars(select(Sample).where(Sample.id.in_(sample_ids), Sample.dataset_id == ds.id)).all()
    run_id = latest_run_id(session, ds.id)
    preds = {} if run_id is None else {p.sample_id: p for p in session.scalars(
        select(Prediction).where(Prediction.run_id == run_id, Prediction.sample_id.in_(sample_ids)))}
    histories = sample_histories(session, sample_ids)
    return {s.id: sample_read(s, preds.get(s.id), histories[s.id]) for s in samples}
