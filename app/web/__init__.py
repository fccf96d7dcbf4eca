"""HTML pages and their HTMX fragments: every page route of the app lives in this package,
one module per area, beside the REST routes of app/<domain>/routes.py that share its services."""

from fastapi import APIRouter


def pages_router() -> APIRouter:
    """Every page router of the app."""
    from app.web.duplicates import router as duplicates
    from app.web.experiments import router as experiments
    from app.web.grid import router as grid
    from app.web.history import router as history
    from app.web.issues import router as issues
    from app.web.overview import router as overview
    from app.web.review import router as review
    from app.web.routes import router as accounts
    from app.web.search import router as search
    from app.web.team import router as team
    from app.web.training import router as training

    pages = APIRouter(include_in_schema=False)
    for sub in (accounts, overview, experiments, training, review, grid, history, search, team, issues, duplicates):
        pages.include_router(sub)
    return pages
