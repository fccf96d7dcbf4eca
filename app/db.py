"""Engine, sessions and the request session dependency.

SQLite runs in WAL mode with a busy timeout and foreign keys on. Its write transactions
start with BEGIN IMMEDIATE so that two writers queue on the busy timeout instead of one
failing when it upgrades a read lock; sessions opened with ``readonly=True`` use a plain
deferred BEGIN so that long reads (exports) do not hold the write lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def is_sqlite(bind) -> bool:
    return bind.dialect.name == "sqlite"


def make_engine(url: str, **kwargs) -> Engine:
    """Create an engine with Curate's connection settings for SQLite or Postgres."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):
            # Let SQLAlchemy's begin event decide how transactions start.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            options = conn.get_execution_options()
            if options.get("isolation_level") == "AUTOCOMMIT":
                return
            if options.get("curate_readonly"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, pool_pre_ping=True, **kwargs)


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for a URL (the configured one by default)."""
    url = url or get_settings().resolved_database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                from pathlib import Path

                path = url.split("///", 1)[-1]
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = _engines[url] = make_engine(url)
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (after fork, and between tests)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def session_factory(engine: Engine | None = None, readonly: bool = False) -> sessionmaker[Session]:
    bind = engine or get_engine()
    if readonly:
        bind = bind.execution_options(curate_readonly=True)
    return sessionmaker(bind=bind, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine | None = None, readonly: bool = False) -> Iterator[Session]:
    """A session that commits on success and rolls back on error (jobs, CLI)."""
    session = session_factory(engine, readonly)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_session(request: Request) -> Iterator[Session]:
    """Request dependency: commit at the edge, roll back on any error."""
    with session_scope(request.app.state.engine) as session:
        yield session


# scope="function": commit before the response is sent, so a 2xx means the change is stored.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def commit_now(session: Session) -> None:
    """Commit a request's write before its answer is built, from a route (the session
    dependency's own commit then has nothing left to do; a 2xx still means it is stored).

    A label change locks the dataset's row (its label version) until commit, so every other
    write to that dataset waits: reading what the answer shows (history, the next sample in
    the queue) after the commit keeps that lock short.
    """
    session.commit()


def create_postgres_database(admin_url: str, name: str) -> str:
    """Create database `name` (dropped first if it exists) on admin_url's server; returns its psycopg URL.
    For tests and benchmarks that need a database of their own."""
    from sqlalchemy.engine import make_url

    url = make_url(admin_url).set(drivername="postgresql+psycopg")
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(admin_url: str, name: str) -> None:
    """Drop database `name` on admin_url's server, closing its connections."""
    from sqlalchemy.engine import make_url

    admin = create_engine(make_url(admin_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
