"""Engine, sessions and the request session dependency.

SQLite runs in WAL mode with a busy timeout and foreign keys on. It has one write lock for
the whole database, so Curate takes it only for the statements that need it:

- a session's reads run outside any transaction (each statement sees the latest committed
  data, as a statement does under Postgres' READ COMMITTED), so reading never queues
  behind a writer and never holds anyone up;
- the first statement that writes, or a SELECT ... FOR UPDATE (which SQLite's dialect drops,
  so the intent is read off the statement), first runs BEGIN IMMEDIATE: from there to the
  commit the session holds the write lock, and a second writer waits on the busy timeout
  instead of failing when it would upgrade a read lock;
- sessions opened with ``readonly=True`` run one deferred BEGIN, so that a long read
  (an export) sees one consistent snapshot without taking the write lock.

Code that reads, decides, then writes relies on what Postgres gives it too: a conditional
UPDATE (``WHERE version = :seen``) or a FOR UPDATE read, which on SQLite takes the write
lock before the read. Work that must not happen under the lock (password hashing, parsing
an upload) is done before the first write.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings

_engines: dict[str, Engine] = {}
_lock = threading.Lock()

# Sync routes run on AnyIO's thread pool, 40 threads by default. The pool must be able to
# give each of them a connection (plus the stamps written after responses, app.auth.seen):
# on SQLite a request waiting for the write lock keeps its connection, and if the pool were
# smaller, readers would queue behind writers for a connection, the one thing WAL spares them.
POOL_SIZE = 10
POOL_OVERFLOW = 40


def is_sqlite(bind) -> bool:
    return bind.dialect.name == "sqlite"


# Statements that take SQLite's write lock. CREATE/INSERT/DROP on temp. objects do not: the
# temp database is the connection's own (imports stage rows there without holding the lock).
_WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER|SAVEPOINT|WITH\b.*\b(INSERT|UPDATE|DELETE)\b)", re.I | re.S)
_TEMP = re.compile(
    r"\s*(CREATE\s+TEMP|(INSERT(\s+OR\s+\w+)?\s+INTO|DROP\s+TABLE(\s+IF\s+EXISTS)?|DELETE\s+FROM)\s+temp\.)", re.I
)


def takes_write_lock(statement: str, context=None) -> bool:
    """Whether a statement needs SQLite's write lock: a write to the main database, or a
    SELECT that asked for FOR UPDATE."""
    if _WRITE.match(statement):
        return not _TEMP.match(statement)
    compiled = getattr(context, "compiled", None)
    return getattr(getattr(compiled, "statement", None), "_for_update_arg", None) is not None


def begin_write(session: Session) -> None:
    """Take SQLite's write lock now (no-op on Postgres and when it is held already): for a
    writer that must read what it is about to change with no other writer in between, and
    has no FOR UPDATE to say so."""
    conn = session.connection()
    if is_sqlite(conn):
        dbapi = conn.connection.driver_connection
        if not dbapi.in_transaction:
            try:
                dbapi.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                # Still locked after the busy timeout: the same error SQLAlchemy raises for
                # any other statement, so the handlers answer 503 with Retry-After, not 500.
                raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc


def setup_sqlite_connection(dbapi_conn, _record=None) -> None:
    """Curate's settings for a new SQLite connection (a "connect" event listener): WAL, a
    30 s busy timeout, foreign keys on, and no implicit BEGIN from the driver, since
    transactions are begun by the engine's own events (or, for Optuna's storage, by its)."""
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    # LIKE as Postgres has it: case-sensitive (a multi-label filter for tag "cat" must not
    # match "Cat": app.labels.tag_filters).
    cur.execute("PRAGMA case_sensitive_like=ON")
    cur.close()


def make_engine(url: str, **kwargs) -> Engine:
    """Create an engine with Curate's connection settings for SQLite or Postgres."""
    if url.startswith("sqlite"):
        if ":memory:" not in url and "poolclass" not in kwargs:  # (else a pool of another kind)
            kwargs.setdefault("pool_size", POOL_SIZE)
            kwargs.setdefault("max_overflow", POOL_OVERFLOW)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)
        event.listen(engine, "connect", setup_sqlite_connection)

        @event.listens_for(engine, "checkout")
        def _sqlite_checkout(dbapi_conn, _record, _proxy):
            # A connection used with isolation_level="AUTOCOMMIT" comes back with the driver's
            # own implicit BEGIN switched on again; switch it off before the next use.
            if dbapi_conn.isolation_level is not None and not dbapi_conn.in_transaction:
                dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # Only a read-only session begins at once (one snapshot for all its reads); any
            # other begins at its first write (see before_cursor_execute).
            options = conn.get_execution_options()
            if options.get("curate_readonly") and options.get("isolation_level") != "AUTOCOMMIT":
                conn.exec_driver_sql("BEGIN")

        @event.listens_for(engine, "before_cursor_execute")
        def _sqlite_write_lock(conn, cursor, statement, parameters, context, executemany):
            dbapi = cursor.connection
            if dbapi.in_transaction or not conn.in_transaction():
                return
            if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
                return
            if takes_write_lock(statement, context):
                cursor.execute("BEGIN IMMEDIATE")

        return engine
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", POOL_SIZE)
        kwargs.setdefault("max_overflow", POOL_OVERFLOW)
        # LIFO: a quiet server keeps reusing the same few connections, whose prepared
        # statements and plans are warm (app.labels.prepared.run_generic).
        kwargs.setdefault("pool_use_lifo", True)
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
