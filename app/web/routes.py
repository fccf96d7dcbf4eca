"""HTML pages: sign in and out, datasets, the account page and user administration.

Routes stay thin: authorise with the same role dependencies as the REST API, call the same
services, render. A form posted by HTMX gets back only its page's named block.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, status
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.auth import service as auth_service
from app.auth import sessions, throttle
from app.auth.deps import AdminUser, CurrentUser, EngineerUser
from app.auth.security import HashingBusy
from app.datasets import service as dataset_service
from app.datasets.schemas import DatasetCreate
from app.labels import assignments
from app.db import SessionDep
from app.errors import Conflict, Forbidden, NotFound
from app.models import Role, User
from app.models.tables import Task
from app.web.deps import client_address, csrf_ok, rotate_csrf_token, safe_next
from app.web.templating import render
from app.ids import PathId

router = APIRouter(include_in_schema=False)

FormStr = Annotated[str, Form()]
LOGIN_FAILED = "That username and password do not match an active account."
FORM_EXPIRED = "This form has expired. Please try again."
LOGIN_THROTTLED = "Too many failed sign-in attempts. Please wait {wait} and try again."
PASSWORD_THROTTLED = "too many wrong current passwords: please wait {wait} and try again"
BUSY = "The server is busy checking passwords. Please try again in a few seconds."


def _base(user: User | None, nav: str) -> dict[str, Any]:
    return {"user": user, "nav": nav}


# --- signing in and out ----------------------------------------------------------------


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/datasets", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    return _login_form(request, next=safe_next(next, ""))


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    username: FormStr = "",
    password: FormStr = "",
    csrf_token: FormStr = "",
    next: FormStr = "",
) -> Response:
    """Check the form's CSRF token, then the password (throttled); a new session on success."""
    target = safe_next(next, "")
    if not csrf_ok(request, csrf_token):
        return _login_form(request, next=target, username=username, error=FORM_EXPIRED, status_code=403)
    try:
        user = auth_service.login(
            session, username, password, address=client_address(request), policy=_throttle_policy(request)
        )
    except throttle.Throttled as exc:
        error = LOGIN_THROTTLED.format(wait=_wait_text(exc.retry_after))
        response = _login_form(request, next=target, username=username, error=error, status_code=429)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except HashingBusy as exc:
        response = _login_form(request, next=target, username=username, error=BUSY, status_code=503)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    if user is None:
        return _login_form(request, next=target, username=username, error=LOGIN_FAILED, status_code=400)
    # A fresh session and CSRF token: nothing from before the login carries over.
    previous = request.session.get(sessions.COOKIE_KEY)
    if isinstance(previous, str):
        sessions.end_session(session, previous)
    request.session.clear()
    request.session[sessions.COOKIE_KEY] = sessions.start_session(
        session,
        user,
        request.app.state.settings.session_max_age,
        user_agent=request.headers.get("user-agent"),
        ip=client_address(request),
    )
    rotate_csrf_token(request)
    return RedirectResponse(safe_next(target), status_code=status.HTTP_303_SEE_OTHER)


def _login_form(
    request: Request, *, next: str, username: str = "", error: str | None = None, status_code: int = 200
) -> Response:
    context = {**_base(None, "login"), "next": next, "username": username, "error": error}
    return render(request, "login.html", context, status_code=status_code)


def _throttle_policy(request: Request) -> throttle.Policy:
    return throttle.Policy.from_settings(request.app.state.settings)


def _wait_text(seconds: int) -> str:
    minutes = math.ceil(seconds / 60)
    return "a minute" if minutes <= 1 else f"{minutes} minutes"


@router.post("/logout")
def logout(request: Request, session: SessionDep, csrf_token: FormStr = "") -> RedirectResponse:
    """End the session, on the server too: a copy of the cookie stops working as well.
    A signed-in session must send its CSRF token, so that other sites cannot sign it out."""
    token = request.session.get(sessions.COOKIE_KEY)
    if token is not None and not csrf_ok(request, csrf_token):
        raise Forbidden("missing or invalid CSRF token")
    if isinstance(token, str):
        sessions.end_session(session, token)
    request.session.clear()
    rotate_csrf_token(request)
    return RedirectResponse("/login", status_code=status.HTTP_303_SEE_OTHER)


# --- datasets ----------------------------------------------------------------------------


@router.get("/datasets")
def datasets_page(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    return _datasets(request, session, user)


@router.post("/datasets")
def create_dataset(
    request: Request,
    session: SessionDep,
    user: EngineerUser,
    name: FormStr = "",
    task: FormStr = "",
    classes: FormStr = "",
) -> Response:
    """The new-dataset form: the table and the form come back together, with any errors inline."""
    values = {"name": name, "task": task, "classes": classes}
    class_list = [c.strip() for c in classes.split(",") if c.strip()] or None
    try:
        data = DatasetCreate(name=name, task=task, classes=class_list)
    except ValidationError as exc:
        return _datasets(request, session, user, values=values, errors=_field_errors(exc), status_code=422)
    try:
        ds = dataset_service.create_dataset(session, data, user)
    except Conflict as exc:
        return _datasets(request, session, user, values=values, errors={"name": exc.detail}, status_code=422)
    return _datasets(request, session, user, created=ds.name, status_code=201)


def _datasets(
    request: Request,
    session: Session,
    user: User,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    created: str | None = None,
    status_code: int = 200,
) -> Response:
    context = {
        **_base(user, "datasets"),
        "datasets": dataset_service.list_datasets(session),
        "can_create": user.role_rank >= Role.engineer.rank,
        "tasks": [t.value for t in Task],
        "values": values or {"name": "", "task": Task.image.value, "classes": ""},
        "errors": errors or {},
        "created": created,
        "assigned": [assignments.read(session, a) for a in assignments.of_user(session, user)],
    }
    return render(request, "datasets.html", context, block="dataset_panel", status_code=status_code)


def _field_errors(exc: ValidationError) -> dict[str, str]:
    """The first message per form field, without pydantic's 'Value error, ' prefix."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "form"
        errors.setdefault(field, err["msg"].removeprefix("Value error, "))
    return errors


# --- the account page ----------------------------------------------------------------


@router.get("/account")
def account_page(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    return _account(request, session, user)


@router.post("/account/password")
def change_password(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    current_password: FormStr = "",
    new_password: FormStr = "",
) -> Response:
    """Change one's password (wrong current passwords are throttled); every other session of
    the user is signed out."""
    try:
        auth_service.change_password(
            session,
            user,
            current_password,
            new_password,
            keep_session=_session_id(request),
            address=client_address(request),
            policy=_throttle_policy(request),
        )
    except auth_service.UserError as exc:
        return _account(request, session, user, block="password_panel", password_error=str(exc), status_code=422)
    except throttle.Throttled as exc:
        error = PASSWORD_THROTTLED.format(wait=_wait_text(exc.retry_after))
        response = _account(
            request, session, user, block="password_panel", password_error=error, status_code=429
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    return _account(request, session, user, block="password_panel", password_changed=True)


@router.post("/account/sessions/{session_id}/revoke")
def revoke_own_session(request: Request, session_id: PathId, session: SessionDep, user: CurrentUser) -> Response:
    """Sign one of one's own sessions out (a browser left signed in elsewhere)."""
    row = sessions.get_own_session(session, user, session_id, _max_age(request))
    if row is None:
        raise NotFound(f"session {session_id} not found")
    sessions.revoke_session(session, row)
    return _account(request, session, user, block="sessions_panel", sessions_revoked=1)


@router.post("/account/sessions/revoke-others")
def revoke_other_sessions(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    """Sign out every session of one's own but this one."""
    n = sessions.revoke_sessions(session, user, keep=_session_id(request))
    return _account(request, session, user, block="sessions_panel", sessions_revoked=n)


def _session_id(request: Request) -> int | None:
    """The id of the session making this request (None for a Bearer token)."""
    return getattr(request.state, "session_id", None)


def _max_age(request: Request) -> int:
    return request.app.state.settings.session_max_age


@router.post("/account/tokens")
def create_token(request: Request, session: SessionDep, user: CurrentUser, name: FormStr = "") -> Response:
    try:
        row, token = auth_service.create_token(session, user, name)
    except auth_service.UserError as exc:
        return _account(request, session, user, block="tokens_panel", token_error=str(exc), status_code=422)
    return _account(
        request, session, user, block="tokens_panel", new_token={"name": row.name, "token": token}, status_code=201
    )


@router.post("/account/tokens/{token_id}/revoke")
def revoke_token(request: Request, token_id: PathId, session: SessionDep, user: CurrentUser) -> Response:
    token = auth_service.get_own_token(session, user, token_id)
    if token is None:
        raise NotFound(f"token {token_id} not found")
    auth_service.revoke_token(session, token)
    return _account(request, session, user, block="tokens_panel", revoked=token.name)


def _account(
    request: Request,
    session: Session,
    user: User,
    *,
    block: str | None = None,
    password_error: str | None = None,
    password_changed: bool = False,
    token_error: str | None = None,
    new_token: dict[str, str] | None = None,
    revoked: str | None = None,
    sessions_revoked: int | None = None,
    status_code: int = 200,
) -> Response:
    context = {
        **_base(user, "account"),
        "tokens": auth_service.list_tokens(session, user),
        "sessions": sessions.list_sessions(session, user, _max_age(request)),
        "current_session": _session_id(request),
        "sessions_revoked": sessions_revoked,
        "min_password": auth_service.MIN_PASSWORD,
        "password_error": password_error,
        "password_changed": password_changed,
        "token_error": token_error,
        "new_token": new_token,
        "revoked": revoked,
    }
    return render(request, "account.html", context, block=block, status_code=status_code)


# --- user administration ---------------------------------------------------------------


@router.get("/admin/users")
def users_page(request: Request, session: SessionDep, user: AdminUser) -> Response:
    return _users(request, session, user)


@router.post("/admin/users")
def create_user(
    request: Request,
    session: SessionDep,
    user: AdminUser,
    username: FormStr = "",
    role: FormStr = Role.annotator.value,
    password: FormStr = "",
) -> Response:
    """Create a user; a generated password is shown once, in this response."""
    try:
        new, generated = auth_service.create_user(session, username, role, password or None)
    except auth_service.UserError as exc:
        values = {"username": username, "role": role}
        return _users(request, session, user, values=values, error=str(exc), status_code=422)
    created = {"username": new.username, "role": new.role, "password": None if password else generated}
    return _users(request, session, user, created=created, status_code=201)


@router.post("/admin/users/{user_id}")
def update_user(
    request: Request,
    user_id: PathId,
    session: SessionDep,
    user: AdminUser,
    role: Annotated[str | None, Form()] = None,
    active: Annotated[str | None, Form()] = None,
) -> Response:
    """Change a user's role, or deactivate / reactivate them."""
    target = auth_service.get_user(session, user_id)
    is_active = None if active is None else active == "true"
    try:
        auth_service.update_user(session, target, role=role or None, is_active=is_active)
    except auth_service.UserError as exc:
        return _users(request, session, user, error=str(exc), status_code=422)
    return _users(request, session, user, updated=target.username)


@router.post("/admin/users/{user_id}/sessions/revoke")
def sign_out_everywhere(request: Request, user_id: PathId, session: SessionDep, user: AdminUser) -> Response:
    """End every browser session of a user at once (a lost laptop, a shared password)."""
    target = auth_service.get_user(session, user_id)
    n = sessions.revoke_sessions(session, target)
    return _users(request, session, user, signed_out={"username": target.username, "count": n})


def _users(
    request: Request,
    session: Session,
    user: User,
    *,
    values: dict[str, str] | None = None,
    error: str | None = None,
    created: dict[str, Any] | None = None,
    updated: str | None = None,
    signed_out: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    context = {
        **_base(user, "admin"),
        "users": auth_service.list_users(session),
        "session_counts": sessions.live_session_counts(session, _max_age(request)),
        "signed_out": signed_out,
        "roles": [r.value for r in Role],
        "values": values or {"username": "", "role": Role.annotator.value},
        "error": error,
        "created": created,
        "updated": updated,
    }
    return render(request, "admin_users.html", context, block="users_panel", status_code=status_code)
