"""Who is calling: Bearer tokens for REST clients, the signed session cookie for browsers.

The cookie names a server-side session (app.auth.sessions), looked up on every request, so
a revoked session stops working at once.

Every route that needs a user declares one of the role aliases below (`CurrentUser`,
`EngineerUser`, `AdminUser`); the role-matrix test reads the `RoleRequired` marker off
each route, so a route added without one fails the suite.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from app.auth import seen, sessions
from app.auth.security import hash_token, tokens_match
from app.db import SessionDep
from app.errors import CurateError, Forbidden
from app.models import ApiToken, Role, User, UserSession, utcnow

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


class NotAuthenticated(CurateError):
    """No valid credentials: API clients get 401, browsers the login page (app.error_handlers)."""

    status_code = 401

    def __init__(self, detail: str = "not authenticated") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


async def _csrf_form_field(request: Request) -> str | None:
    """The csrf_token field of a urlencoded form post (read here, off the database thread)."""
    if request.method in SAFE_METHODS or CSRF_HEADER.lower() in request.headers:
        return None
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    value = (await request.form()).get(CSRF_FIELD)
    return value if isinstance(value, str) else None


# Declares the bearer scheme in the OpenAPI schema (and Swagger UI's Authorize button); the
# header itself is read below, with Curate's own errors.
BEARER = HTTPBearer(auto_error=False, scheme_name="token",
                    description="an API token: `Authorization: Bearer <token>` (docs/rest.md)")


def get_current_user(
    request: Request,
    session: SessionDep,
    form_csrf: Annotated[str | None, Depends(_csrf_form_field)],
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
) -> User:
    """The authenticated user, or 401. Cookie-authenticated writes must carry the CSRF token.

    A plain function, so FastAPI runs it in the thread pool: database calls never block the event loop.
    """
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticated("Authorization header must be 'Bearer <token>'")
        row = session.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == hash_token(token.strip()), ApiToken.revoked_at.is_(None))
        ).first()
        if row is None or not row.User.is_active:
            raise NotAuthenticated("invalid or revoked API token")
        api_token, user = row
        now = utcnow()
        if seen.is_stale(api_token.last_used_at, now):
            seen.stamp(session.get_bind(), ApiToken, api_token.id, now)
        request.state.auth_method = "token"
        request.state.user = SimpleNamespace(username=user.username, role=user.role)
        return user

    token = request.session.get(sessions.COOKIE_KEY) if "session" in request.scope else None
    if not isinstance(token, str) or not token:
        raise NotAuthenticated()
    found = sessions.find_session(session, token, request.app.state.settings.session_max_age)
    if found is None or not found[1].is_active:
        # Revoked, expired, or its user deactivated: forget it, keep the visitor's CSRF token.
        request.session.pop(sessions.COOKIE_KEY, None)
        raise NotAuthenticated("session expired")
    user_session, user = found
    now = utcnow()
    if seen.is_stale(user_session.last_seen_at, now):
        seen.stamp(session.get_bind(), UserSession, user_session.id, now)
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, form_csrf)
        if not tokens_match(sent, request.session.get("csrf")):
            raise Forbidden("missing or invalid CSRF token")
    request.state.auth_method = "cookie"
    request.state.session_id = user_session.id
    # Error pages (a 403 from a role check) still show who is signed in and the navigation.
    # (a plain copy: the request's session is rolled back, expiring the row, before the page renders)
    request.state.user = SimpleNamespace(username=user.username, role=user.role)
    return user


class RoleRequired:
    """Dependency: the current user, if their role is at least `role`; else 403."""

    def __init__(self, role: Role) -> None:
        self.role = role

    def __call__(self, user: Annotated[User, Depends(get_current_user)]) -> User:
        if user.role_rank < self.role.rank:
            raise Forbidden(f"this needs the {self.role.value} role")
        return user


CurrentUser = Annotated[User, Depends(RoleRequired(Role.annotator))]
EngineerUser = Annotated[User, Depends(RoleRequired(Role.engineer))]
AdminUser = Annotated[User, Depends(RoleRequired(Role.admin))]
