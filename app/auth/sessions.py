"""Browser sessions kept on the server, so that they can be ended before the cookie expires.

The signed cookie holds a random session token; the `user_sessions` row holds its sha256.
A copied cookie stops working as soon as its row is revoked: at logout, when the password
changes (the user's other sessions), when the user is deactivated, or when an admin signs
the user out everywhere. A session also ends `max_age` seconds after sign-in, whatever the
cookie says.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from app.auth.security import hash_token
from app.models import User, UserSession, utcnow

# The key of the session token in the signed cookie.
COOKIE_KEY = "sid"
USER_AGENT_CHARS = 300
IP_CHARS = 64


def _live(max_age: int, now: datetime | None = None):
    """The condition of a session that still signs its user in."""
    oldest = (now or utcnow()) - timedelta(seconds=max_age)
    return UserSession.revoked_at.is_(None), UserSession.created_at > oldest


def start_session(
    db: Session, user: User, max_age: int, *, user_agent: str | None = None, ip: str | None = None
) -> str:
    """A new session for user; returns the token for the cookie (only its hash is stored).

    Also forgets the user's ended sessions, so the table holds little more than live ones.
    """
    now = utcnow()
    db.execute(
        delete(UserSession).where(
            UserSession.user_id == user.id,
            or_(UserSession.revoked_at.is_not(None), UserSession.created_at <= now - timedelta(seconds=max_age)),
        )
    )
    token = secrets.token_urlsafe(32)
    db.add(
        UserSession(
            user_id=user.id,
            token_hash=hash_token(token),
            created_at=now,
            last_seen_at=now,
            user_agent=(user_agent or "")[:USER_AGENT_CHARS] or None,
            ip=(ip or "")[:IP_CHARS] or None,
        )
    )
    db.flush()
    return token


def find_session(db: Session, token: str, max_age: int) -> tuple[UserSession, User] | None:
    """The live session with this token and its user (active or not), else None.
    Writes nothing: the caller has last_seen_at refreshed (app.auth.seen)."""
    row = db.execute(
        select(UserSession, User)
        .join(User, User.id == UserSession.user_id)
        .where(UserSession.token_hash == hash_token(token), *_live(max_age))
    ).first()
    if row is None:
        return None
    return row.UserSession, row.User


def end_session(db: Session, token: str) -> None:
    """Revoke the session with this token (logout); an unknown or ended one is left alone."""
    db.execute(
        update(UserSession)
        .where(UserSession.token_hash == hash_token(token), UserSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def revoke_sessions(db: Session, user: User, *, keep: int | None = None) -> int:
    """Sign user out everywhere (but the session with id `keep`); returns how many ended."""
    query = update(UserSession).where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None))
    if keep is not None:
        query = query.where(UserSession.id != keep)
    return db.execute(query.values(revoked_at=utcnow())).rowcount


def list_sessions(db: Session, user: User, max_age: int) -> list[UserSession]:
    """The user's live sessions, most recently used first."""
    return list(
        db.scalars(
            select(UserSession)
            .where(UserSession.user_id == user.id, *_live(max_age))
            .order_by(UserSession.last_seen_at.desc(), UserSession.id.desc())
        ).all()
    )


def get_own_session(db: Session, user: User, session_id: int, max_age: int) -> UserSession | None:
    """One of the user's live sessions, or None (someone else's is as good as missing)."""
    return db.scalar(
        select(UserSession).where(UserSession.id == session_id, UserSession.user_id == user.id, *_live(max_age))
    )


def revoke_session(db: Session, user_session: UserSession) -> None:
    """End one session; revoking twice keeps the first time."""
    if user_session.revoked_at is None:
        user_session.revoked_at = utcnow()
    db.flush()


def live_session_counts(db: Session, max_age: int) -> dict[int, int]:
    """How many live sessions each user has (users with none are absent)."""
    rows = db.execute(
        select(UserSession.user_id, func.count()).where(*_live(max_age)).group_by(UserSession.user_id)
    ).all()
    return {user_id: n for user_id, n in rows}
