"""Throttling password guesses, per account and per client address, in the database.

Every password check (sign-in, the current password on a password change) is first recorded
as a failure against its keys, then the keys are counted, in one transaction that holds a
lock per key (SQLite: the database's write lock, see app.db.begin_write; Postgres: an
advisory lock per key). Attempts racing each other, in one process or many, therefore take
turns: no more than the limit of passwords are checked per window whatever the concurrency.
An attempt that finds a key over its limit is refused (`Throttled`) and leaves no record, so
it neither checks the password nor extends the lock. A correct password withdraws the
attempt's records and clears the account's failures; a wrong one leaves them in place.

Unknown usernames are counted exactly like real ones, so being throttled tells nothing
about whether an account exists.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from app.db import begin_write
from app.models import LoginFailure, utcnow


class Throttled(Exception):
    """Too many recent failures for this account or address; retry_after in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed attempts: try again in {retry_after} seconds")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Policy:
    per_account: int
    per_address: int
    window: timedelta

    @classmethod
    def from_settings(cls, settings) -> Policy:
        return cls(
            per_account=settings.login_max_failures_per_account,
            per_address=settings.login_max_failures_per_address,
            window=timedelta(seconds=settings.login_failure_window_seconds),
        )


def account_key(username: str) -> str:
    """The key of a sign-in name, hashed: people type passwords into the username field too."""
    return "account:" + hashlib.sha256(username.strip().encode()).hexdigest()


def password_change_key(user_id: int) -> str:
    return f"password:{user_id}"


def address_key(host: str | None) -> str:
    """The key of a client address; IPv6 clients by their /64, which one host usually holds whole."""
    host = host or "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "address:" + host[:80]
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return f"address:{ip.ipv4_mapped}"
        return f"address:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"address:{ip}"


class Attempt:
    """One password check under way; say how it went with failed() or succeeded()."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids
        self.outcome: str | None = None
        self.clear: tuple[str, ...] = ()

    def failed(self) -> None:
        self.outcome = "failed"

    def succeeded(self, clear: Iterable[str] = ()) -> None:
        """The password was right: the attempt is withdrawn and the failures of `clear` forgotten."""
        self.outcome = "succeeded"
        self.clear = tuple(clear)


@contextmanager
def attempt(db: Session, limits: Sequence[tuple[str, int]], window: timedelta) -> Iterator[Attempt]:
    """Record a password check against each (key, limit), or raise Throttled.

    Commits db, so the record is visible to every other process before the password is
    checked. An attempt whose body raises (no turn to hash the password came free, say) is
    withdrawn and committed at once, so the request's rollback cannot keep it; one that ends
    neither failed nor succeeded is withdrawn with the request's own changes.
    """
    ids = _record(db, limits, window)
    current = Attempt(ids)
    try:
        yield current
    except BaseException:
        # The request's own changes are rolled back anyway; the withdrawal must not be.
        db.rollback()
        _withdraw(db, ids)
        raise
    if current.outcome == "succeeded":
        db.execute(delete(LoginFailure).where(LoginFailure.id.in_(ids)))
        if current.clear:
            db.execute(delete(LoginFailure).where(LoginFailure.key.in_(current.clear)))
    elif current.outcome is None:
        db.execute(delete(LoginFailure).where(LoginFailure.id.in_(ids)))


def _record(db: Session, limits: Sequence[tuple[str, int]], window: timedelta) -> list[int]:
    """Record the attempt and commit; raises Throttled (recording nothing) over a limit."""
    now = utcnow()
    since = now - window
    _lock(db, [key for key, _ in limits])
    # Failures older than the window count for nothing any more.
    db.execute(delete(LoginFailure).where(LoginFailure.created_at <= since))
    rows = [LoginFailure(key=key, created_at=now) for key, _ in limits]
    db.add_all(rows)
    db.flush()
    ids = [row.id for row in rows]
    retry_after = None
    for key, limit in limits:
        times = db.scalars(
            select(LoginFailure.created_at)
            .where(LoginFailure.key == key, LoginFailure.created_at > since)
            .order_by(LoginFailure.created_at, LoginFailure.id)
        ).all()
        if len(times) > limit:
            # Without this attempt there are len - 1; the key is usable again once that is
            # below the limit, when the (len - limit)th oldest failure leaves the window.
            frees_at = times[len(times) - limit - 1] + window
            wait = max(1, math.ceil((frees_at - now).total_seconds()))
            retry_after = max(retry_after or 0, wait)
    if retry_after is not None:
        db.execute(delete(LoginFailure).where(LoginFailure.id.in_(ids)))
        db.commit()
        raise Throttled(retry_after)
    db.commit()
    return ids


def _lock(db: Session, keys: Sequence[str]) -> None:
    """Make attempts on the same keys take turns until they commit.

    SQLite takes the database's write lock here (app.db.begin_write), before the counts are
    read. Postgres gets a transaction-scoped advisory lock per key, taken in a fixed order so
    that two attempts cannot wait on each other."""
    if db.get_bind().dialect.name != "postgresql":
        begin_write(db)
        return
    for lock_id in sorted({_lock_id(key) for key in keys}):
        db.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})


def _lock_id(key: str) -> int:
    """A signed 64-bit number for the key, as pg_advisory_xact_lock takes."""
    return int.from_bytes(hashlib.sha256(b"curate-login:" + key.encode()).digest()[:8], "big", signed=True)


def _withdraw(db: Session, ids: list[int]) -> None:
    db.execute(delete(LoginFailure).where(LoginFailure.id.in_(ids)))
    db.commit()
