"""predictions.review_gain: the expected gain of reviewing a sample

Revision ID: 0017
Revises: 0016

A train sample's expected gain of a review (app.scoring.review_gain: the chance its label is
wrong times what relabelling it adds to its KNN-Shapley value among its neighbours in the run's
embedding space), the signal behind its place in the review order. Null for runs stored before
it, runs without embeddings and samples outside train; their order is the review priority.
"""

from alembic import op
import sqlalchemy as sa

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("predictions", sa.Column("review_gain", sa.Float(), nullable=True))


def downgrade() -> None:
    # DROP COLUMN in place (SQLite 3.35+): a batch would rebuild the predictions table.
    op.execute("ALTER TABLE predictions DROP COLUMN review_gain")
