"""Browser helpers: the session's CSRF token, HTMX detection and safe redirect targets."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from fastapi import Request, status
from fastapi.responses import RedirectResponse, Response

from app.auth.deps import CSRF_HEADER
from app.auth.security import new_csrf_token, tokens_match

SESSION_CSRF = "csrf"
DEFAULT_NEXT = "/datasets"


def ensure_csrf_token(request: Request) -> str:
    """The visitor's CSRF token, created in the session on first sight."""
    token = request.session.get(SESSION_CSRF)
    if not token:
        token = request.session[SESSION_CSRF] = new_csrf_token()
    return token


def rotate_csrf_token(request: Request) -> str:
    """A fresh CSRF token (at login and logout), so a token seen before cannot be replayed."""
    token = request.session[SESSION_CSRF] = new_csrf_token()
    return token


def csrf_ok(request: Request, form_value: str | None) -> bool:
    """True when the form field or the X-CSRF-Token header matches the session's token."""
    sent = form_value or request.headers.get(CSRF_HEADER)
    return tokens_match(sent, request.session.get(SESSION_CSRF))


def client_address(request: Request) -> str | None:
    """The client's address as uvicorn reports it: with --proxy-headers, the X-Forwarded-For of
    a trusted proxy only. Never read X-Forwarded-For here: any client could claim any address."""
    return request.client.host if request.client else None


def is_htmx(request: Request) -> bool:
    """An HTMX request (not a history restore), which gets a fragment instead of the page."""
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-history-restore-request") != "true"


def safe_next(target: str | None, default: str = DEFAULT_NEXT) -> str:
    """target if it is a path on this site, else default: `next` must never send a user elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return default
    # Browsers read a backslash as a slash ("/\\evil.example"), and control characters are
    # stripped before parsing, so any of them could turn a path into another host.
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


def login_url(request: Request) -> str:
    """The login page, with `next` set to where the visitor was going (or was, for HTMX)."""
    if request.headers.get("hx-request"):
        current = urlsplit(request.headers.get("hx-current-url", ""))
        here = current.path + (f"?{current.query}" if current.query else "")
    elif request.method == "GET":
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    else:
        # A form post cannot be replayed by a redirect; come back to the default page instead.
        here = ""
    here = safe_next(here, "")
    if not here or here.startswith("/login"):
        return "/login"
    return "/login?next=" + quote(here, safe="/")


def created_at(request: Request, target: str) -> Response:
    """The answer to a form that created something (a job): HTMX follows HX-Redirect to its
    page, a plain form post gets a 303 there."""
    if is_htmx(request):
        return Response(status_code=status.HTTP_201_CREATED, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
