from app.auth import service
from tests.builders import make_user


def test_admin_lists_users(client, admin, engineer, annotator):
    r = client.get("/api/v1/users", headers=admin.headers)
    assert r.status_code == 200
    names = [u["username"] for u in r.json()]
    assert names == sorted([admin.user.username, engineer.user.username, annotator.user.username])
    assert all("password_hash" not in u for u in r.json())


def test_only_admins_manage_users(client, admin, engineer, annotator):
    for acc in (engineer, annotator):
        assert client.get("/api/v1/users", headers=acc.headers).status_code == 403
        r = client.post("/api/v1/users", json={"username": "x", "role": "admin"}, headers=acc.headers)
        assert r.status_code == 403
        r = client.patch(f"/api/v1/users/{acc.user.id}", json={"role": "admin"}, headers=acc.headers)
        assert r.status_code == 403
    assert client.get("/api/v1/me", headers=engineer.headers).json()["role"] == "engineer"


def test_create_user_with_a_generated_password(client, db, admin):
    r = client.post("/api/v1/users", json={"username": "erin", "role": "engineer"}, headers=admin.headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["username"], body["role"], body["is_active"]) == ("erin", "engineer", True)
    assert len(body["password"]) >= 12
    assert service.authenticate(db, "erin", body["password"]).id == body["id"]


def test_create_user_with_a_given_password_does_not_echo_it(client, admin):
    r = client.post(
        "/api/v1/users", json={"username": "fay", "role": "annotator", "password": "fay-password"}, headers=admin.headers
    )
    assert r.status_code == 201
    assert r.json()["password"] is None


def test_create_user_refuses_duplicates_bad_roles_and_short_passwords(client, admin, engineer):
    h = admin.headers
    assert client.post("/api/v1/users", json={"username": engineer.user.username}, headers=h).status_code == 409
    assert client.post("/api/v1/users", json={"username": "g", "role": "owner"}, headers=h).status_code == 422
    assert client.post("/api/v1/users", json={"username": "g", "password": "short"}, headers=h).status_code == 422
    assert client.post("/api/v1/users", json={"username": "   "}, headers=h).status_code == 422


def test_change_role_and_deactivate(client, admin, engineer):
    r = client.patch(f"/api/v1/users/{engineer.user.id}", json={"role": "annotator"}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["role"] == "annotator"
    assert client.get("/api/v1/me", headers=engineer.headers).json()["role"] == "annotator"
    assert client.post("/api/v1/datasets", json={"name": "n", "task": "text"}, headers=engineer.headers).status_code == 403

    r = client.patch(f"/api/v1/users/{engineer.user.id}", json={"is_active": False}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["is_active"] is False
    assert client.get("/api/v1/me", headers=engineer.headers).status_code == 401

    r = client.patch(f"/api/v1/users/{engineer.user.id}", json={"is_active": True}, headers=admin.headers)
    assert client.get("/api/v1/me", headers=engineer.headers).status_code == 200


def test_the_last_active_admin_cannot_be_demoted_or_deactivated(client, db, admin):
    for change in ({"role": "engineer"}, {"is_active": False}):
        r = client.patch(f"/api/v1/users/{admin.user.id}", json=change, headers=admin.headers)
        assert r.status_code == 409, change
        assert "last active admin" in r.json()["detail"]
    other = make_user(db, "admin")
    r = client.patch(f"/api/v1/users/{admin.user.id}", json={"role": "engineer"}, headers=other.headers)
    assert r.status_code == 200
    r = client.patch(f"/api/v1/users/{other.user.id}", json={"is_active": False}, headers=other.headers)
    assert r.status_code == 409


def test_patch_unknown_user_is_404(client, admin):
    assert client.patch("/api/v1/users/999999", json={"role": "engineer"}, headers=admin.headers).status_code == 404
