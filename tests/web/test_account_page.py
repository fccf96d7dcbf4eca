"""/account: change password, create a token (shown once), list and revoke own tokens."""

from app.auth import service
from app.auth.security import verify_password
from tests.builders import make_user
from tests.web.session import htmx, login


def test_account_page_lists_only_my_working_tokens(client, db, engineer):
    other = make_user(db, "engineer")
    row, _ = service.create_token(db, engineer.user, "old script")
    service.revoke_token(db, row)
    db.commit()
    login(client, engineer.user.username)
    html = client.get("/account").text
    assert "<td class=\"strong\">test</td>" in html
    assert "old script" not in html
    (mine,) = service.list_tokens(db, engineer.user)
    (theirs,) = service.list_tokens(db, other.user)
    db.commit()
    assert f"<code>{mine.prefix}…</code>" in html and f"/account/tokens/{theirs.id}/" not in html


def test_create_a_token_shown_once(client, db, engineer):
    csrf = login(client, engineer.user.username)
    r = client.post("/account/tokens", data={"name": "notebook"}, headers=htmx(csrf))
    assert r.status_code == 201
    assert r.text.lstrip().startswith('<section id="tokens-panel"')
    token = r.text.split('<code id="new-token" class="secret">', 1)[1].split("<", 1)[0]
    assert token.startswith("cur_")
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    later = client.get("/account").text
    assert token not in later and "<td class=\"strong\">notebook</td>" in later


def test_revoke_a_token(client, db, engineer):
    csrf = login(client, engineer.user.username)
    (row,) = service.list_tokens(db, engineer.user)
    db.commit()
    r = client.post(f"/account/tokens/{row.id}/revoke", headers=htmx(csrf))
    assert r.status_code == 200
    assert "Token <strong>test</strong> revoked" in r.text and "No tokens yet." in r.text
    assert client.get("/api/v1/me", headers=engineer.headers).status_code == 401


def test_cannot_revoke_someone_elses_token(client, db, engineer):
    other = make_user(db, "annotator")
    (row,) = service.list_tokens(db, other.user)
    db.commit()
    csrf = login(client, engineer.user.username)
    assert client.post(f"/account/tokens/{row.id}/revoke", headers=htmx(csrf)).status_code == 404
    assert client.get("/api/v1/me", headers=other.headers).status_code == 200


def test_change_password(client, db, annotator):
    csrf = login(client, annotator.user.username)
    data = {"current_password": "password-123", "new_password": "a-new-password"}
    r = client.post("/account/password", data=data, headers=htmx(csrf))
    assert r.status_code == 200
    assert "Your password has been changed." in r.text
    db.refresh(annotator.user)
    assert verify_password(annotator.user.password_hash, "a-new-password")
    db.commit()
    client.post("/logout", data={"csrf_token": csrf})
    login(client, annotator.user.username, "a-new-password")


def test_change_password_needs_the_current_one_and_eight_characters(client, db, annotator):
    csrf = login(client, annotator.user.username)
    r = client.post("/account/password", data={"current_password": "guess-guess", "new_password": "a-new-password"},
                    headers=htmx(csrf))
    assert r.status_code == 422 and "The current password is not right." in r.text
    r = client.post("/account/password", data={"current_password": "password-123", "new_password": "short"},
                    headers=htmx(csrf))
    assert r.status_code == 422 and "Password must be at least 8 characters." in r.text
    db.refresh(annotator.user)
    assert verify_password(annotator.user.password_hash, "password-123")
    db.commit()
