"""predictions.outlier and predictions.duplicate_group: a run's outlier score and duplicate groups

Revision ID: 0014
Revises: 0013

A run with embeddings scores each sample's distance to its nearest neighbours (the outlier
score) and groups near and exact duplicates (app.scoring.neighbours). The outlier score is a
listing order like the other scores, so it gets the same two indexes (docs/queries.md); the
groups are read by (run_id, duplicate_group). Plain columns and indexes: no table rebuild on
SQLite. Runs from before have neither (null), as a run without embeddings.
"""

from alembic import op
import sqlalchemy as sa

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("predictions", sa.Column("outlier", sa.Float(), nullable=True))
    op.add_column("predictions", sa.Column("duplicate_group", sa.Integer(), nullable=True))
    op.create_index("ix_predictions_outlier", "predictions",
                    ["run_id", "sample_reviewed", "flagged", "outlier", "sample_id", "sample_split"])
    op.create_index("ix_predictions_cell_outlier", "predictions",
                    ["run_id", "sample_label", "label", "sample_reviewed", "flagged", "outlier", "sample_id",
                     "sample_split"])
    op.create_index("ix_predictions_run_group", "predictions", ["run_id", "duplicate_group", "sample_id"])


def downgrade() -> None:
    op.drop_index("ix_predictions_run_group", table_name="predictions")
    op.drop_index("ix_predictions_cell_outlier", table_name="predictions")
    op.drop_index("ix_predictions_outlier", table_name="predictions")
    op.execute("ALTER TABLE predictions DROP COLUMN duplicate_group")
    op.execute("ALTER TABLE predictions DROP COLUMN outlier")
