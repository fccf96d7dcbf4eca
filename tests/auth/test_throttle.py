"""Password guessing is throttled per account and per client address, in the database, and
argon2 runs at most a few times at once per process."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.auth import security, service, throttle
from app.auth.security import verify_password
from app.config import Settings
from app.db import session_scope
from app.main import create_app
from app.models import LoginFailure, UserSession, utcnow
from tests.web.session import csrf_from, htmx, login

THROTTLED = "Too many failed sign-in attempts."


@pytest.fixture
def make_app(settings, engine):
    """An app with its own throttle settings (over the same database as every other app here)."""

    def build(**changes):
        return create_app(settings.model_copy(update=changes))

    yield build
    # create_app set the process-wide hashing cap from these settings; put the defaults back.
    defaults = Settings(_env_file=None)
    security.configure_hashing(defaults.password_hash_concurrency, defaults.password_hash_wait_seconds)


def _client(app, address: str = "192.0.2.10") -> TestClient:
    return TestClient(app, client=(address, 50000))


def _login(client: TestClient, username: str, password: str, headers: dict | None = None):
    token = csrf_from(client.get("/login").text)
    data = {"username": username, "password": password, "csrf_token": token, "next": ""}
    return client.post("/login", data=data, headers=headers or {}, follow_redirects=False)


def _failures(db) -> int:
    return db.scalar(select(func.count()).select_from(LoginFailure))


def test_the_defaults_and_their_settings(monkeypatch):
    s = Settings(_env_file=None)
    assert (s.login_max_failures_per_account, s.login_max_failures_per_address) == (10, 50)
    assert s.login_failure_window_seconds == 900
    assert (s.password_hash_concurrency, s.password_hash_wait_seconds) == (4, 5.0)
    monkeypatch.setenv("CURATE_LOGIN_MAX_FAILURES_PER_ACCOUNT", "3")
    monkeypatch.setenv("CURATE_PASSWORD_HASH_CONCURRENCY", "2")
    s = Settings(_env_file=None)
    assert (s.login_max_failures_per_account, s.password_hash_concurrency) == (3, 2)


def test_an_account_is_throttled_after_ten_failures(client, db, engineer):
    """The reported case: 60 wrong passwords in a row all went through."""
    for _ in range(10):
        assert _login(client, engineer.user.username, "wrong-password").status_code == 400
    r = _login(client, engineer.user.username, engineer.password)
    assert r.status_code == 429, "the right password must not get in (or be confirmed) once throttled"
    assert THROTTLED in r.text and "15 minutes" in r.text
    assert 890 <= int(r.headers["retry-after"]) <= 900
    assert client.get("/api/v1/me").status_code == 401
    assert db.scalar(select(func.count()).select_from(UserSession)) == 0


def test_a_throttled_attempt_checks_no_password(make_app, monkeypatch, engineer):
    app = make_app(login_max_failures_per_account=2)
    with _client(app) as c:
        for _ in range(2):
            assert _login(c, engineer.user.username, "wrong-password").status_code == 400
        checks = []
        monkeypatch.setattr(service, "verify_password", lambda *args: checks.append(args) or True)
        assert _login(c, engineer.user.username, engineer.password).status_code == 429
        assert checks == []


def test_unknown_and_real_accounts_are_throttled_alike(make_app, db, engineer, annotator):
    annotator.user.is_active = False
    db.commit()
    app = make_app(login_max_failures_per_account=3)
    pages = set()
    with _client(app) as c:
        for username in (engineer.user.username, "no-such-user", annotator.user.username):
            for _ in range(3):
                assert _login(c, username, "wrong-password").status_code == 400
            r = _login(c, username, "wrong-password")
            assert r.status_code == 429 and THROTTLED in r.text
            assert r.headers["retry-after"]
            pages.add(r.text.replace(f'value="{username}"', 'value=""'))
    assert len(pages) == 1, "a throttled attempt must not tell whether the account exists"


def test_a_successful_login_clears_the_accounts_failures(make_app, engineer):
    app = make_app(login_max_failures_per_account=3)
    with _client(app) as c:
        for _ in range(2):
            assert _login(c, engineer.user.username, "wrong-password").status_code == 400
        assert _login(c, engineer.user.username, engineer.password).status_code == 303
        for _ in range(3):
            assert _login(c, engineer.user.username, "wrong-password").status_code == 400
        assert _login(c, engineer.user.username, "wrong-password").status_code == 429


def test_a_client_address_is_throttled_across_accounts(make_app, db, engineer):
    app = make_app(login_max_failures_per_address=3)
    with _client(app, "192.0.2.10") as attacker, _client(app, "198.51.100.7") as colleague:
        for name in ("alice", "bob", "carol"):
            assert _login(attacker, name, "wrong-password").status_code == 400
        assert _login(attacker, engineer.user.username, engineer.password).status_code == 429
        # Another address, and the account itself, are not locked by someone else's guessing.
        assert _login(colleague, engineer.user.username, engineer.password).status_code == 303


def test_x_forwarded_for_is_not_believed(make_app, engineer):
    """The address comes from uvicorn, which honours X-Forwarded-For only from trusted proxies."""
    app = make_app(login_max_failures_per_address=3)
    with _client(app) as c:
        for i in range(3):
            r = _login(c, f"user{i}", "wrong-password", headers={"X-Forwarded-For": f"203.0.113.{i}"})
            assert r.status_code == 400
        r = _login(c, engineer.user.username, engineer.password, headers={"X-Forwarded-For": "203.0.113.99"})
        assert r.status_code == 429


def test_the_throttle_holds_across_server_processes(make_app, engineer):
    """Failures are counted in the database, so a second server sees those of the first."""
    first, second = make_app(login_max_failures_per_account=3), make_app(login_max_failures_per_account=3)
    with _client(first) as a, _client(second, "198.51.100.7") as b:
        for _ in range(3):
            assert _login(a, engineer.user.username, "wrong-password").status_code == 400
        assert _login(b, engineer.user.username, engineer.password).status_code == 429


def test_retry_after_is_when_the_oldest_failure_leaves_the_window(make_app, db, engineer):
    app = make_app(login_max_failures_per_account=3)
    with _client(app) as c:
        for _ in range(3):
            assert _login(c, engineer.user.username, "wrong-password").status_code == 400
        ten_minutes_ago = utcnow() - timedelta(minutes=10)
        oldest = db.scalar(select(func.min(LoginFailure.id)).where(LoginFailure.key.like("account:%")))
        db.execute(update(LoginFailure).where(LoginFailure.id == oldest).values(created_at=ten_minutes_ago))
        r = _login(c, engineer.user.username, engineer.password)
        assert r.status_code == 429
        assert 295 <= int(r.headers["retry-after"]) <= 300 and "5 minutes" in r.text
        # Past the window, a failure counts for nothing.
        sixteen_minutes_ago = utcnow() - timedelta(minutes=16)
        db.execute(update(LoginFailure).where(LoginFailure.id == oldest).values(created_at=sixteen_minutes_ago))
        assert _login(c, engineer.user.username, engineer.password).status_code == 303


def test_typed_usernames_are_not_stored(client, db):
    assert _login(client, "my-password-typed-in-the-wrong-box", "x").status_code == 400
    keys = db.scalars(select(LoginFailure.key)).all()
    assert sorted(k.split(":")[0] for k in keys) == ["account", "address"]
    assert not any("wrong-box" in k for k in keys)


def test_address_keys():
    assert throttle.address_key("192.0.2.1") == "address:192.0.2.1"
    assert throttle.address_key("2001:db8:1:2:3:4:5:6") == throttle.address_key("2001:db8:1:2:ffff::1")
    assert throttle.address_key("2001:db8:1:2::1") != throttle.address_key("2001:db8:1:3::1")
    assert throttle.address_key("::ffff:192.0.2.1") == "address:192.0.2.1"
    assert throttle.address_key(None) == "address:unknown"


def test_concurrent_guesses_check_no_more_passwords_than_the_limit(engine, engineer):
    """Attempts on one account take turns at recording and counting, so racing ones see each other."""
    policy = throttle.Policy(per_account=3, per_address=1000, window=timedelta(minutes=15))
    outcomes, start = [], threading.Barrier(12)

    def guess(i: int) -> None:
        start.wait()
        with session_scope(engine) as db:
            try:
                service.login(db, engineer.user.username, "wrong-password", address=f"192.0.2.{i}", policy=policy)
                outcomes.append("checked")
            except throttle.Throttled:
                outcomes.append("throttled")

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(outcomes) == 12
    assert outcomes.count("checked") == 3, outcomes


def test_password_hashing_runs_at_most_the_configured_number_at_once(monkeypatch):
    """48 concurrent logins used 2.1 GB: every argon2 call now waits for one of a few turns."""
    running, peak, lock = 0, 0, threading.Lock()

    class SlowHasher:
        """Stands in for argon2, counting how many run at once."""

        def _run(self):
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.05)
            with lock:
                running -= 1

        def verify(self, password_hash, password):
            self._run()
            return True

        def hash(self, password):
            self._run()
            return "$argon2id$stand-in"

    monkeypatch.setattr(security, "_hasher", SlowHasher())
    security.configure_hashing(2, 10.0)
    try:
        threads = [threading.Thread(target=verify_password, args=("h", "p")) for _ in range(8)]
        threads += [threading.Thread(target=security.hash_password, args=("p",)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        defaults = Settings(_env_file=None)
        security.configure_hashing(defaults.password_hash_concurrency, defaults.password_hash_wait_seconds)
    assert peak == 2


def test_a_login_that_waits_too_long_for_a_turn_gets_503(make_app, db, engineer):
    app = make_app(password_hash_concurrency=1, password_hash_wait_seconds=0.05)
    with _client(app) as c:
        token = csrf_from(c.get("/login").text)
        with security.hashing_turn():  # every turn taken
            data = {"username": engineer.user.username, "password": engineer.password, "csrf_token": token}
            r = c.post("/login", data=data, follow_redirects=False)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "The server is busy" in r.text
        assert _failures(db) == 0, "an attempt that checked nothing is not counted"
        assert _login(c, engineer.user.username, engineer.password).status_code == 303


def test_other_hashing_routes_answer_503_with_retry_after(make_app, admin):
    app = make_app(password_hash_concurrency=1, password_hash_wait_seconds=0.05)
    with _client(app) as c, security.hashing_turn():
        r = c.post("/api/v1/users", json={"username": "newcomer"}, headers=admin.headers)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "busy" in r.json()["detail"]


def test_wrong_current_passwords_are_throttled_too(make_app, db, annotator):
    app = make_app(login_max_failures_per_account=3)
    with _client(app) as c:
        csrf = login(c, annotator.user.username)
        for _ in range(3):
            data = {"current_password": "a-guess-guess", "new_password": "a-new-password"}
            r = c.post("/account/password", data=data, headers=htmx(csrf))
            assert r.status_code == 422
        data = {"current_password": "password-123", "new_password": "a-new-password"}
        r = c.post("/account/password", data=data, headers=htmx(csrf))
        assert r.status_code == 429 and r.headers["retry-after"]
        assert r.text.lstrip().startswith('<section id="password-panel"')
        assert "Too many wrong current passwords" in r.text
    db.refresh(annotator.user)
    assert verify_password(annotator.user.password_hash, "password-123")
    db.commit()


def test_a_refused_new_password_costs_no_attempt(make_app, db, annotator):
    app = make_app(login_max_failures_per_account=1)
    with _client(app) as c:
        csrf = login(c, annotator.user.username)
        for _ in range(3):
            data = {"current_password": "a-guess-guess", "new_password": "short"}
            r = c.post("/account/password", data=data, headers=htmx(csrf))
            assert r.status_code == 422 and "at least 8 characters" in r.text
        assert _failures(db) == 0
        data = {"current_password": "password-123", "new_password": "a-new-password"}
        assert c.post("/account/password", data=data, headers=htmx(csrf)).status_code == 200
