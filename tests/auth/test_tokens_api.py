from app.auth import service
from tests.builders import make_user


def test_me_tells_who_the_token_belongs_to(client, engineer):
    r = client.get("/api/v1/me", headers=engineer.headers)
    assert r.status_code == 200
    body = r.json()
    assert (body["username"], body["role"], body["is_active"]) == (engineer.user.username, "engineer", True)
    assert "password_hash" not in body


def test_no_credentials_is_401_with_a_bearer_challenge(client):
    r = client.get("/api/v1/me")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


def test_wrong_scheme_or_malformed_header_is_401(client, engineer):
    for header in (f"Basic {engineer.token}", f"Token {engineer.token}", "Bearer", "Bearer   ", engineer.token):
        r = client.get("/api/v1/me", headers={"Authorization": header})
        assert r.status_code == 401, header


def test_unknown_token_is_401(client, engineer):
    r = client.get("/api/v1/me", headers={"Authorization": f"Bearer {engineer.token}x"})
    assert r.status_code == 401


def test_a_revoked_token_is_401(client, db, engineer):
    (row,) = service.list_tokens(db, engineer.user)
    service.revoke_token(db, row)
    db.commit()
    r = client.get("/api/v1/me", headers=engineer.headers)
    assert r.status_code == 401
    assert "revoked" in r.json()["detail"]


def test_a_deactivated_users_token_is_401(client, db, engineer):
    engineer.user.is_active = False
    db.commit()
    assert client.get("/api/v1/me", headers=engineer.headers).status_code == 401


def test_create_list_and_revoke_own_tokens(client, engineer):
    r = client.post("/api/v1/tokens", json={"name": "export script"}, headers=engineer.headers)
    assert r.status_code == 201, r.text
    created = r.json()
    new = created["token"]
    assert created["name"] == "export script" and created["prefix"] == new[:8]

    mine = {"Authorization": f"Bearer {new}"}
    assert client.get("/api/v1/me", headers=mine).json()["username"] == engineer.user.username

    listed = client.get("/api/v1/tokens", headers=engineer.headers).json()
    assert {t["name"] for t in listed} == {"test", "export script"}
    assert all("token" not in t for t in listed)
    assert listed[0]["id"] == created["id"], "newest first"

    assert client.delete(f"/api/v1/tokens/{created['id']}", headers=engineer.headers).status_code == 204
    assert client.get("/api/v1/me", headers=mine).status_code == 401
    assert [t["name"] for t in client.get("/api/v1/tokens", headers=engineer.headers).json()] == ["test"]
    # Revoking again changes nothing and is not an error.
    assert client.delete(f"/api/v1/tokens/{created['id']}", headers=engineer.headers).status_code == 204


def test_someone_elses_token_cannot_be_revoked(client, db, engineer):
    other = make_user(db, "annotator")
    (row,) = service.list_tokens(db, other.user)
    db.commit()  # end the read: SQLite sessions hold the write lock from their first statement
    r = client.delete(f"/api/v1/tokens/{row.id}", headers=engineer.headers)
    assert r.status_code == 404
    assert client.get("/api/v1/me", headers=other.headers).status_code == 200
    assert client.delete("/api/v1/tokens/999999", headers=engineer.headers).status_code == 404


def test_a_token_can_revoke_itself(client, engineer):
    (row,) = client.get("/api/v1/tokens", headers=engineer.headers).json()
    assert client.delete(f"/api/v1/tokens/{row['id']}", headers=engineer.headers).status_code == 204
    assert client.get("/api/v1/me", headers=engineer.headers).status_code == 401


def test_token_use_is_recorded(client, engineer):
    (before,) = client.get("/api/v1/tokens", headers=engineer.headers).json()
    # The listing request itself used the token, so the second listing shows it.
    (after,) = client.get("/api/v1/tokens", headers=engineer.headers).json()
    assert after["last_used_at"] is not None
    assert before["id"] == after["id"]


def test_token_name_is_limited(client, engineer):
    r = client.post("/api/v1/tokens", json={"name": "x" * 101}, headers=engineer.headers)
    assert r.status_code == 422
