"""The whole API under generated requests: no server error, every answer as documented.

Schemathesis reads /openapi.json and calls every operation with generated (and boundary)
parameters and bodies, signed in as an admin on a dataset with samples and a run; each
answer must not be a 5xx and must match the schema published for its status. Bounded to a
few examples per operation so the suite stays fast; bench/security.py runs a longer one.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.builders import add_samples, make_dataset, make_user
from tests.web.review_builders import confident, make_run

# Revoking the caller's token or deactivating the caller would end the run's credentials.
SELF_DESTRUCTIVE = ("DELETE /api/v1/tokens/{token_id}", "PATCH /api/v1/users/{user_id}")


def test_no_server_error_and_answers_as_documented(app, db):
    from hypothesis import given
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

    admin = make_user(db, "admin")
    ds = make_dataset(db, classes=["a", "b", "c"])
    samples = add_samples(db, ds, [{"label": "a"}, {"label": "b"}, {"label": None}])
    make_run(db, ds, {s.id: confident("b", ds.classes) for s in samples})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(name=list(SELF_DESTRUCTIVE))
    headers = {"Authorization": f"Bearer {admin.token}"}
    failures: dict[str, str] = {}
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        tested += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def call(case):
            case.call_and_validate(headers=headers, checks=[not_a_server_error, response_schema_conformance, status_code_conformance])

        try:
            call()
        except Exception as exc:  # every operation is tried; all failures are reported together
            failures[operation.label] = f"{type(exc).__name__}: {str(exc)[:600]}"
    assert tested >= 30
    assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in failures.items())


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/api/v1/datasets/9223372036854775808"),
        ("GET", "/api/v1/datasets/2147483648"),
        ("GET", "/api/v1/samples/99999999999999999999999"),
        ("GET", "/api/v1/jobs/2147483648"),
        ("GET", "/api/v1/runs/-1"),
        ("GET", "/api/v1/datasets/{ds}/samples?run=2147483648"),
        ("GET", "/api/v1/datasets/{ds}/label-events?before=9223372036854775808"),
        ("GET", "/api/v1/datasets/{ds}/export?snapshot=2147483648"),
        ("GET", "/api/v1/datasets/{ds}/compare?run=2147483648"),
        ("POST", "/api/v1/label-events/2147483648/revert"),
    ],
)
def test_out_of_range_ids_are_refused_at_the_edge(client, db, admin, method, path):
    ds = make_dataset(db)
    r = client.request(method, path.format(ds=ds.id), headers=admin.headers)
    assert r.status_code in (404, 422), (path, r.status_code, r.text)
    assert isinstance(r.json()["detail"], str)


def test_out_of_range_ids_in_bodies_headers_and_cursors(client, db, admin):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    h = admin.headers
    r = client.post(f"/api/v1/datasets/{ds.id}/samples/bulk", json={"label": "b", "items": [{"id": 2**63, "version": 1}]}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"][:3] == ["body", "items", 0]
    r = client.patch(f"/api/v1/samples/{s.id}", json={"label": "b"}, headers={**h, "If-Match": str(2**64)})
    assert r.status_code == 400
    import base64
    import json

    for values in ([2**70, 1], [1e400, 1], [True, 1], [[1], 1]):
        cursor = base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")
        r = client.get(f"/api/v1/datasets/{ds.id}/samples", params={"order": "id", "cursor": cursor}, headers=h)
        assert r.status_code == 422, (values, r.status_code)
