"""Users and API tokens."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.security import hash_password, hash_token, new_api_token, verify_password
from app.models import ApiToken, Role, User, utcnow


class UserError(ValueError):
    pass


def create_user(session: Session, username: str, role: str, password: str | None = None) -> tuple[User, str]:
    """Create a user; returns it with its password (generated when none is given)."""
    username = username.strip()
    if not username:
        raise UserError("username must not be empty")
    try:
        role = Role(role).value
    except ValueError:
        raise UserError(f"role must be one of {', '.join(r.value for r in Role)}, not {role!r}") from None
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserError(f"user {username!r} already exists")
    password = password or secrets.token_urlsafe(12)
    if len(password) < 8:
        raise UserError("password must be at least 8 characters")
    user = User(username=username, role=role, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user, password


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.username == username.strip()))
    if user is None or not user.is_active or not verify_password(user.password_hash, password):
        return None
    return user


def set_password(session: Session, user: User, password: str) -> None:
    if len(password) < 8:
        raise UserError("password must be at least 8 characters")
    user.password_hash = hash_password(password)
    session.flush()


def create_token(session: Session, user: User, name: str) -> tuple[ApiToken, str]:
    """A new API token for user; the plain token is returned once and never stored."""
    token = new_api_token()
    row = ApiToken(user_id=user.id, name=name.strip() or "token", token_hash=hash_token(token), prefix=token[:8])
    session.add(row)
    session.flush()
    return row, token


def revoke_token(session: Session, token: ApiToken) -> None:
    token.revoked_at = utcnow()
    session.flush()


def find_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))
