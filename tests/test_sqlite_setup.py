"""Every SQLite connection Curate opens, its own or Optuna's, is set up the same one way."""

from __future__ import annotations

from sqlalchemy import create_engine

from app.db import make_engine
from app.search.storage import _sqlite_like_curate

PRAGMAS = ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")


def _settings(engine) -> dict:
    with engine.connect() as conn:
        dbapi = conn.connection.driver_connection
        values = {p: conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in PRAGMAS}
        values["isolation_level"] = dbapi.isolation_level
    engine.dispose()
    return values


def test_curates_connections_use_wal_a_busy_timeout_and_foreign_keys(tmp_path):
    assert _settings(make_engine(f"sqlite:///{tmp_path / 'a.db'}")) == {
        "journal_mode": "wal", "busy_timeout": 30000, "foreign_keys": 1, "synchronous": 1, "isolation_level": None,
    }


def test_optunas_connections_are_set_up_as_curates(tmp_path):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    plain = create_engine(url)
    assert _settings(plain)["foreign_keys"] == 0  # what SQLite gives without the setup
    storage_engine = create_engine(url)
    _sqlite_like_curate(storage_engine, readonly=True)
    assert _settings(storage_engine) == _settings(make_engine(url))
