"""One place that turns every error into its answer: ErrorBody JSON for the API and HTMX,
the error page for a browser's page request, a redirect to the login page for a browser
that is not signed in."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.auth.deps import NotAuthenticated
from app.auth.security import HashingBusy
from app.errors import CurateError, ErrorBody, validation_body
from app.web.deps import login_url

log = logging.getLogger("curate.app")

# Browsers get a page for these; API clients always get ErrorBody JSON.
ERROR_TITLES = {
    400: "Bad request", 403: "Not allowed", 404: "Not found", 409: "Conflict", 413: "Too large",
    422: "Not accepted", 429: "Too many attempts", 503: "Try again shortly",
}
# A client told "the database is unavailable" tries again after this many seconds.
UNAVAILABLE_RETRY_SECONDS = 5


def wants_html(request: Request) -> bool:
    """A browser asking for a page (not the API, not HTMX): it gets a page or a redirect."""
    if request.url.path.startswith("/api/") or request.headers.get("hx-request"):
        return False
    return "text/html" in request.headers.get("accept", "")


def error_response(
    request: Request, status_code: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    """The answer to an error: the error page for a browser's page request, else the JSON body."""
    if wants_html(request) and status_code in ERROR_TITLES:
        from app.web.templating import render

        context = {
            "status_code": status_code,
            "title": ERROR_TITLES[status_code],
            "detail": body["detail"],
            "user": getattr(request.state, "user", None),
        }
        response = render(request, "error.html", context, status_code=status_code)
        if headers:
            response.headers.update(headers)
        return response
    return JSONResponse(body, status_code=status_code, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers on app."""

    @app.exception_handler(NotAuthenticated)
    async def _not_authenticated(request: Request, exc: NotAuthenticated):
        body = exc.body()
        if request.headers.get("hx-request"):
            # HTMX would drop a 401 on the floor; this header makes it load the login page instead.
            headers = {**(exc.headers or {}), "HX-Redirect": login_url(request)}
            return JSONResponse(body, status_code=401, headers=headers)
        if wants_html(request):
            return RedirectResponse(login_url(request), status_code=303)
        return JSONResponse(body, status_code=401, headers=exc.headers)

    @app.exception_handler(CurateError)
    async def _curate_error(request: Request, exc: CurateError):
        return error_response(request, exc.status_code, exc.body(), exc.headers)

    @app.exception_handler(HashingBusy)
    async def _hashing_busy(request: Request, exc: HashingBusy):
        # Too many password hashes at once: a short 503 rather than an unbounded queue.
        body = ErrorBody(detail=str(exc)).model_dump(mode="json", exclude_defaults=True)
        return error_response(request, 503, body, {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        body = ErrorBody(detail=str(exc.detail)).model_dump(mode="json", exclude_defaults=True)
        return error_response(request, exc.status_code, body, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError):
        return error_response(request, 422, validation_body(list(exc.errors())))

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeout)
    async def _database_unavailable(request: Request, exc: Exception):
        # The server is down or restarting, the pool is exhausted, or SQLite's write lock
        # stayed busy past the busy timeout: the request changed nothing, so it can be retried.
        log.error("database unavailable for %s %s: %s", request.method, request.url.path, exc)
        body = ErrorBody(detail="the database is unavailable or busy; nothing was changed: try again shortly")
        headers = {"Retry-After": str(UNAVAILABLE_RETRY_SECONDS)}
        return error_response(request, 503, body.model_dump(mode="json", exclude_defaults=True), headers)
