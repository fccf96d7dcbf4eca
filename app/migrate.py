"""Run Alembic migrations from code (the CLI, the tests and `make run` all come here)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    # ConfigParser interpolation: a % in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def optuna_tables() -> frozenset[str]:
    """The tables that Optuna's models define: made by migration 0005, shaped by Optuna."""
    from optuna.storages._rdb import models

    return frozenset(models.BaseModel.metadata.tables)


# Expression indexes, made by their migrations: the databases reflect the expression in their
# own words (Postgres) or not at all (SQLite), so Alembic cannot compare them with the models;
# tests/test_migrations.py checks that they exist.
EXPRESSION_INDEXES = frozenset({"ix_samples_dataset_shuffle", "ix_predictions_by_id", "ix_predictions_cell_by_id",
                                "ix_predictions_random", "ix_predictions_cell_random"})


def include_name(name: str | None, type_: str, parent_names) -> bool:
    """Alembic's filter of what the database has: compare and autogenerate Curate's own
    tables, not Optuna's, and no expression index."""
    if type_ == "index" and name in EXPRESSION_INDEXES:
        return False
    return not (type_ == "table" and name in optuna_tables())


def include_object(obj, name: str | None, type_: str, reflected: bool, compare_to) -> bool:
    """Alembic's filter of what the models have: no expression index."""
    return not (type_ == "index" and name in EXPRESSION_INDEXES)


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at url up to revision."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Take the database at url down to revision."""
    command.downgrade(alembic_config(url), revision)
