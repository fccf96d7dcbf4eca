"""`curate user create`, `curate token create`, and `curate serve` refusing a weak key."""

from __future__ import annotations

import stat
from http.cookies import SimpleCookie

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.auth import service
from app.config import PLACEHOLDER_SECRET, get_settings
from app.models import User

runner = CliRunner()


@pytest.fixture
def cli_env(monkeypatch, tmp_path, database_url, engine):
    """The `curate` command pointed at the test database, with no .env file in reach."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CURATE_DATABASE_URL", database_url)
    monkeypatch.setenv("CURATE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CURATE_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def curate(*args: str):
    from app.cli import cli

    return runner.invoke(cli, list(args))


def test_user_create_with_a_password(cli_env, db):
    r = curate("user", "create", "ada", "--role", "engineer", "--password", "ada-password")
    assert r.exit_code == 0, r.output
    assert "created engineer 'ada'" in r.output
    assert "ada-password" not in r.output
    user = service.authenticate(db, "ada", "ada-password")
    assert user is not None and user.role == "engineer"


def test_user_create_generates_and_prints_a_password(cli_env, db):
    r = curate("user", "create", "bob")
    assert r.exit_code == 0, r.output
    password = r.output.split("password:", 1)[1].strip()
    user = service.authenticate(db, "bob", password)
    assert user is not None and user.role == "annotator"


def test_user_create_refuses_a_duplicate_and_a_bad_role(cli_env, db):
    assert curate("user", "create", "cy", "--password", "cy-password").exit_code == 0
    r = curate("user", "create", "cy", "--password", "cy-password")
    assert r.exit_code == 1 and "already exists" in r.output
    r = curate("user", "create", "dee", "--role", "owner")
    assert r.exit_code == 1 and "role must be one of" in r.output
    assert db.query(User).filter(User.username == "dee").count() == 0


def test_token_create_prints_a_working_token(cli_env, db, client):
    assert curate("user", "create", "eve", "--role", "admin", "--password", "eve-password").exit_code == 0
    r = curate("token", "create", "eve", "--label", "laptop")
    assert r.exit_code == 0, r.output
    token = r.output.strip()
    assert token.startswith("cur_")
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["username"] == "eve"
    (row,) = client.get("/api/v1/tokens", headers={"Authorization": f"Bearer {token}"}).json()
    assert row["name"] == "laptop"


def test_token_create_for_an_unknown_user_fails(cli_env):
    r = curate("token", "create", "nobody")
    assert r.exit_code == 1 and "no user named 'nobody'" in r.output


@pytest.fixture
def no_server(monkeypatch):
    """uvicorn.run and the worker process replaced: what serve would have served is in served."""
    import subprocess

    import uvicorn

    served = {}

    def capture(app, **kwargs):
        served.update(app=app, **kwargs)

    def must_not_start(*args, **kwargs):
        raise AssertionError("the worker started")

    monkeypatch.setattr(uvicorn, "run", capture)
    monkeypatch.setattr(subprocess, "Popen", must_not_start)
    return served


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0"])
@pytest.mark.parametrize("secret", [PLACEHOLDER_SECRET, "too-short"])
def test_serve_refuses_a_weak_key_on_every_address(cli_env, no_server, monkeypatch, host, secret):
    monkeypatch.setenv("CURATE_SECRET_KEY", secret)
    get_settings.cache_clear()
    r = curate("serve", "--host", host, "--no-worker")
    assert r.exit_code == 1
    assert f"refusing to serve on {host}" in r.output
    assert "CURATE_SECRET_KEY" in " ".join(r.output.split())
    assert "app" not in no_server, "the server started"


def _session_cookie(app, base_url="http://testserver") -> SimpleCookie:
    with TestClient(app, base_url=base_url) as c:
        (header,) = [v for k, v in c.get("/login").headers.multi_items() if k == "set-cookie"]
    return SimpleCookie(header)["curate_session"]


def test_serve_without_a_key_generates_one_in_the_data_directory(cli_env, no_server, tmp_path):
    r = curate("serve", "--no-worker")
    assert r.exit_code == 0, r.output
    path = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    assert (no_server["host"], no_server["proxy_headers"]) == ("127.0.0.1", True)
    # Started again, it signs with the same key: a cookie from before still verifies.
    assert curate("serve", "--no-worker").exit_code == 0
    assert path.read_text().strip() == key
    assert not _session_cookie(no_server["app"])["secure"], "plain HTTP on loopback keeps working"


def test_serve_on_a_network_address_sets_secure_cookies(cli_env, no_server):
    r = curate("serve", "--host", "0.0.0.0", "--no-worker")
    assert r.exit_code == 0, r.output
    assert no_server["host"] == "0.0.0.0"
    cookie = _session_cookie(no_server["app"])
    assert cookie["secure"] is True and cookie["httponly"] is True
