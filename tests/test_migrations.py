"""The same Alembic migrations bring SQLite and Postgres up to the models and back down."""

import os
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.migrate import downgrade, include_name, optuna_tables, upgrade
from app.models import Base
from app.db import create_postgres_database, drop_postgres_database

BACKENDS = ["sqlite"] + (["postgres"] if os.environ.get("CURATE_TEST_POSTGRES_URL") else [])


@pytest.fixture(params=BACKENDS)
def fresh_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
    else:
        admin = os.environ["CURATE_TEST_POSTGRES_URL"]
        name = f"curate_mig_{uuid.uuid4().hex[:8]}"
        yield create_postgres_database(admin, name)
        drop_postgres_database(admin, name)


def test_upgrade_matches_models_then_downgrade_to_empty(fresh_url):
    upgrade(fresh_url)
    engine = create_engine(fresh_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": False, "include_name": include_name})
            diff = compare_metadata(context, Base.metadata)
        assert diff == [], f"models and migrations differ: {diff}"
        tables = set(inspect(engine).get_table_names())
        # A search opens Optuna's storage without creating anything (see test_optuna_tables).
        assert optuna_tables() <= tables
        assert {"datasets", "samples", "label_events", "jobs", "runs", "predictions", "snapshots",
                "user_sessions", "login_failures"} <= tables
        indexes = {i["name"] for i in inspect(engine).get_indexes("predictions")}
        assert "ix_predictions_run_loss" in indexes
        sample_indexes = {i["name"] for i in inspect(engine).get_indexes("samples")}
        assert "ix_samples_dataset_split_label" in sample_indexes
        downgrade(fresh_url)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(fresh_url)
        assert "samples" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path):
    from app.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()
