"""The index ranges a listing merges (docs/queries.md, Orders): which ranges of a
predictions index a query's filters allow, the conditions of one range's walk, and the
merged statement of a listing by id or at random whose filters need the run's predictions.

A score listing walks ix_predictions_<score> or ix_predictions_cell_<score>
(app.labels.queries); a listing by id or at random with a flagged, predicted or tag-error
filter walks ix_predictions_[cell_]by_id or ix_predictions_[cell_]random, the same leading
columns then the order's key, so that it reads at most ranges x page index entries wherever
in that order the matches lie.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, Integer, and_, bindparam, or_, select, union_all

from app.labels.claims import others_claim
from app.labels.records import blind_exclusions
from app.labels.tag_filters import entry_checks, error_check, has_tag
from app.models import Dataset, Prediction, Sample, Split
from app.models.listing_indexes import id_key, random_key


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
    missed: str | None = None  # multi-label: the given set holds this tag, the predicted set lacks it
    extra: str | None = None  # multi-label: the predicted set holds this tag, the given set lacks it
    # A hand-out's: leave out the samples someone other than this user has a live claim on.
    claimant: int | None = None
    claim_now: datetime | None = None
    # A second-opinion queue's (overlap k > 1): leave out what the claimant answered and
    # what is complete (docs/annotations.md).
    blind: bool = False


# At most this many index ranges are merged for one listing; a class filter over more
# classes than that walks the first index and checks the classes row by row.
MAX_RANGES = 64


@dataclass(frozen=True)
class Shape:
    """What a merged listing's statements depend on, apart from the values they bind: they
    are built once per shape (building one of 44 ranges costs more than running it)."""

    order: str
    descending: bool
    cell: bool  # ix_predictions_cell_<order> (a class filter), else ix_predictions_<order>
    ranges: tuple[bool, ...]  # per range: its given class is null (an unlabelled sample's)
    checks: tuple[str, ...]  # filters checked on each index entry: split, label, predicted
    tail: bool  # the samples without the score, by id, else those with it, by the score
    claims: bool  # leave out the samples others hold (binds claimant and claim_now)
    blind: bool = False  # and those the claimant answered or that are complete (k > 1)


def index_ranges(ds: Dataset, q: SampleQuery) -> tuple[bool, list[dict], list[str], dict]:
    """The index ranges a score listing reads, each as the values of the index's leading
    columns, the filters left to check on each entry, and their values (docs/queries.md).

    Without a class filter: ix_predictions_<score>, one range per reviewed x flagged value
    the filters allow. With one: ix_predictions_cell_<score>, one range per given class x
    predicted class x reviewed x flagged value they allow (the given class of an unlabelled
    sample is null), unless that is more than MAX_RANGES."""
    reviewed = [q.reviewed] if q.reviewed is not None else [False, True]
    flagged = [q.flagged] if q.flagged is not None else [False, True]
    base = [{"r": r, "f": f} for r in reviewed for f in flagged]
    checks, values = [], {}
    if q.split is not None:
        checks.append("split")
        values["split"] = q.split.value
    if ds.multilabel:  # sets, not classes: no range per class; each filter checked on the entry
        more, more_values = entry_checks(q.label, q.predicted, q.missed, q.extra)
        return False, base, checks + more, values | more_values
    if q.label is None and q.predicted is None:
        return False, base, checks, values
    classes = list(ds.classes or [])
    given = [q.label] if q.label is not None else [*classes, None]
    predicted = [q.predicted] if q.predicted is not None else classes
    if len(given) * len(predicted) * len(base) <= MAX_RANGES:
        return True, [{"g": g, "p": p, **b} for g in given for p in predicted for b in base], checks, values
    for name, value in (("label", q.label), ("predicted", q.predicted)):
        if value is not None:
            checks.append(name)
            values[name] = value
    return False, base, checks, values


def _tag_check(column_of, name: str):
    return lambda: has_tag(column_of(), [bindparam(f"{name}{i}") for i in range(4)])


CHECKS = {
    "split": lambda: Prediction.sample_split == bindparam("split"),
    "label": lambda: Prediction.sample_label == bindparam("label"),
    "predicted": lambda: Prediction.label == bindparam("predicted"),
    # A multi-label dataset's class filters: the set holds the tag (docs/rest.md).
    "label_tag": _tag_check(lambda: Prediction.sample_label, "label_tag"),
    "predicted_tag": _tag_check(lambda: Prediction.label, "predicted_tag"),
    "missed": lambda: error_check("missed"),  # the run's tag errors (app.labels.tag_filters)
    "extra": lambda: error_check("extra"),
}


def range_params(cell: bool, ranges: list[dict]) -> dict:
    """The bound values of each range's leading columns: r{i}, f{i}, and for a cell range
    p{i} and g{i} (none for a null given class, which the statement writes as IS NULL)."""
    params: dict = {}
    for i, r in enumerate(ranges):
        params |= {f"r{i}": r["r"], f"f{i}": r["f"]}
        if cell:
            params |= {f"g{i}": r["g"], f"p{i}": r["p"]} if r["g"] is not None else {f"p{i}": r["p"]}
    return params


def range_conditions(shape: Shape, i: int, given_null: bool) -> list:
    """The conditions of range i's walk: the run, the index's leading columns, the checks on
    each entry, and a hand-out's claims and second-opinion exclusions."""
    prefix = []
    if shape.cell:
        given = Prediction.sample_label.is_(None) if given_null else Prediction.sample_label == bindparam(f"g{i}")
        prefix += [given, Prediction.label == bindparam(f"p{i}")]
    prefix += [Prediction.sample_reviewed == bindparam(f"r{i}"), Prediction.flagged == bindparam(f"f{i}")]
    conditions = [Prediction.run_id == bindparam("run"), *prefix, *[CHECKS[c]() for c in shape.checks]]
    if shape.claims:
        # Checked on each entry as the range is walked: claimed samples are skipped and the
        # walk still stops at its limit (docs/queries.md, Claims).
        conditions.append(~others_claim(Prediction.sample_id))
    if shape.blind:
        conditions += blind_exclusions(Prediction.sample_id)
    return conditions


def by_predictions(q: SampleQuery) -> bool:
    """Whether a listing by id or at random keeps only samples with a prediction under the run
    (a flagged, predicted or tag-error filter), so that it can walk the run's predictions."""
    return q.flagged is not None or q.predicted is not None or bool(q.missed) or bool(q.extra)


@functools.lru_cache(maxsize=256)
def merged_by_key(shape: Shape, bound: bool):
    """A listing by id or at random (shape.order; shape.descending: from the key's top) of the
    run's predictions in the shape's ranges, each range walked along
    ix_predictions_[cell_]<order> from the cursor and limited to the page, the walks merged;
    keyed as the listing from samples is: (sid,) by id, (shuffle key, sid) at random.

    Binds: run, ds, lim, the ranges' values (range_params), the checks' values; with
    `bound`, the cursor: after (by id), v and last (at random); with shape.claims, claimant
    and claim_now."""
    random = shape.order == "random"
    # The order, as an expression that only these indexes hold (app.models.listing_indexes).
    key = random_key(Prediction.sample_id) if random else id_key(Prediction.sample_id)
    legs = []
    for i, given_null in enumerate(shape.ranges):
        leg = select(Prediction.sample_id.label("sid"), key.label("k")).where(*range_conditions(shape, i, given_null))
        if bound and random:
            v, last = bindparam("v", type_=BigInteger), bindparam("last")
            leg = leg.where(key <= v, or_(key < v, Prediction.sample_id > last)) if shape.descending else \
                leg.where(key >= v, or_(key > v, Prediction.sample_id > last))
        elif bound:
            leg = leg.where(key < bindparam("after") if shape.descending else key > bindparam("after"))
        leg = leg.order_by(key.desc() if shape.descending else key.asc())
        legs.append(leg.limit(bindparam("lim", type_=Integer, literal_execute=True)).subquery())
    merged = legs[0] if len(legs) == 1 else union_all(*[select(*sq.c) for sq in legs]).subquery()
    k, sid = merged.c.k, merged.c.sid
    keys = [k, sid] if random else [sid]
    return (
        select(Sample, Prediction)
        .select_from(merged)
        .join(Prediction, and_(Prediction.run_id == bindparam("run"), Prediction.sample_id == sid))
        .join(Sample, Sample.id == sid)
        .where(Sample.dataset_id == bindparam("ds"))
        .order_by(k.desc() if shape.descending else k.asc(), sid.asc())
        .add_columns(*[c.label(f"_k{i}") for i, c in enumerate(keys)])
        .limit(bindparam("lim", type_=Integer, literal_execute=True))
    )
