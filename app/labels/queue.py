"""The review queue: what an annotator is handed next, claimed for them (app.labels.claims),
for the browser's one-by-one queue and grid and for REST clients (GET .../queue); and the
queue's progress."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from app.labels import annotations, claims, queries
from app.labels.queries import SampleQuery
from app.labels.schemas import SampleRead
from app.models import Dataset, Prediction, Sample, User, utcnow
from app.runs.service import latest_run_id

# A hand-out lists and claims at most this many times. It lists again only after losing a
# race for a sample, and then leaves out what the winner took: many rounds mean many rivals.
ROUNDS = 30


@dataclass
class HandOut:
    """What a hand-out gave: the rows (Sample, Prediction, *sort keys) in queue order, the run
    they are ranked by, and when their claims end."""

    rows: list
    run_id: int | None
    until: datetime


def hand_out(session: Session, ds: Dataset, q: SampleQuery, user: User, n: int, seconds: int,
             leave_out: tuple[int, ...] = (), skip: tuple[int, ...] = ()) -> HandOut:
    """Up to n samples of q's listing from its cursor, each claimed for `user` until now +
    seconds and held by no one else when claimed; the user's other claims in the dataset end.
    In a second-opinion queue (q.blind) samples that others have started come first, oldest
    first, except those in leave_out (what the annotator skipped). Samples in `skip` are left
    out of the listing too (a REST client's pass-overs; the browser moves its cursor instead).
    Commits."""
    now = utcnow()
    until = now + timedelta(seconds=seconds)
    q = replace(q, claimant=user.id, claim_now=now)
    leave_out = tuple(leave_out) + tuple(skip)
    skipped = set(skip)
    rows: list = []
    run_id = None
    for _ in range(ROUNDS):
        started = _started(session, ds, q, user, n, leave_out) if q.blind else []
        listed, run_id = queries.listed_rows(session, ds, q, n + len(skipped)) if len(started) < n else ([], None)
        ids = {r[0].id for r in started} | skipped
        listed = started + [r for r in listed if r[0].id not in ids][: n - len(started)]
        versions = claims.take(session, ds.id, user.id, [r[0].id for r in listed], now, until)
        # A listing reads what was committed when it began; a rival who submitted one of its
        # samples since has released the claim too, so the take found it free: the versions
        # the take read say which to leave out (else a sample already done, at a version that
        # can only conflict, would be handed out).
        changed = [r[0].id for r in listed if r[0].id in versions and versions[r[0].id] != r[0].version]
        if changed:
            claims.release_sample(session, changed, user.id)
        rows = [r for r in listed if r[0].id in versions and r[0].id not in changed]
        if len(rows) == len(listed):
            break
        # Lost a race: the rival's claims are committed (that is how they won), so the next
        # listing leaves them out; commit first so that what was won stops blocking others,
        # and read the samples afresh.
        session.commit()
        session.expire_all()
    session.commit()
    if run_id is None:  # every sample came from those others started: the run the listing would use
        run_id = q.run_id if q.run_id is not None else latest_run_id(session, ds.id)
    return HandOut(rows, run_id, until)


def _started(session: Session, ds: Dataset, q: SampleQuery, user: User, n: int, leave_out: tuple[int, ...]) -> list:
    """The rows (Sample, Prediction) of samples others have started answering that q hands out."""
    ids = annotations.pending_ids(session, ds, user, n, leave_out)
    if not ids:
        return []
    stmt, _ = queries.filtered(session, ds, q, select(Sample, Prediction), need_run=False)
    return session.execute(stmt.where(Sample.id.in_(ids)).order_by(Sample.id)).all()


def queue_items(session: Session, ds: Dataset, q: SampleQuery, user: User, seconds: int,
                skip: tuple[int, ...] = ()) -> tuple[list[SampleRead], HandOut]:
    """The REST queue: up to q.limit unreviewed samples claimed for the user, as /samples lists
    them, none of those in skip."""
    out = hand_out(session, ds, replace(q, reviewed=False, cursor=None), user, q.limit, seconds, skip=skip)
    return [queries.sample_read(r[0], r[1]) for r in out.rows], out


@dataclass
class QueueHead:
    """The first sample of a queue at a cursor, the cursor just past it, and the one after it."""

    sample: Sample | None
    cursor_after: str | None
    upcoming: Sample | None
    run_id: int | None


def claimed_head(session: Session, ds: Dataset, q: SampleQuery, user: User, seconds: int,
                 leave_out: tuple[int, ...] = ()) -> QueueHead:
    """The sample the browser queue shows next (the first under q from q.cursor on that no one
    else holds) and the one after it, both claimed for the user. A sample others started
    (second-opinion queues) leaves the cursor where it is: skipping it puts it in leave_out."""
    rows = hand_out(session, ds, q, user, 2, seconds, leave_out).rows
    if not rows:
        return QueueHead(None, None, None, None)
    after = queries.cursor_of(rows[0]) if len(rows[0]) > 2 else q.cursor
    return QueueHead(rows[0][0], after, rows[1][0] if len(rows) > 1 else None, None)


def claimed_page(session: Session, ds: Dataset, q: SampleQuery, user: User, seconds: int) -> tuple[list[SampleRead], str | None]:
    """A grid page: up to q.limit samples under q from its cursor, claimed for the user, and
    the cursor of the next page (None when this one is not full)."""
    rows = hand_out(session, ds, q, user, q.limit, seconds).rows
    items = [queries.sample_read(r[0], r[1]) for r in rows]
    return items, queries.cursor_of(rows[-1]) if len(rows) == q.limit else None


def held_by_others(session: Session, ds: Dataset, q: SampleQuery, user: User) -> int:
    """How many unreviewed samples under q's filters someone else holds a live claim on."""
    unreviewed = SampleQuery(split=q.split, label=q.label, predicted=q.predicted, run_id=q.run_id, flagged=q.flagged,
                             missed=q.missed, extra=q.extra, reviewed=False)
    stmt = select(func.count(Sample.id)).where(claims.others_claim(Sample.id, user.id, utcnow()))
    stmt, _ = queries.filtered(session, ds, unreviewed, stmt, need_run=False)
    return int(session.scalar(stmt) or 0)


def review_progress(session: Session, ds: Dataset, q: SampleQuery) -> tuple[int, int]:
    """(reviewed, total) over the samples that q's filters select, whatever q.reviewed says."""
    unfiltered = SampleQuery(split=q.split, label=q.label, predicted=q.predicted, run_id=q.run_id, flagged=q.flagged,
                             missed=q.missed, extra=q.extra)
    reviewed = func.coalesce(func.sum(case((Sample.reviewed.is_(True), 1), else_=0)), 0)
    stmt, _ = queries.filtered(session, ds, unfiltered, select(reviewed, func.count(Sample.id)), need_run=False)
    done, total = session.execute(stmt).one()
    return int(done), int(total)
