"""Test fixtures: every database test runs on SQLite and, when CURATE_TEST_POSTGRES_URL is
set (CI sets it), on the real Postgres too, against a database migrated by Alembic.

Tests commit for real, the way the app does; after each test every table is emptied, so
tests stay isolated while services that open their own sessions (exports, jobs, worker
processes) see exactly what the test wrote.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import create_postgres_database, dispose_engines, drop_postgres_database, get_engine
from app.migrate import upgrade
from app.models import Base

TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"
BACKENDS = ["sqlite"] + (["postgres"] if os.environ.get("CURATE_TEST_POSTGRES_URL") else [])


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request, tmp_path_factory) -> Iterator[str]:
    """A migrated, empty database for this test session and backend."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "curate.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        yield url
    else:
        admin_url = os.environ["CURATE_TEST_POSTGRES_URL"]
        name = f"curate_test_{_worker()}_{uuid.uuid4().hex[:6]}"
        url = create_postgres_database(admin_url, name)
        upgrade(url)
        yield url
        dispose_engines()
        drop_postgres_database(admin_url, name)


@pytest.fixture
def backend(database_url) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgres"


def _empty_all_tables(engine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
        else:
            for t in tables:
                conn.execute(text(f'DELETE FROM "{t}"'))
            conn.execute(text("DELETE FROM sqlite_sequence")) if _has_sqlite_sequence(conn) else None


def _has_sqlite_sequence(conn) -> bool:
    return conn.execute(text("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'")).first() is not None


@pytest.fixture
def engine(database_url):
    eng = get_engine(database_url)
    yield eng
    _empty_all_tables(eng)


@pytest.fixture
def settings(database_url, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        secret_key=TEST_SECRET,
        job_lease_seconds=5,
        worker_poll_seconds=0.1,
        _env_file=None,
    )


@pytest.fixture
def db(engine) -> Iterator[Session]:
    """A session on the test database in autocommit mode.

    Each statement is its own transaction, so the test never holds a lock (or an old
    snapshot) while the app handles a request. Call db.expire_all() before re-reading
    rows that the app changed.
    """
    session = Session(bind=engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)
    yield session
    session.close()


@pytest.fixture
def app(settings, engine):
    from app.main import create_app

    return create_app(settings)


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def admin(db):
    from tests.builders import make_user

    return make_user(db, "admin")


@pytest.fixture
def engineer(db):
    from tests.builders import make_user

    return make_user(db, "engineer")


@pytest.fixture
def annotator(db):
    from tests.builders import make_user

    return make_user(db, "annotator")


@pytest.fixture
def live_server(app):
    """The app served by uvicorn on a free loopback port, in a background thread."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
