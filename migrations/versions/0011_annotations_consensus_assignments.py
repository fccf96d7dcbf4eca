"""annotations, consensus and assignments: several annotators per sample, and who works what

Revision ID: 0011
Revises: 0010

`annotations` keeps every annotator's answer apart from the sample's label (one per sample
and annotator); `consensus` records how a sample with several answers got its label (the
rule, its quality, the agreement, or a tie waiting for a reviewer); `assignments` and
`assignment_users` give a queue (filters, overlap) to chosen annotators
(docs/annotations.md).
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _fk(table: str, column: str, target: str, ondelete: str = "CASCADE") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}", ondelete=ondelete)


def upgrade() -> None:
    op.create_table(
        "annotations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        _fk("annotations", "dataset_id", "datasets"),
        _fk("annotations", "sample_id", "samples"),
        _fk("annotations", "user_id", "users"),
        sa.PrimaryKeyConstraint("id", name="pk_annotations"),
        sa.UniqueConstraint("sample_id", "user_id", name="uq_annotations_sample_id"),
    )
    op.create_index("ix_annotations_dataset_user", "annotations", ["dataset_id", "user_id"])
    op.create_table(
        "consensus",
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("rule", sa.String(40), nullable=False),
        sa.Column("quality", sa.Float(), nullable=False),
        sa.Column("agreement", sa.Float(), nullable=False),
        sa.Column("annotations", sa.Integer(), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=False),
        _fk("consensus", "sample_id", "samples"),
        _fk("consensus", "dataset_id", "datasets"),
        sa.PrimaryKeyConstraint("sample_id", name="pk_consensus"),
    )
    op.create_index("ix_consensus_dataset_state", "consensus", ["dataset_id", "state", "quality"])
    op.create_table(
        "assignments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("filters", JSON, nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        _fk("assignments", "dataset_id", "datasets"),
        _fk("assignments", "created_by", "users", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_assignments"),
    )
    op.create_index("ix_assignments_dataset", "assignments", ["dataset_id", "id"])
    op.create_table(
        "assignment_users",
        sa.Column("assignment_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        _fk("assignment_users", "assignment_id", "assignments"),
        _fk("assignment_users", "user_id", "users"),
        sa.PrimaryKeyConstraint("assignment_id", "user_id", name="pk_assignment_users"),
    )
    op.create_index("ix_assignment_users_user_id", "assignment_users", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_assignment_users_user_id", table_name="assignment_users")
    op.drop_table("assignment_users")
    op.drop_index("ix_assignments_dataset", table_name="assignments")
    op.drop_table("assignments")
    op.drop_index("ix_consensus_dataset_state", table_name="consensus")
    op.drop_table("consensus")
    op.drop_index("ix_annotations_dataset_user", table_name="annotations")
    op.drop_table("annotations")
