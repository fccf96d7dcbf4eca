"""Cookie-authenticated writes must carry the session's CSRF token; Bearer requests need none."""

from fastapi.testclient import TestClient

from tests.web.session import login


def test_cookie_post_without_the_token_is_403(client, engineer):
    login(client, engineer.user.username)
    r = client.post("/api/v1/tokens", json={"name": "x"})
    assert r.status_code == 403
    assert r.json()["detail"] == "missing or invalid CSRF token"
    r = client.post("/account/tokens", data={"name": "x"})
    assert r.status_code == 403
    assert [t["name"] for t in client.get("/api/v1/tokens").json()] == ["test"]


def test_cookie_post_with_a_wrong_token_is_403(client, engineer):
    login(client, engineer.user.username)
    assert client.post("/api/v1/tokens", json={"name": "x"}, headers={"X-CSRF-Token": "nope"}).status_code == 403
    r = client.post("/account/tokens", data={"name": "x", "csrf_token": "nope"})
    assert r.status_code == 403


def test_cookie_post_with_the_header_is_accepted(client, engineer):
    csrf = login(client, engineer.user.username)
    r = client.post("/api/v1/tokens", json={"name": "from the page"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201
    r = client.post("/datasets", data={"name": "via header", "task": "text"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201


def test_cookie_post_with_the_form_field_is_accepted(client, engineer):
    csrf = login(client, engineer.user.username)
    r = client.post("/account/tokens", data={"name": "form token", "csrf_token": csrf})
    assert r.status_code == 201
    assert "form token" in r.text


def test_cookie_delete_needs_the_token_too(client, engineer):
    csrf = login(client, engineer.user.username)
    (row,) = client.get("/api/v1/tokens").json()
    assert client.delete(f"/api/v1/tokens/{row['id']}").status_code == 403
    assert client.delete(f"/api/v1/tokens/{row['id']}", headers={"X-CSRF-Token": csrf}).status_code == 204


def test_another_sessions_token_does_not_work(app, client, engineer, annotator):
    login(client, engineer.user.username)
    with TestClient(app) as other:
        other_csrf = login(other, annotator.user.username)
    r = client.post("/api/v1/tokens", json={"name": "x"}, headers={"X-CSRF-Token": other_csrf})
    assert r.status_code == 403


def test_reads_need_no_csrf_token(client, engineer):
    login(client, engineer.user.username)
    assert client.get("/api/v1/me").status_code == 200
    assert client.get("/account").status_code == 200


def test_bearer_requests_need_no_csrf_token(client, engineer):
    r = client.post("/api/v1/tokens", json={"name": "ci"}, headers=engineer.headers)
    assert r.status_code == 201
    r = client.post("/api/v1/datasets", json={"name": "bearer", "task": "text"}, headers=engineer.headers)
    assert r.status_code == 201


def test_a_bearer_header_wins_over_a_session_cookie(client, engineer, annotator):
    login(client, annotator.user.username)
    r = client.get("/api/v1/me", headers=engineer.headers)
    assert r.json()["username"] == engineer.user.username
    r = client.get("/api/v1/me", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401, "a bad Authorization header is not rescued by the cookie"
