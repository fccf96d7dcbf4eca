"""claims: review-queue samples handed out to one annotator for a while

Revision ID: 0010
Revises: 0009

A hand-out (GET /api/v1/datasets/{id}/queue, the browser queue and grid) claims the samples
it serves for the caller until expires_at; other annotators' queues skip a sample while its
claim lasts (docs/queries.md, Claims). Keyed by the sample, so that two concurrent hand-outs
cannot both hold one: the second's upsert finds the first's row and leaves it.
"""

from alembic import op
import sqlalchemy as sa

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "claims",
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["sample_id"], ["samples.id"], name="fk_claims_sample_id_samples", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name="fk_claims_dataset_id_datasets", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_claims_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("sample_id", name="pk_claims"),
    )
    op.create_index("ix_claims_user_dataset", "claims", ["user_id", "dataset_id"])


def downgrade() -> None:
    op.drop_index("ix_claims_user_dataset", table_name="claims")
    op.drop_table("claims")
