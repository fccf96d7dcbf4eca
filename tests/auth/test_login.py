"""Signing in and out in the browser: the form, the session cookie, `next`, CSRF."""

import base64
import json
from http.cookies import SimpleCookie

import pytest
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner

from app.config import PLACEHOLDER_SECRET, InsecureSecretKey, Settings
from app.main import create_app
from app.web.deps import safe_next
from tests.web.session import csrf_from, htmx, login

LOGIN_FAILED = "That username and password do not match an active account."


def _post_login(client, username, password, next_=""):
    token = csrf_from(client.get("/login").text)
    data = {"username": username, "password": password, "csrf_token": token, "next": next_}
    return client.post("/login", data=data, follow_redirects=False)


def _set_cookie(response) -> str:
    (header,) = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    return header


def test_every_visitor_gets_a_csrf_token_in_a_signed_session(client):
    r = client.get("/login")
    assert r.status_code == 200
    token = csrf_from(r.text)
    assert f'name="csrf_token" value="{token}"' in r.text
    assert "curate_session=" in _set_cookie(r)
    # The same visitor keeps the same token until they sign in.
    assert csrf_from(client.get("/login").text) == token


def test_login_sets_an_httponly_samesite_lax_session_cookie(client, engineer):
    r = _post_login(client, engineer.user.username, engineer.password)
    assert r.status_code == 303
    assert r.headers["location"] == "/datasets"
    cookie = SimpleCookie(_set_cookie(r))["curate_session"]
    assert cookie["httponly"] is True
    assert cookie["samesite"].lower() == "lax"
    assert not cookie["secure"]
    page = client.get("/datasets")
    assert page.status_code == 200 and engineer.user.username in page.text


def test_session_cookie_is_secure_when_configured(settings, engine, engineer):
    app = create_app(settings.model_copy(update={"secure_cookies": True}))
    with TestClient(app, base_url="https://testserver") as c:
        r = c.get("/login")
        cookie = SimpleCookie(_set_cookie(r))["curate_session"]
        assert cookie["secure"] is True and cookie["httponly"] is True


@pytest.mark.parametrize(
    ("mode", "base_url", "secure"),
    [
        ("auto", "https://testserver", True),
        ("auto", "http://testserver", False),
        ("never", "https://testserver", False),
        ("always", "http://testserver", True),
    ],
)
def test_session_cookie_is_secure_over_tls_in_auto_mode(settings, engine, mode, base_url, secure):
    app = create_app(settings.model_copy(update={"secure_cookies": mode}))
    with TestClient(app, base_url=base_url) as c:
        cookie = SimpleCookie(_set_cookie(c.get("/login")))["curate_session"]
        assert bool(cookie["secure"]) is secure


def test_auto_mode_does_not_read_forwarded_headers_itself(settings, engine):
    # X-Forwarded-Proto counts only once uvicorn (--proxy-headers) has trusted the proxy sending it.
    with TestClient(create_app(settings)) as c:
        r = c.get("/login", headers={"X-Forwarded-Proto": "https"})
        assert not SimpleCookie(_set_cookie(r))["curate_session"]["secure"]


def test_served_on_a_network_address_the_cookie_is_secure_even_over_http(settings, engine):
    with TestClient(create_app(settings.model_copy(update={"host": "0.0.0.0"}))) as c:
        assert SimpleCookie(_set_cookie(c.get("/login")))["curate_session"]["secure"] is True


def test_a_cookie_signed_with_the_old_placeholder_key_signs_nobody_in(
    database_url, engine, tmp_path, monkeypatch, admin
):
    """Default settings used to sign cookies with a published key, so anyone could forge an admin's."""
    monkeypatch.delenv("CURATE_SECRET_KEY", raising=False)
    defaults = Settings(database_url=database_url, data_dir=tmp_path / "data", _env_file=None)
    app = create_app(defaults)
    with TestClient(app) as c:
        login(c, admin.user.username)
        genuine = c.cookies["curate_session"]
        assert c.get("/api/v1/me").status_code == 200
    payload = genuine.rsplit(".", 2)[0]
    # The same session re-signed with the placeholder, and a session made up from scratch.
    resigned = TimestampSigner(PLACEHOLDER_SECRET).sign(payload).decode()
    made_up = base64.b64encode(json.dumps({"user_id": admin.user.id}).encode())
    forged_from_scratch = TimestampSigner(PLACEHOLDER_SECRET).sign(made_up).decode()
    for forged in (resigned, forged_from_scratch):
        with TestClient(app, cookies={"curate_session": forged}) as attacker:
            assert attacker.get("/api/v1/me").status_code == 401
            assert attacker.get("/admin/users", follow_redirects=False).status_code == 401
    with TestClient(app, cookies={"curate_session": genuine}) as owner:
        assert owner.get("/api/v1/me").json()["username"] == admin.user.username


@pytest.mark.parametrize("secret", [PLACEHOLDER_SECRET, "too-short"])
def test_the_app_will_not_be_built_with_a_weak_key(settings, engine, secret):
    with pytest.raises(InsecureSecretKey, match="CURATE_SECRET_KEY is refused"):
        create_app(settings.model_copy(update={"secret_key": secret}))


def test_a_wrong_password_shows_a_calm_error(client, engineer):
    r = _post_login(client, engineer.user.username, "not-the-password")
    assert r.status_code == 400
    assert LOGIN_FAILED in r.text
    assert f'value="{engineer.user.username}"' in r.text, "the username stays filled in"
    assert "not-the-password" not in r.text
    assert client.get("/datasets", follow_redirects=False).status_code == 401


def test_failed_logins_do_not_tell_whether_the_user_exists(client, db, engineer, annotator):
    annotator.user.is_active = False
    db.commit()
    bodies = set()
    for username, password in (
        (engineer.user.username, "wrong-password"),
        ("no-such-user", "wrong-password"),
        (annotator.user.username, annotator.password),
    ):
        r = _post_login(client, username, password)
        assert r.status_code == 400
        assert LOGIN_FAILED in r.text
        bodies.add(r.text.replace(f'value="{username}"', 'value=""'))
    assert len(bodies) == 1, "the three failures must render the same page"


def test_login_without_the_csrf_token_is_refused(client, engineer):
    client.get("/login")
    data = {"username": engineer.user.username, "password": engineer.password}
    r = client.post("/login", data=data, follow_redirects=False)
    assert r.status_code == 403
    assert "expired" in r.text
    r = client.post("/login", data={**data, "csrf_token": "forged"}, follow_redirects=False)
    assert r.status_code == 403
    assert client.get("/datasets", follow_redirects=False).status_code == 401


def test_login_rotates_the_csrf_token(client, engineer):
    before = csrf_from(client.get("/login").text)
    after = login(client, engineer.user.username)
    assert before != after
    r = client.post("/api/v1/tokens", json={"name": "x"}, headers={"X-CSRF-Token": before})
    assert r.status_code == 403
    r = client.post("/api/v1/tokens", json={"name": "x"}, headers={"X-CSRF-Token": after})
    assert r.status_code == 201


def test_next_takes_the_user_back_to_a_local_page(client, engineer):
    r = _post_login(client, engineer.user.username, engineer.password, "/account?tab=tokens")
    assert r.headers["location"] == "/account?tab=tokens"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "/\t/evil.example",
        "http:/evil.example",
        "evil.example",
    ],
)
def test_next_never_redirects_off_site(client, engineer, target):
    r = _post_login(client, engineer.user.username, engineer.password, target)
    assert r.status_code == 303
    assert r.headers["location"] == "/datasets"


def test_login_page_drops_an_off_site_next(client):
    r = client.get("/login", params={"next": "//evil.example"})
    assert 'name="next" value=""' in r.text
    r = client.get("/login", params={"next": "/account"})
    assert 'name="next" value="/account"' in r.text


def test_safe_next():
    assert safe_next("/datasets/3?x=1#y") == "/datasets/3?x=1#y"
    assert safe_next("") == "/datasets"
    assert safe_next(None, "") == ""
    assert safe_next("/ok\x00") == "/datasets"


def test_an_unauthenticated_page_redirects_to_login_with_next(client):
    r = client.get("/account?x=1", headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/account%3Fx%3D1"
    page = client.get(r.headers["location"])
    assert 'name="next" value="/account?x=1"' in page.text


def test_an_unauthenticated_htmx_request_is_sent_to_login(client):
    r = client.post("/datasets", data={"name": "x"}, headers=htmx(), follow_redirects=False)
    assert r.status_code == 401
    assert r.headers["hx-redirect"] == "/login?next=/datasets"


def test_an_unauthenticated_api_request_gets_json(client):
    r = client.get("/api/v1/me", headers={"Accept": "text/html"})
    assert r.status_code == 401 and r.json()["detail"] == "not authenticated"


def test_logout_needs_the_csrf_token(client, engineer):
    csrf = login(client, engineer.user.username)
    r = client.post("/logout", follow_redirects=False)
    assert r.status_code == 403
    assert client.get("/datasets").status_code == 200, "still signed in"
    r = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/datasets", follow_redirects=False).status_code == 401
    assert csrf_from(client.get("/login").text) != csrf


def test_a_deactivated_user_is_signed_out(client, db, engineer):
    login(client, engineer.user.username)
    engineer.user.is_active = False
    db.commit()
    r = client.get("/datasets", headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_home_redirects_to_datasets(client):
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/datasets"
