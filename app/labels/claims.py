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

import json
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, exists, text, update
from sqlalchemy.orm import Session

from app.models import Claim, utcnow
from app.models.base import UTCDateTime


def others_claim(sample_id, claimant=None, now=None):
    """The condition "someone other than the claimant holds a live claim on sample_id". With
    no claimant and now, it binds `claimant` and `claim_now` (for cached statements)."""
    claimant = bindparam("claimant") if claimant is None else claimant
    now = bindparam("claim_now") if now is None else now
    return exists().where(Claim.sample_id == sample_id, Claim.user_id != claimant, Claim.expires_at > now)


# The take, one statement per dialect whatever the number of ids (the ids travel as one
# value: a Postgres array, a JSON list on SQLite), so it is compiled once: built from the
# listed ids with SQLAlchemy, its compilation cost a hand-out as much as running it.
_UPSERT = """
INSERT INTO claims (sample_id, dataset_id, user_id, claimed_at, expires_at)
SELECT id, :dataset, :user, :now, :until FROM {ids} WHERE true ORDER BY id
ON CONFLICT (sample_id) DO UPDATE SET
    dataset_id = excluded.dataset_id,
    user_id = excluded.user_id,
    -- a renewal keeps when the claim began; a take-over starts a new one
    claimed_at = CASE WHEN claims.user_id = :user THEN claims.claimed_at ELSE excluded.claimed_at END,
    expires_at = excluded.expires_at
WHERE claims.user_id = :user OR claims.expires_at <= :now
RETURNING claims.sample_id, (SELECT samples.version FROM samples WHERE samples.id = claims.sample_id)
"""
_TYPES = (bindparam("now", type_=UTCDateTime()), bindparam("until", type_=UTCDateTime()))
_TAKE = {
    # On Postgres the release of the caller's other claims rides along as a CTE: the two
    # touch disjoint rows, and the hand-out pays one round trip for all of it.
    "postgresql": text(
        "WITH released AS (DELETE FROM claims WHERE user_id = :user AND dataset_id = :dataset"
        " AND sample_id <> ALL(CAST(:ids AS integer[])))"
        + _UPSERT.format(ids="unnest(CAST(:ids AS integer[])) AS listed(id)")
    ).bindparams(*_TYPES),
    "sqlite": text(_UPSERT.format(ids="(SELECT CAST(value AS INTEGER) AS id FROM json_each(:ids))")).bindparams(*_TYPES),
}
_RELEASE_OTHERS = text(
    "DELETE FROM claims WHERE user_id = :user AND dataset_id = :dataset"
    " AND sample_id NOT IN (SELECT value FROM json_each(:ids))"
)


def take(session: Session, dataset_id: int, user_id: int, ids: list[int], now: datetime, until: datetime) -> dict[int, int]:
    """Claim `ids` for user_id until `until` where no one else holds them at `now`, and end the
    user's other claims in the dataset; {id: the sample's version now} of the ids claimed (free,
    expired or the user's own, renewed), read by the same statement.

    Ids are taken in ascending order, one order for every writer: no deadlock between two."""
    if not ids:
        release(session, dataset_id, user_id)
        return {}
    dialect = session.get_bind().dialect.name
    ids = sorted({int(i) for i in ids})
    params = {"dataset": dataset_id, "user": user_id, "now": now, "until": until}
    if dialect == "postgresql":
        params["ids"] = ids
    else:
        params["ids"] = json.dumps(ids)
        session.execute(_RELEASE_OTHERS, params)
    return {sid: version for sid, version in session.execute(_TAKE[dialect], params)}


def release(session: Session, dataset_id: int, user_id: int) -> int:
    """End the user's claims in the dataset; how many ended."""
    stmt = delete(Claim).where(Claim.user_id == user_id, Claim.dataset_id == dataset_id)
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
