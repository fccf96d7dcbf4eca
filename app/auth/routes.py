"""REST routes for the caller's account, their API tokens, and (admins) users."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.auth import service, sessions
from app.auth.deps import AdminUser, CurrentUser
from app.auth.schemas import (
    SessionRead,
    SessionsRevoked,
    TokenCreate,
    TokenCreated,
    TokenRead,
    UserCreate,
    UserCreated,
    UserRead,
    UserUpdate,
)
from app.db import SessionDep
from app.errors import NotFound
from app.ids import PathId

router = APIRouter(tags=["account"])


@router.get("/me", response_model=UserRead)
def me(user: CurrentUser) -> UserRead:
    """Who the credentials belong to."""
    return UserRead.model_validate(user)


@router.get("/tokens", response_model=list[TokenRead])
def list_tokens(session: SessionDep, user: CurrentUser) -> list[TokenRead]:
    """The caller's API tokens that still work, newest first."""
    return [TokenRead.model_validate(t) for t in service.list_tokens(session, user)]


@router.post("/tokens", status_code=201, response_model=TokenCreated)
def create_token(data: TokenCreate, session: SessionDep, user: CurrentUser) -> TokenCreated:
    """A new API token for the caller; the token is in this response only."""
    row, token = service.create_token(session, user, data.name)
    return TokenCreated(**TokenRead.model_validate(row).model_dump(), token=token)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: PathId, session: SessionDep, user: CurrentUser) -> Response:
    """Revoke one of the caller's tokens; it stops working at once."""
    token = service.get_own_token(session, user, token_id)
    if token is None:
        raise NotFound(f"token {token_id} not found")
    service.revoke_token(session, token)
    return Response(status_code=204)


@router.get("/users", response_model=list[UserRead])
def list_users(session: SessionDep, user: AdminUser) -> list[UserRead]:
    """Every user, by name."""
    return [UserRead.model_validate(u) for u in service.list_users(session)]


@router.post("/users", status_code=201, response_model=UserCreated)
def create_user(data: UserCreate, session: SessionDep, user: AdminUser) -> UserCreated:
    """Create a user; a password is generated (and returned once) when none is given."""
    new, password = service.create_user(session, data.username, data.role.value, data.password)
    return UserCreated(
        **UserRead.model_validate(new).model_dump(), password=None if data.password else password
    )


@router.patch("/users/{user_id}", response_model=UserRead)
def update_user(user_id: PathId, data: UserUpdate, session: SessionDep, user: AdminUser) -> UserRead:
    """Change a user's role or deactivate (or reactivate) them; deactivating signs them out everywhere."""
    target = service.get_user(session, user_id)
    service.update_user(
        session, target, role=data.role.value if data.role else None, is_active=data.is_active
    )
    return UserRead.model_validate(target)


@router.get("/users/{user_id}/sessions", response_model=list[SessionRead])
def list_user_sessions(user_id: PathId, request: Request, session: SessionDep, user: AdminUser) -> list[SessionRead]:
    """The user's browser sessions that are still signed in, most recently used first."""
    target = service.get_user(session, user_id)
    rows = sessions.list_sessions(session, target, request.app.state.settings.session_max_age)
    return [SessionRead.model_validate(s) for s in rows]


@router.delete("/users/{user_id}/sessions", response_model=SessionsRevoked)
def sign_out_everywhere(user_id: PathId, session: SessionDep, user: AdminUser) -> SessionsRevoked:
    """Sign the user out of every browser at once (their API tokens are managed separately)."""
    target = service.get_user(session, user_id)
    return SessionsRevoked(revoked=sessions.revoke_sessions(session, target))
