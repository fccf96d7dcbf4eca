"""create_app(): routers, static files, templates, middleware."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import HTTPException
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from app import __version__
from app.auth.deps import NotAuthenticated
from app.auth.security import HashingBusy, configure_hashing
from app.config import Settings, get_settings, resolve_secret_key
from app.db import get_engine
from app.middleware import BodySizeLimit, SecurityHeaders, SessionCookie
from app.web.deps import login_url

ROOT = Path(__file__).resolve().parent.parent
# Browsers get a page for these; API clients always get {"detail": ...}.
ERROR_TITLES = {403: "Not allowed", 404: "Not found", 409: "Conflict", 503: "Busy"}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the web application for the given settings (the environment's by default).

    Raises InsecureSecretKey when the session key is weak or its file is readable by others.
    """
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    secret_key = resolve_secret_key(settings)
    app = FastAPI(title="Curate", version=__version__, docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.engine = get_engine(settings.resolved_database_url)
    configure_hashing(settings.password_hash_concurrency, settings.password_hash_wait_seconds)

    from app.api import build_router
    from app.search.pages import router as search_pages_router
    from app.web.overview import router as overview_router
    from app.web.review import router as review_router
    from app.web.routes import router as web_router
    from app.web.training import router as training_router

    app.include_router(build_router())
    app.include_router(web_router)
    app.include_router(overview_router)
    app.include_router(training_router)
    app.include_router(review_router)
    app.include_router(search_pages_router)
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")

    @app.exception_handler(NotAuthenticated)
    async def _not_authenticated(request: Request, exc: NotAuthenticated):
        if request.headers.get("hx-request"):
            # HTMX would drop a 401 on the floor; this header makes it load the login page instead.
            headers = {**(exc.headers or {}), "HX-Redirect": login_url(request)}
            return JSONResponse({"detail": exc.detail}, status_code=401, headers=headers)
        if _wants_html(request):
            return RedirectResponse(login_url(request), status_code=303)
        return JSONResponse({"detail": exc.detail}, status_code=401, headers=exc.headers)

    @app.exception_handler(HashingBusy)
    async def _hashing_busy(request: Request, exc: HashingBusy):
        # Too many password hashes at once: a short 503 rather than an unbounded queue.
        busy = StarletteHTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after)})
        return await _http_error(request, busy)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if _wants_html(request) and exc.status_code in ERROR_TITLES:
            from app.web.templating import render

            context = {
                "status_code": exc.status_code,
                "title": ERROR_TITLES[exc.status_code],
                "detail": exc.detail,
                "user": getattr(request.state, "user", None),
            }
            response = render(request, "error.html", context, status_code=exc.status_code)
            response.headers.update(exc.headers or {})
            return response
        return await http_exception_handler(request, exc)

    app.add_middleware(
        SessionCookie,
        secret_key=secret_key,
        session_cookie=settings.session_cookie,
        max_age=settings.session_max_age,
        same_site="lax",
        secure=settings.secure_cookies,
        bound_host=settings.host,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(SecurityHeaders)
    return app


def _wants_html(request: Request) -> bool:
    """Browser page requests get redirects to the login page; API clients get JSON."""
    if request.url.path.startswith("/api/") or request.headers.get("hx-request"):
        return False
    return "text/html" in request.headers.get("accept", "")


__all__ = ["create_app", "HTTPException"]
