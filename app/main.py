"""create_app(): routers, static files, templates, middleware."""

from __future__ import annotations

import gc
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app import __version__, api_docs, error_handlers
from app.auth.security import configure_hashing
from app.config import Settings, get_settings, resolve_secret_key
from app.db import get_engine
from app.middleware import BodySizeLimit, SecurityHeaders, SessionCookie

ROOT = Path(__file__).resolve().parent.parent
API_DESCRIPTION = (
    "Curate's REST API: datasets, imports, samples and their labels, the review queue, jobs, runs and "
    "exports. Authenticate with an API token (`Authorization: Bearer <token>`, from `POST /api/v1/tokens` "
    "or the account page). Guide: docs/rest.md in the repository."
)


def operation_id(route) -> str:
    """A route's OpenAPI operationId: its function's name (`list_samples`), short and stable
    for generated clients; tests/test_openapi.py checks they are unique."""
    return route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the web application for the given settings (the environment's by default).

    Raises InsecureSecretKey when the session key is weak or its file is readable by others.
    """
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    secret_key = resolve_secret_key(settings)
    app = FastAPI(title="Curate", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                  generate_unique_id_function=operation_id, description=API_DESCRIPTION)
    app.state.settings = settings
    app.state.engine = get_engine(settings.resolved_database_url)
    configure_hashing(settings.password_hash_concurrency, settings.password_hash_wait_seconds)

    from app.api import build_router
    from app.web import pages_router

    app.include_router(build_router())
    api_docs.install(app, settings)
    app.include_router(pages_router())
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")

    error_handlers.install(app)

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


def serving_app(settings: Settings | None = None) -> FastAPI:
    """create_app for a server process (`curate serve`, `uvicorn app.main:serving_app --factory`).

    What is alive once the app is built (the modules, pandas and scikit-learn among them: some
    250,000 objects) lives as long as the process. Moved out of the collector's sight
    (gc.freeze), it is no longer walked by every full collection, each of which took about
    120 ms, every few seconds of steady traffic (a listing's p99 at 20 ms became 150 ms).
    Not in create_app itself: tests build many apps in one process, and a frozen app would
    never be freed."""
    app = create_app(settings)
    gc.collect()
    gc.freeze()
    return app


__all__ = ["create_app", "serving_app"]
