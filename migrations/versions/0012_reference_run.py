"""datasets.reference_run_id: the run a dataset follows when an engineer pins one

Revision ID: 0012
Revises: 0011

An engineer can pin a run as the dataset's reference (POST /api/v1/runs/{id}/pin): the
headline metrics, the review queue's order, the scores and the exports follow it instead of
the newest succeeded run. A plain nullable column (no foreign key: adding one to datasets
would rebuild the table on SQLite); a reference that is gone or not succeeded is ignored.
"""

from alembic import op
import sqlalchemy as sa

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("datasets", sa.Column("reference_run_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE on both (SQLite >= 3.35): a batch rebuild of datasets would drop the
    # table its samples, runs and the rest point at.
    op.execute("ALTER TABLE datasets DROP COLUMN reference_run_id")
