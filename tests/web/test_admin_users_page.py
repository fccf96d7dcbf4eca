"""/admin/users: admins list, create, re-role and deactivate users; nobody else gets in."""

from sqlalchemy import select

from app.auth import service
from app.models import User
from tests.builders import make_user
from tests.web.session import htmx, login


def test_admin_pages_are_403_for_engineers_and_annotators(client, db, engineer, annotator):
    for acc in (engineer, annotator):
        client.cookies.clear()
        csrf = login(client, acc.user.username)
        assert client.get("/admin/users").status_code == 403
        r = client.post("/admin/users", data={"username": "x", "role": "admin"}, headers=htmx(csrf))
        assert r.status_code == 403
        r = client.post(f"/admin/users/{acc.user.id}", data={"role": "admin"}, headers=htmx(csrf))
        assert r.status_code == 403
    assert db.scalar(select(User).where(User.username == "x")) is None
    db.refresh(engineer.user)
    assert engineer.user.role == "engineer"
    db.commit()


def test_admin_sees_every_user(client, admin, engineer, annotator):
    login(client, admin.user.username)
    html = client.get("/admin/users").text
    for acc in (admin, engineer, annotator):
        assert acc.user.username in html
    assert f"{admin.user.username} <span class=\"muted\">(you)</span>" in html
    assert f'action="/admin/users/{admin.user.id}"' not in html, "no controls on one's own row"
    assert f'action="/admin/users/{engineer.user.id}"' in html


def test_create_a_user_with_a_generated_password(client, db, admin):
    csrf = login(client, admin.user.username)
    r = client.post("/admin/users", data={"username": "gus", "role": "engineer", "password": ""}, headers=htmx(csrf))
    assert r.status_code == 201
    assert r.text.lstrip().startswith('<div id="users-panel"')
    assert "Created engineer <strong>gus</strong>" in r.text
    password = r.text.split('<code id="new-password" class="secret">', 1)[1].split("<", 1)[0]
    user = service.authenticate(db, "gus", password)
    db.commit()
    assert user is not None and user.role == "engineer"


def test_create_a_user_with_a_chosen_password(client, db, admin):
    csrf = login(client, admin.user.username)
    r = client.post("/admin/users", data={"username": "hal", "role": "annotator", "password": "hal-password"},
                    headers=htmx(csrf))
    assert r.status_code == 201
    assert "hal-password" not in r.text and 'id="new-password"' not in r.text
    assert service.authenticate(db, "hal", "hal-password") is not None
    db.commit()


def test_create_user_errors_are_shown(client, db, admin, engineer):
    csrf = login(client, admin.user.username)
    r = client.post("/admin/users", data={"username": engineer.user.username, "role": "annotator"}, headers=htmx(csrf))
    assert r.status_code == 422 and "already exists" in r.text
    r = client.post("/admin/users", data={"username": "ivy", "role": "annotator", "password": "short"},
                    headers=htmx(csrf))
    assert r.status_code == 422 and "Password must be at least 8 characters." in r.text
    assert 'name="username" value="ivy"' in r.text


def test_change_a_role_and_deactivate(client, db, admin, engineer):
    csrf = login(client, admin.user.username)
    r = client.post(f"/admin/users/{engineer.user.id}", data={"role": "annotator"}, headers=htmx(csrf))
    assert r.status_code == 200 and f"Saved <strong>{engineer.user.username}</strong>" in r.text
    assert client.get("/api/v1/me", headers=engineer.headers).json()["role"] == "annotator"

    r = client.post(f"/admin/users/{engineer.user.id}", data={"active": "false"}, headers=htmx(csrf))
    assert r.status_code == 200 and "deactivated" in r.text
    assert client.get("/api/v1/me", headers=engineer.headers).status_code == 401

    r = client.post(f"/admin/users/{engineer.user.id}", data={"active": "true"}, headers=htmx(csrf))
    assert client.get("/api/v1/me", headers=engineer.headers).status_code == 200


def test_the_last_admin_is_kept(client, db, admin):
    other = make_user(db, "admin")
    csrf = login(client, admin.user.username)
    r = client.post(f"/admin/users/{other.user.id}", data={"active": "false"}, headers=htmx(csrf))
    assert r.status_code == 200, "with two admins, one may deactivate the other"
    # The page offers no controls on one's own row; the route refuses the last admin anyway.
    r = client.post(f"/admin/users/{admin.user.id}", data={"role": "engineer"}, headers=htmx(csrf))
    assert r.status_code == 422
    assert "This is the last active admin: make another admin first." in r.text
    db.refresh(admin.user)
    assert admin.user.role == "admin" and admin.user.is_active
    db.commit()


def test_unknown_user_is_404(client, admin):
    csrf = login(client, admin.user.username)
    assert client.post("/admin/users/999999", data={"role": "engineer"}, headers=htmx(csrf)).status_code == 404
