"""the review priority on predictions

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        # Runs made before it have none; the review queue then falls back to the combined score.
        batch_op.add_column(sa.Column("priority", sa.Float(), nullable=True))
        batch_op.create_index("ix_predictions_run_priority", ["run_id", "priority"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_predictions_run_priority")
        batch_op.drop_column("priority")
