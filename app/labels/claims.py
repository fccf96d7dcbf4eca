"""Review-queue claims: the samples a queue hands out stay with their annotator for a while.

A hand-out (app.labels.queue) lists the queue's head with every live claim of someone else left out, then
claims what it listed in one upsert that takes a row only where it is free, expired or
already the caller's. Two hand-outs racing for one sample cannot both win: the row is
keyed by the sample, and the loser's upsert finds the winner's committed row and leaves it
(Postgres waits for the winner's commit; SQLite's write lock orders them). The loser lists
again, now without the sample, until it holds what it listed (docs/queries.md, Claims).

A claim ends when its holder changes the sample (app.labels.service), when the holder's next
hand-out no longer includes it (a skip, a page further, other filters), when the holder
releases it (DELETE .../queue), or when it expires; an open queue page renews its claims.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import bindparam, case, delete, exists, literal_column, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.models import Claim, Sample, utcnow


def others_claim(sample_id, claimant=None, now=None):
    """The condition "someone other than the claimant holds a live claim on sample_id". With
    no claimant and now, it binds `claimant` and `claim_now` (for cached statements)."""
    claimant = bindparam("claimant") if claimant is None else claimant
    now = bindparam("claim_now") if now is None else now
    return exists().where(Claim.sample_id == sample_id, Claim.user_id != claimant, Claim.expires_at > now)


def take(session: Session, dataset_id: int, user_id: int, ids: list[int], now: datetime, until: datetime) -> dict[int, int]:
    """Claim `ids` for user_id until `until` where no one else holds them at `now`, and end the
    user's other claims in the dataset; {id: the sample's version now} of the ids claimed (free,
    expired or the user's own, renewed).

    One statement on Postgres (the release is a CTE of the upsert, and the versions come back
    with it), so a hand-out pays one round trip for its claims; the two touch disjoint rows."""
    if not ids:
        release(session, dataset_id, user_id)
        return {}
    postgres = session.get_bind().dialect.name == "postgresql"
    ids = sorted(set(ids))  # one order for every writer: no deadlock between two
    rows = [{"sample_id": i, "dataset_id": dataset_id, "user_id": user_id, "claimed_at": now, "expires_at": until}
            for i in ids]
    stmt = (pg_insert if postgres else sqlite_insert)(Claim).values(rows)
    # Correlated by name: in RETURNING, SQLAlchemy would list claims in the subquery's FROM.
    version = select(Sample.version).where(Sample.id == literal_column("claims.sample_id")).scalar_subquery()
    stmt = stmt.on_conflict_do_update(
        index_elements=[Claim.sample_id],
        set_={
            "dataset_id": stmt.excluded.dataset_id,
            "user_id": stmt.excluded.user_id,
            # A renewal keeps when the claim began; a take-over starts a new one.
            "claimed_at": case((Claim.user_id == user_id, Claim.claimed_at), else_=stmt.excluded.claimed_at),
            "expires_at": stmt.excluded.expires_at,
        },
        where=or_(Claim.user_id == user_id, Claim.expires_at <= now),
    ).returning(Claim.sample_id, version)
    others = delete(Claim).where(Claim.user_id == user_id, Claim.dataset_id == dataset_id, Claim.sample_id.not_in(ids))
    if postgres:
        stmt = stmt.add_cte(others.cte("released"))
    else:
        session.execute(others.execution_options(synchronize_session=False))
    return {sid: version for sid, version in session.execute(stmt)}


def release(session: Session, dataset_id: int, user_id: int, keep: list[int] = ()) -> int:
    """End the user's claims in the dataset, except on `keep`; how many ended."""
    stmt = delete(Claim).where(Claim.user_id == user_id, Claim.dataset_id == dataset_id)
    if keep:
        stmt = stmt.where(Claim.sample_id.not_in(keep))
    return session.execute(stmt.execution_options(synchronize_session=False)).rowcount


def release_sample(session: Session, sample_id: int | list[int], user_id: int) -> None:
    """End the user's claim on one sample (they have just changed it), or on each of a list."""
    ids = sample_id if isinstance(sample_id, list) else [sample_id]
    stmt = delete(Claim).where(Claim.sample_id.in_(ids), Claim.user_id == user_id)
    session.execute(stmt.execution_options(synchronize_session=False))


def renew(session: Session, dataset_id: int, user_id: int, seconds: int) -> datetime | None:
    """Extend the user's claims in the dataset to now + seconds; when they now end, or None
    when the user holds none. A claim that lapsed is renewed too while no one took it over."""
    until = utcnow() + timedelta(seconds=seconds)
    stmt = update(Claim).where(Claim.user_id == user_id, Claim.dataset_id == dataset_id).values(expires_at=until)
    done = session.execute(stmt.execution_options(synchronize_session=False)).rowcount
    return until if done else None
