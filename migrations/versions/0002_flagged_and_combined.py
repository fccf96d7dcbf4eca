"""flagged label errors and the combined score on predictions

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        # Existing rows were never flagged: the server default fills them.
        batch_op.add_column(sa.Column("flagged", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("suggested_label", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("combined", sa.Float(), nullable=True))
        batch_op.create_index("ix_predictions_run_combined", ["run_id", "combined"], unique=False)
        batch_op.create_index("ix_predictions_run_flagged", ["run_id", "flagged"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_predictions_run_flagged")
        batch_op.drop_index("ix_predictions_run_combined")
        batch_op.drop_column("combined")
        batch_op.drop_column("suggested_label")
        batch_op.drop_column("flagged")
