"""Optuna's database storage on Curate's own database, and the study of a search job.

Optuna creates its tables (studies, trials, ...) there itself; Curate's migrations do not
manage them. Its `alembic_version` table is the one Curate's migrations already own, so the
storage skips Optuna's schema check (which would read Curate's revision) and is opened only
on a migrated database, never one where Optuna would stamp its own revision.

On SQLite every transaction of the storage starts with BEGIN IMMEDIATE, as Curate's own
writes do: popping a waiting trial is a read then a write, and two workers must never both
see it waiting.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any

import optuna
from sqlalchemy import event, inspect, text

from app.config import Settings
from app.db import setup_sqlite_connection

log = logging.getLogger(__name__)

# Optuna's trial heartbeat: a RUNNING trial without one for GRACE seconds lost its worker.
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60
STUDY_PREFIX = "curate-search-"

_storages: dict[str, optuna.storages.RDBStorage] = {}
_lock = threading.Lock()


def study_name(job_id: int) -> str:
    """The study of the search job `job_id` (the job that created it, not an extra worker job)."""
    return f"{STUDY_PREFIX}{job_id}"


def retry_callback():
    """Queues a failed trial again with its params (twice at most): its worker died, not its params."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)


def _sqlite_like_curate(engine, readonly: bool) -> None:
    """Open the storage's SQLite connections as Curate's own, and begin its transactions."""
    event.listen(engine, "connect", setup_sqlite_connection)

    @event.listens_for(engine, "begin")
    def _begin(conn):
        # A reader must not queue for the write lock: the web request reading a study holds
        # its own session's write transaction on the same thread.
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    # Connections opened while the storage set itself up lack the listeners.
    engine.dispose()


def _check_migrated(url: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if "alembic_version" not in inspect(conn).get_table_names():
                raise RuntimeError("the database is not migrated; run `curate migrate` before a search")
            if conn.execute(text("SELECT version_num FROM alembic_version")).first() is None:
                raise RuntimeError("the database is not migrated; run `curate migrate` before a search")
    finally:
        engine.dispose()


def get_storage(settings: Settings, readonly: bool = False) -> optuna.storages.RDBStorage:
    """The process-wide Optuna storage on Curate's database (created on first use); a `readonly`
    one on SQLite starts deferred transactions, for pages and the API, which only read."""
    url = settings.resolved_database_url
    sqlite = url.startswith("sqlite")
    key = f"{url} (read)" if readonly and sqlite else url
    with _lock:
        storage = _storages.get(key)
        if storage is not None:
            return storage
        _check_migrated(url)
        engine_kwargs: dict[str, Any] = (
            {"connect_args": {"check_same_thread": False, "timeout": 30}} if sqlite else {"pool_pre_ping": True}
        )
        kwargs = dict(
            engine_kwargs=engine_kwargs,
            skip_compatibility_check=True,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=retry_callback(),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                storage = optuna.storages.RDBStorage(url, **kwargs)
            except Exception:
                # Two processes creating Optuna's tables at once: the loser finds them made.
                log.warning("opening the Optuna storage failed once; retrying", exc_info=True)
                storage = optuna.storages.RDBStorage(url, **kwargs)
        if sqlite:
            _sqlite_like_curate(storage.engine, readonly)
        _storages[key] = storage
        return storage


def job_token(created_at) -> str:
    """Ties a study to its job: a database whose job ids started again must not reuse an old study."""
    return created_at.isoformat() if created_at is not None else "none"


def find_study_id(storage: optuna.storages.RDBStorage, job_id: int, created_at) -> int | None:
    """The id of the study of search job `job_id`, or None when it has none (yet)."""
    try:
        study_id = storage.get_study_id_from_name(study_name(job_id))
    except KeyError:
        return None
    if storage.get_study_user_attrs(study_id).get("job_token") != job_token(created_at):
        return None
    return study_id
