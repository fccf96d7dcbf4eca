"""The REST API, version 1: every domain router mounted under /api/v1."""

from fastapi import APIRouter
from sqlalchemy import text

from app.db import SessionDep
from app.errors import ERROR_RESPONSES

router = APIRouter(prefix="/api/v1")


@router.get("/health", tags=["health"])
def health(session: SessionDep) -> dict:
    """Liveness and database reachability; needs no authentication."""
    session.execute(text("SELECT 1"))
    return {"status": "ok", "database": "ok"}


def build_router() -> APIRouter:
    """Every REST router of the app, under /api/v1."""
    from app.advisor.routes import router as advice_router
    from app.auth.routes import router as auth_router
    from app.datasets.io_routes import router as io_router
    from app.datasets.routes import router as datasets_router
    from app.evaluation.routes import router as compare_router
    from app.health.routes import router as health_router
    from app.jobs.routes import router as jobs_router
    from app.labels.annotation_routes import router as annotation_router
    from app.labels.queue_routes import router as queue_router
    from app.labels.routes import router as labels_router
    from app.runs.routes import router as runs_router
    from app.search.routes import router as search_router

    api = APIRouter()
    api.include_router(router, responses={503: ERROR_RESPONSES[503]})
    for sub in (auth_router, datasets_router, io_router, labels_router, queue_router, annotation_router, jobs_router, runs_router, compare_router,
                search_router, advice_router, health_router):
        # Every route documents the error body (a route's own entries win, e.g. PATCH's 409).
        api.include_router(sub, prefix="/api/v1", responses=ERROR_RESPONSES)
    return api
