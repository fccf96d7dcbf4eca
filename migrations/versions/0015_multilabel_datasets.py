"""datasets.multilabel: a dataset whose samples carry a set of classes

Revision ID: 0015
Revises: 0014

A multi-label dataset (declared at creation, never changed) stores each sample's tag set in
the existing label columns, in canonical form: the tags in the dataset's class order joined
by "|", the empty set as "" and an unlabelled sample as null (app.datasets.tagsets). So
every index, trigger and mirror column works unchanged; only the flag is new. Existing
datasets are single-label.
"""

from alembic import op
import sqlalchemy as sa

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, not a batch: on SQLite a batch rebuilds datasets, and dropping the old
    # table would cascade to every sample, run and job of every dataset.
    op.add_column("datasets", sa.Column("multilabel", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    # DROP COLUMN in place (SQLite 3.35+), for the same reason.
    op.execute("ALTER TABLE datasets DROP COLUMN multilabel")
