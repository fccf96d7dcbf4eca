"""The REST API, version 1: every domain router mounted under /api/v1."""

from fastapi import APIRouter
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy import text

from app.db import SessionDep
from app.errors import ERROR_RESPONSES

# Reads that answer 409 when the dataset's state does not allow them (the route functions'
# names, which are the operation ids): ranking or comparing before a finished run, by a run
# whose predictions retention dropped, a search without a completed trial, an export whose
# feature names clash with its columns.
CONFLICT_ON_READ = {
    "list_samples": "ordered by a score before the dataset has a finished run, or by a run whose predictions were dropped",
    "get_queue": "the queue's run has no predictions left (dropped by retention)",
    "compare_runs": "the dataset has no finished run to compare, or a run's predictions were dropped",
    "get_search": "the search has no completed trial yet",
    "export_samples": "the dataset's feature names clash with the export's columns",
    "disagreements": "the disagreement queue's run has no predictions left",
    "dataset_leakage": "the dataset's run has no predictions left (dropped by retention)",
}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

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
    subs = (auth_router, datasets_router, io_router, labels_router, queue_router, annotation_router, jobs_router,
            runs_router, compare_router, search_router, advice_router, health_router)
    for sub in (router, *subs):
        for route in sub.routes:
            if isinstance(route, APIRoute):
                # Each route documents the error statuses it can answer, with the error body (a
                # route's own entries win, e.g. PATCH's 409 with the sample's current state).
                route.responses = {**error_responses(route), **route.responses}
    api.include_router(router)
    for sub in subs:
        api.include_router(sub, prefix="/api/v1")
    return api


def _walk(dependant: Dependant):
    yield dependant
    for sub in dependant.dependencies:
        yield from _walk(sub)


def error_statuses(route: APIRoute) -> set[int]:
    """The error statuses a route can answer, read from what it depends on:

    401 when it needs credentials; 403 when it needs more than the lowest role, or is a write
    (a cookie session's write without its CSRF token); 404 for an object in the path; 422
    for any parameter or body; 400 and 413 for a body (a malformed or oversized upload), 400
    too for a cursor, 400 and 428 for an If-Match header (malformed, missing); 409 for every write (it clashes with the state:
    a version, a name, a running job) and the reads of CONFLICT_ON_READ; 503 for all (the
    database is down or busy)."""
    from app.auth.deps import RoleRequired, get_current_user

    deps = list(_walk(route.dependant))
    calls = [d.call for d in deps]
    statuses = {503}
    if get_current_user in calls:
        statuses.add(401)
        roles = [c.role.rank for c in calls if isinstance(c, RoleRequired)]
        if max(roles, default=1) > 1 or not set(route.methods) <= SAFE_METHODS:
            statuses.add(403)
    if "{" in route.path:
        statuses.add(404)
    params = [p for d in deps for p in (*d.path_params, *d.query_params, *d.header_params, *d.body_params)]
    if params:
        statuses.add(422)
    names = {p.alias.lower() for p in params}
    if any(d.body_params for d in deps):
        statuses |= {400, 413}
    if "cursor" in names:
        statuses.add(400)
    if names & {"if-match", "if_match"}:
        statuses |= {400, 428}
    if not set(route.methods) <= SAFE_METHODS or route.name in CONFLICT_ON_READ:
        statuses.add(409)
    return statuses


def error_responses(route: APIRoute) -> dict[int | str, dict]:
    out: dict[int | str, dict] = {code: ERROR_RESPONSES[code] for code in sorted(error_statuses(route))}
    if route.name in CONFLICT_ON_READ:
        out[409] = {**ERROR_RESPONSES[409], "description": CONFLICT_ON_READ[route.name]}
    return out
