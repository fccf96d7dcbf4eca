"""indexes for the id and random orders

Revision ID: 0007
Revises: 0006

The listings' random order is a fixed shuffle of the sample ids, (id * 2654435761) mod
4294967311, then the id. Without an index every listing in that order computed and sorted
the key of every sample of the dataset (90 ms at 50k samples); along this expression index
a page reads as many entries as it shows. The expression must stay the one
app.models.tables.shuffle_key writes, for the databases to match it.

The id order (the default) read the primary key and skipped other datasets' samples, or,
on SQLite, which prefers any index on dataset_id, sorted the whole dataset; (dataset_id, id)
gives a dataset's samples in id order.
"""

from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_samples_dataset_id", "samples", ["dataset_id", "id"], unique=False)
    op.create_index(
        "ix_samples_dataset_shuffle",
        "samples",
        ["dataset_id", sa.text("((CAST(id AS BIGINT) * 2654435761) % 4294967311)"), "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_samples_dataset_shuffle", table_name="samples")
    op.drop_index("ix_samples_dataset_id", table_name="samples")
