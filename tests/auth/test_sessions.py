"""Browser sessions live on the server: logout, a password change, deactivation and an admin's
"sign out everywhere" end them at once, for every copy of the cookie."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner
from sqlalchemy import select, update

from app.auth.security import hash_token
from app.models import User, UserSession, utcnow
from tests.builders import make_user
from tests.conftest import TEST_SECRET
from tests.web.session import htmx, login

COOKIE = "curate_session"


def _copy(app, client: TestClient) -> TestClient:
    """Another browser holding a copy of client's session cookie (a stolen or synced cookie)."""
    return TestClient(app, cookies={COOKIE: client.cookies[COOKIE]})


def _signed_in(client: TestClient) -> bool:
    r = client.get("/api/v1/me")
    assert r.status_code in (200, 401), r.text
    return r.status_code == 200


def _cookie_payload(client: TestClient) -> dict:
    data = client.cookies[COOKIE].rsplit(".", 2)[0]
    return json.loads(base64.b64decode(data))


def test_the_cookie_names_a_session_stored_only_as_a_hash(client, db, engineer):
    login(client, engineer.user.username)
    token = _cookie_payload(client)["sid"]
    (row,) = db.scalars(select(UserSession).where(UserSession.user_id == engineer.user.id)).all()
    assert row.token_hash == hash_token(token) and token not in row.token_hash
    assert row.revoked_at is None and row.user_agent == "testclient"
    assert "user_id" not in _cookie_payload(client), "the cookie no longer says who the user is"


def test_logout_ends_every_copy_of_the_session(app, client, engineer):
    csrf = login(client, engineer.user.username)
    with _copy(app, client) as copied:
        assert _signed_in(copied)
        r = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
        assert r.status_code == 303
        assert not _signed_in(client)
        assert not _signed_in(copied), "a cookie copied before logout still signs in"
        assert copied.get("/datasets", headers={"Accept": "text/html"}, follow_redirects=False).status_code == 303


def test_cookies_from_before_server_side_sessions_sign_nobody_in(app, engineer):
    """Sessions from before migration 0004 held the user id itself; their owners sign in again."""
    payload = base64.b64encode(json.dumps({"user_id": engineer.user.id, "csrf": "x"}).encode())
    old = TimestampSigner(TEST_SECRET).sign(payload).decode()
    with TestClient(app, cookies={COOKIE: old}) as c:
        assert not _signed_in(c)


def test_a_password_change_signs_out_the_other_sessions_and_keeps_this_one(app, client, annotator):
    csrf = login(client, annotator.user.username)
    with TestClient(app) as laptop, _copy(app, client) as same_browser:
        login(laptop, annotator.user.username)
        data = {"current_password": "password-123", "new_password": "a-new-password"}
        r = client.post("/account/password", data=data, headers=htmx(csrf))
        assert r.status_code == 200 and "Your password has been changed." in r.text
        assert _signed_in(client), "the browser that changed the password stays signed in"
        assert _signed_in(same_browser)
        assert not _signed_in(laptop), "a session started before the change still works"
        login(laptop, annotator.user.username, "a-new-password")
        assert _signed_in(laptop)


def test_a_wrong_current_password_signs_nobody_out(app, client, annotator):
    csrf = login(client, annotator.user.username)
    with TestClient(app) as laptop:
        login(laptop, annotator.user.username)
        data = {"current_password": "not-the-password", "new_password": "a-new-password"}
        assert client.post("/account/password", data=data, headers=htmx(csrf)).status_code == 422
        assert _signed_in(laptop)


def test_deactivation_through_the_api_ends_sessions_for_good(app, client, admin, engineer):
    login(client, engineer.user.username)
    r = client.patch(f"/api/v1/users/{engineer.user.id}", json={"is_active": False}, headers=admin.headers)
    assert r.status_code == 200
    assert not _signed_in(client)
    assert client.get("/api/v1/me", headers=engineer.headers).status_code == 401, "tokens stop too"
    r = client.patch(f"/api/v1/users/{engineer.user.id}", json={"is_active": True}, headers=admin.headers)
    assert r.status_code == 200
    assert not _signed_in(client), "reactivating must not sign an old cookie back in"
    # API tokens are credentials of their own: they work again once the user is active.
    assert client.get("/api/v1/me", headers=engineer.headers).status_code == 200
    login(client, engineer.user.username)
    assert _signed_in(client)


def test_deactivation_on_the_users_page_ends_sessions_for_good(app, client, db, admin, engineer):
    csrf = login(client, admin.user.username)
    with TestClient(app) as theirs:
        login(theirs, engineer.user.username)
        r = client.post(f"/admin/users/{engineer.user.id}", data={"active": "false"}, headers=htmx(csrf))
        assert r.status_code == 200
        client.post(f"/admin/users/{engineer.user.id}", data={"active": "true"}, headers=htmx(csrf))
        db.expire_all()
        assert db.get(User, engineer.user.id).is_active
        assert not _signed_in(theirs)


def test_an_admin_signs_a_user_out_everywhere_through_the_api(app, client, db, admin, engineer):
    with TestClient(app) as one, TestClient(app) as two:
        login(one, engineer.user.username)
        login(two, engineer.user.username)
        r = client.get(f"/api/v1/users/{engineer.user.id}/sessions", headers=admin.headers)
        assert r.status_code == 200
        listed = r.json()
        assert len(listed) == 2 and {s["user_agent"] for s in listed} == {"testclient"}
        assert not any("token" in key for key in listed[0]), "session tokens are never shown"

        r = client.delete(f"/api/v1/users/{engineer.user.id}/sessions", headers=admin.headers)
        assert r.status_code == 200 and r.json() == {"revoked": 2}
        assert not _signed_in(one) and not _signed_in(two)
        assert client.get(f"/api/v1/users/{engineer.user.id}/sessions", headers=admin.headers).json() == []
        assert client.delete(f"/api/v1/users/{engineer.user.id}/sessions", headers=admin.headers).json() == {
            "revoked": 0
        }
    # Signing out everywhere is about browsers: the user stays active, their tokens keep working.
    assert client.get("/api/v1/me", headers=engineer.headers).status_code == 200


def test_only_admins_sign_users_out_and_unknown_users_are_404(app, client, admin, engineer, annotator):
    with TestClient(app) as theirs:
        login(theirs, annotator.user.username)
        r = client.delete(f"/api/v1/users/{annotator.user.id}/sessions", headers=engineer.headers)
        assert r.status_code == 403
        assert client.get(f"/api/v1/users/{annotator.user.id}/sessions", headers=engineer.headers).status_code == 403
        assert _signed_in(theirs)
    assert client.delete("/api/v1/users/999999/sessions", headers=admin.headers).status_code == 404
    assert client.get("/api/v1/users/999999/sessions", headers=admin.headers).status_code == 404


def test_an_admin_signs_a_user_out_everywhere_on_the_users_page(app, client, admin, engineer, annotator):
    csrf = login(client, admin.user.username)
    with TestClient(app) as theirs:
        login(theirs, engineer.user.username)
        html = client.get("/admin/users").text
        assert f'action="/admin/users/{engineer.user.id}/sessions/revoke"' in html
        assert f'action="/admin/users/{annotator.user.id}/sessions/revoke"' not in html, "nothing to sign out"
        assert f'action="/admin/users/{admin.user.id}/sessions/revoke"' not in html, "not on one's own row"
        r = client.post(f"/admin/users/{engineer.user.id}/sessions/revoke", headers=htmx(csrf))
        assert r.status_code == 200
        assert f"Signed <strong>{engineer.user.username}</strong> out everywhere (1 session)." in r.text
        assert not _signed_in(theirs)
        assert _signed_in(client), "the admin stays signed in"
    assert client.post("/admin/users/999999/sessions/revoke", headers=htmx(csrf)).status_code == 404


def test_the_users_page_action_needs_an_admin_and_the_csrf_token(app, client, admin, engineer, annotator):
    csrf = login(client, engineer.user.username)
    with TestClient(app) as theirs:
        login(theirs, annotator.user.username)
        assert client.post(f"/admin/users/{annotator.user.id}/sessions/revoke", headers=htmx(csrf)).status_code == 403
        client.cookies.clear()
        login(client, admin.user.username)
        assert client.post(f"/admin/users/{annotator.user.id}/sessions/revoke").status_code == 403
        assert _signed_in(theirs)


def test_my_sessions_on_the_account_page(app, client, db, engineer):
    csrf = login(client, engineer.user.username)
    with TestClient(app, headers={"User-Agent": "Laptop Browser/1.0"}) as laptop:
        login(laptop, engineer.user.username)
        html = client.get("/account").text
        assert html.count("this browser") == 1 and "Laptop Browser/1.0" in html
        laptop_session = db.scalar(select(UserSession).where(UserSession.user_agent == "Laptop Browser/1.0"))
        assert f'action="/account/sessions/{laptop_session.id}/revoke"' in html
        r = client.post(f"/account/sessions/{laptop_session.id}/revoke", headers=htmx(csrf))
        assert r.status_code == 200
        assert r.text.lstrip().startswith('<section id="sessions-panel"')
        assert "1 session signed out." in r.text and "Laptop Browser/1.0" not in r.text
        assert not _signed_in(laptop) and _signed_in(client)


def test_sign_out_all_my_other_browsers(app, client, engineer):
    csrf = login(client, engineer.user.username)
    with TestClient(app) as one, TestClient(app) as two:
        login(one, engineer.user.username)
        login(two, engineer.user.username)
        r = client.post("/account/sessions/revoke-others", headers=htmx(csrf))
        assert r.status_code == 200 and "2 sessions signed out." in r.text
        assert "/account/sessions/revoke-others" not in r.text, "no other browser is left to sign out"
        assert not _signed_in(one) and not _signed_in(two) and _signed_in(client)


def test_someone_elses_session_cannot_be_signed_out_from_my_account(app, client, db, engineer):
    other = make_user(db, "annotator")
    with TestClient(app) as theirs:
        login(theirs, other.user.username)
        (row,) = db.scalars(select(UserSession).where(UserSession.user_id == other.user.id)).all()
        csrf = login(client, engineer.user.username)
        assert client.post(f"/account/sessions/{row.id}/revoke", headers=htmx(csrf)).status_code == 404
        assert _signed_in(theirs)


def test_a_session_ends_after_the_maximum_age_whatever_the_cookie_says(client, db, settings, engineer):
    login(client, engineer.user.username)
    old = utcnow() - timedelta(seconds=settings.session_max_age + 1)
    db.execute(update(UserSession).values(created_at=old))
    assert not _signed_in(client)


def test_last_seen_is_refreshed_at_most_once_a_minute(client, db, engineer):
    login(client, engineer.user.username)
    two_minutes_ago = utcnow() - timedelta(minutes=2)
    db.execute(update(UserSession).values(last_seen_at=two_minutes_ago))
    assert _signed_in(client)
    seen = db.scalar(select(UserSession.last_seen_at))
    assert seen > two_minutes_ago + timedelta(seconds=90)
    thirty_seconds_ago = utcnow() - timedelta(seconds=30)
    db.execute(update(UserSession).values(last_seen_at=thirty_seconds_ago))
    assert _signed_in(client)
    assert db.scalar(select(UserSession.last_seen_at)) == thirty_seconds_ago


def test_signing_in_again_ends_the_previous_session_of_that_browser(client, db, engineer, annotator):
    login(client, engineer.user.username)
    first = _cookie_payload(client)["sid"]
    login(client, annotator.user.username)
    row = db.scalar(select(UserSession).where(UserSession.token_hash == hash_token(first)))
    assert row is not None and row.revoked_at is not None
    assert client.get("/api/v1/me").json()["username"] == annotator.user.username
