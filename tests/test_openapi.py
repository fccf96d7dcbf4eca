"""The OpenAPI schema a REST client is generated from: short unique operation ids, the bearer
scheme on every authenticated operation, the real media types of file responses; and who may
read the API docs (docs/rest.md, API docs)."""

from __future__ import annotations

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from tests.builders import make_user

FILE_ROUTES = {
    ("get", "/api/v1/datasets/{dataset_id}/export"): {"text/csv", "application/x-ndjson", "application/vnd.apache.parquet"},
    ("get", "/api/v1/datasets/{dataset_id}/annotations"): {"text/csv", "application/x-ndjson"},
    ("get", "/api/v1/samples/{sample_id}/image"): {"image/png", "image/jpeg", "image/gif", "image/webp",
                                                    "application/octet-stream"},
}


def operations(spec: dict):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield method, path, op


def test_operation_ids_are_the_route_functions_names_and_unique(app, client):
    spec = client.get("/openapi.json").json()
    ids = [op["operationId"] for _, _, op in operations(spec)]
    assert len(ids) == len(set(ids)) and len(ids) > 40
    names = {(m.lower(), ctx.path): ctx.name for ctx in iter_route_contexts(app.routes) for m in ctx.methods or ()}
    for method, path, op in operations(spec):
        assert op["operationId"] == names[(method, path)]
    assert {"list_samples", "patch_sample", "export_samples", "get_queue", "enqueue_job"} <= set(ids)


def test_every_authenticated_operation_declares_the_bearer_token(client):
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["token"] == {
        "type": "http", "scheme": "bearer", "description": "an API token: `Authorization: Bearer <token>` (docs/rest.md)"}
    for method, path, op in operations(spec):
        if path == "/api/v1/health":
            assert "security" not in op
            continue
        assert op.get("security") == [{"token": []}], f"{method} {path}"
        assert "401" in op["responses"], f"{method} {path}"


# What each of these routes can answer besides success, exactly (app.api.error_statuses).
ERROR_STATUSES = {
    ("get", "/api/v1/health"): {"503"},
    ("get", "/api/v1/datasets"): {"401", "503"},
    ("get", "/api/v1/datasets/{dataset_id}"): {"401", "404", "422", "503"},
    ("get", "/api/v1/datasets/{dataset_id}/samples"): {"400", "401", "404", "409", "422", "503"},
    ("patch", "/api/v1/samples/{sample_id}"): {"400", "401", "403", "404", "409", "413", "422", "428", "503"},
    ("post", "/api/v1/datasets/{dataset_id}/imports"): {"400", "401", "403", "404", "409", "413", "422", "503"},
    ("get", "/api/v1/users"): {"401", "403", "503"},
    ("get", "/api/v1/runs/{run_id}"): {"401", "404", "422", "503"},
}


def test_each_route_documents_the_errors_it_can_answer_with_the_error_body(client):
    spec = client.get("/openapi.json").json()
    for (method, path), expected in ERROR_STATUSES.items():
        responses = spec["paths"][path][method]["responses"]
        assert {code for code in responses if code[0] in "45"} == expected, (method, path)
    for method, path, op in operations(spec):
        for code, response in op["responses"].items():
            if code[0] in "45":
                schema = response["content"]["application/json"]["schema"]
                assert schema["$ref"].split("/")[-1] in ("ErrorBody", "SampleConflict"), (method, path, code, schema)


def test_file_responses_declare_their_media_types_not_json(client):
    spec = client.get("/openapi.json").json()
    for (method, path), types in FILE_ROUTES.items():
        content = spec["paths"][path][method]["responses"]["200"]["content"]
        assert set(content) == types, path
        assert all(c["schema"] == {"type": "string", "format": "binary"} for c in content.values())


def test_the_docs_pages_load_only_vendored_assets_without_inline_script(client):
    for path, bundle in (("/docs", "/static/vendor/swagger-ui-bundle.js"), ("/redoc", "/static/vendor/redoc.standalone.js")):
        r = client.get(path)
        assert r.status_code == 200
        html = r.text
        assert f'<script src="{bundle}"></script>' in html and '<script src="/static/js/api-docs.js"></script>' in html
        assert html.count("<script") == 2 and "http" not in html.replace('http-equiv', ''), "no CDN, no inline script"
        csp = r.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe-eval" not in csp
        assert client.get(bundle).status_code == 200
    assert "style-src 'self';" in client.get("/login").headers["content-security-policy"], "other pages keep theirs"


@pytest.mark.parametrize("mode", ["users", "off"])
def test_the_api_docs_can_be_kept_to_users_or_switched_off(settings, engine, db, mode):
    from app.main import create_app

    app = create_app(settings.model_copy(update={"api_docs": mode}))
    with TestClient(app) as c:
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert c.get(path).status_code == (401 if mode == "users" else 404), path
        user = make_user(db, "annotator")
        signed = c.get("/openapi.json", headers=user.headers)
        assert signed.status_code == (200 if mode == "users" else 404)
        if mode == "users":
            assert signed.json()["info"]["title"] == "Curate"
            assert c.get("/docs", headers=user.headers).status_code == 200
