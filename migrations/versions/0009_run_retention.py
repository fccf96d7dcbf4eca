"""runs: pinned, and when their per-sample predictions were dropped

Revision ID: 0009
Revises: 0008

Retention (app.runs.retention, docs/database.md): a dataset keeps the per-sample predictions
of its latest succeeded runs (CURATE_KEEP_RUNS, 3) and of its pinned runs; an older run
keeps its row (metrics, history, the summaries in info) and its predictions are dropped.
Existing runs are unpinned and keep their predictions until the next train run succeeds.
"""

from alembic import op
import sqlalchemy as sa

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, not a batch: on SQLite a batch rebuilds the table, and dropping the
    # old runs table would cascade to every run's predictions.
    op.add_column("runs", sa.Column("pinned", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("runs", sa.Column("predictions_dropped_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    # DROP COLUMN in place (SQLite 3.35+), for the same reason.
    op.execute("ALTER TABLE runs DROP COLUMN predictions_dropped_at")
    op.execute("ALTER TABLE runs DROP COLUMN pinned")
