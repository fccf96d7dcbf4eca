"""The REST API's own documentation: Swagger UI at /docs and ReDoc at /redoc, both from the
copies under static/vendor (no CDN), started by static/js/api-docs.js (no inline script),
and the schema at /openapi.json (docs/rest.md, API docs).

Who reads them is `CURATE_API_DOCS`: `public` (the default: the schema describes the
routes, not the data, and client generators fetch it without a token), `users` (a signed-in
browser session or an API token), or `off`.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import HTMLResponse, JSONResponse

from app.auth.deps import get_current_user
from app.config import Settings
from app.middleware import CSP

# The viewers set style attributes and (ReDoc) insert <style> elements as they render, and
# ReDoc runs its search index in a worker it builds from its own bundle (a blob: URL): on
# these two pages only, inline styles and blob: workers are allowed; scripts stay 'self'.
DOCS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'") + "; worker-src 'self' blob:"

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Curate API</title>
<link rel="icon" href="/static/favicon.svg">
{css}
</head>
<body>
<div id="{element}" data-openapi="/openapi.json"></div>
<script src="/static/vendor/{bundle}"></script>
<script src="/static/js/api-docs.js"></script>
</body>
</html>
"""


def _page(title: str, element: str, bundle: str, css: str = "") -> HTMLResponse:
    html = _PAGE.format(title=title, element=element, bundle=bundle, css=css)
    return HTMLResponse(html, headers={"content-security-policy": DOCS_CSP})


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the docs pages and the schema as settings.api_docs says (the app is built with
    FastAPI's own docs and schema routes off)."""
    if settings.api_docs == "off":
        return
    router = APIRouter(include_in_schema=False,
                       dependencies=[Depends(get_current_user)] if settings.api_docs == "users" else [])

    @router.get("/openapi.json")
    def openapi_schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    @router.get("/docs")
    def swagger_ui() -> HTMLResponse:
        return _page("Swagger UI", "swagger-ui", "swagger-ui-bundle.js",
                     '<link rel="stylesheet" href="/static/vendor/swagger-ui.css">')

    @router.get("/redoc")
    def redoc() -> HTMLResponse:
        return _page("ReDoc", "redoc", "redoc.standalone.js")

    app.include_router(router)
