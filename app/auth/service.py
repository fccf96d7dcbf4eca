"""Users and API tokens."""

from __future__ import annotations

import secrets
from functools import cache

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth import sessions, throttle
from app.auth.security import hash_password, hash_token, new_api_token, verify_password
from app.errors import Invalid, NotFound
from app.models import ApiToken, Role, User, utcnow


class UserError(Invalid):
    """A request about users or tokens that cannot be honoured as asked (bad input, 422)."""


class UserConflict(UserError):
    """The request clashes with what is stored: a taken username, or the last admin (409)."""

    status_code = 409


MIN_PASSWORD = 8


@cache
def _dummy_hash() -> str:
    """Verified against when a username is unknown, so a failed login costs the same either way."""
    return hash_password(secrets.token_urlsafe(16))


def create_user(session: Session, username: str, role: str, password: str | None = None) -> tuple[User, str]:
    """Create a user; returns it with its password (generated when none is given)."""
    username = username.strip()
    if not username:
        raise UserError("username must not be empty")
    if len(username) > 100:
        raise UserError("username must be at most 100 characters")
    try:
        role = Role(role).value
    except ValueError:
        raise UserError(f"role must be one of {', '.join(r.value for r in Role)}, not {role!r}") from None
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserConflict(f"user {username!r} already exists")
    password = password or secrets.token_urlsafe(12)
    _check_password(password)
    user = User(username=username, role=role, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user, password


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password must be at least {MIN_PASSWORD} characters")


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with this username and password, else None (same cost whether or not it exists)."""
    return _check_login(find_user(session, username.strip()), password)


def _check_login(user: User | None, password: str) -> User | None:
    if user is None:
        # One argon2 check either way, so the time taken does not tell whether the user exists.
        verify_password(_dummy_hash(), password)
        return None
    if not verify_password(user.password_hash, password) or not user.is_active:
        return None
    return user


def login(
    session: Session, username: str, password: str, *, address: str | None, policy: throttle.Policy
) -> User | None:
    """authenticate(), throttled per account and per client address (raises throttle.Throttled).

    Commits: the attempt is recorded before the password is checked, and no transaction (on
    SQLite, the write lock) is held while argon2 runs."""
    account = throttle.account_key(username)
    limits = [(account, policy.per_account), (throttle.address_key(address), policy.per_address)]
    with throttle.attempt(session, limits, policy.window) as attempt:
        user = find_user(session, username.strip())
        session.commit()
        user = _check_login(user, password)
        if user is None:
            attempt.failed()
        else:
            attempt.succeeded(clear=[account])
    return user


def set_password(session: Session, user: User, password: str) -> None:
    """Replace the user's password (at least MIN_PASSWORD characters)."""
    _check_password(password)
    user.password_hash = hash_password(password)
    session.flush()


def change_password(
    session: Session,
    user: User,
    current: str,
    new: str,
    keep_session: int | None = None,
    *,
    address: str | None = None,
    policy: throttle.Policy | None = None,
) -> None:
    """The user's own password change: the current password must be right.

    With a policy, wrong current passwords are throttled like sign-ins (raises
    throttle.Throttled), per user and per address: a borrowed session must not become a way
    to guess the password. Every other session of the user ends (whoever may have learnt the
    old password is signed out); the session `keep_session`, the one making the change, stays.
    """
    # The new password's length first: a refused one costs no hashing and no attempt.
    _check_password(new)
    if policy is None:
        right = verify_password(user.password_hash, current)
    else:
        key = throttle.password_change_key(user.id)
        limits = [(key, policy.per_account), (throttle.address_key(address), policy.per_address)]
        with throttle.attempt(session, limits, policy.window) as attempt:
            session.commit()  # hold no transaction while argon2 runs
            right = verify_password(user.password_hash, current)
            if right:
                attempt.succeeded(clear=[key])
            else:
                attempt.failed()
    if not right:
        raise UserError("the current password is not right")
    set_password(session, user, new)
    sessions.revoke_sessions(session, user, keep=keep_session)


def list_users(session: Session) -> list[User]:
    """Every user, by name."""
    return list(session.scalars(select(User).order_by(User.username)).all())


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


def update_user(session: Session, user: User, role: str | None = None, is_active: bool | None = None) -> User:
    """Change a user's role and/or active flag; refuses to leave no active admin.

    Deactivating ends the user's sessions, so reactivating does not sign old cookies back in.
    Their API tokens are kept: they stop working while the user is inactive (get_current_user
    checks is_active) and work again on reactivation."""
    if role is not None:
        try:
            role = Role(role).value
        except ValueError:
            raise UserError(f"role must be one of {', '.join(r.value for r in Role)}, not {role!r}") from None
    new_role = role if role is not None else user.role
    new_active = is_active if is_active is not None else user.is_active
    if user.role == Role.admin and user.is_active and (new_role != Role.admin or not new_active):
        # Lock the admin rows so that two admins demoting each other cannot both succeed.
        admins = session.scalars(
            select(User.id).where(User.role == Role.admin.value, User.is_active.is_(True)).with_for_update()
        ).all()
        if set(admins) <= {user.id}:
            raise UserConflict("this is the last active admin: make another admin first")
    was_active = user.is_active
    user.role = new_role
    user.is_active = new_active
    if was_active and not new_active:
        sessions.revoke_sessions(session, user)
    session.flush()
    return user


def create_token(session: Session, user: User, name: str) -> tuple[ApiToken, str]:
    """A new API token for user; the plain token is returned once and never stored."""
    name = name.strip() or "token"
    if len(name) > 100:
        raise UserError("token name must be at most 100 characters")
    token = new_api_token()
    row = ApiToken(user_id=user.id, name=name, token_hash=hash_token(token), prefix=token[:8])
    session.add(row)
    session.flush()
    return row, token


def list_tokens(session: Session, user: User) -> list[ApiToken]:
    """The user's tokens that still work, newest first."""
    return list(
        session.scalars(
            select(ApiToken)
            .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
            .order_by(ApiToken.id.desc())
        ).all()
    )


def get_own_token(session: Session, user: User, token_id: int) -> ApiToken | None:
    """One of the user's own tokens, or None (someone else's token is as good as missing)."""
    token = session.get(ApiToken, token_id)
    return token if token is not None and token.user_id == user.id else None


def revoke_token(session: Session, token: ApiToken) -> None:
    """Stop a token from working; revoking twice keeps the first time."""
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    session.flush()


def find_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))
