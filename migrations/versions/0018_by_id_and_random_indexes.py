"""Indexes for listings by id and at random that filter on the run's predictions

Revision ID: 0018
Revises: 0017

A listing by id or at random with a flagged, predicted-class or confusion-cell filter walked
the samples in that order and checked each one's prediction: long when the matches are rare
or gather far from the start (0.1-0.4 s at 1M samples). These four indexes hold the filters'
columns, then the order's key as an expression no other index holds (`sample_id + 0`, the
samples' shuffle key of `sample_id`), so that the listing reads one short range per
combination of their values and merges them (app.labels.ranges, docs/queries.md).
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

# `sample_id + 0`, as app.models.listing_indexes.id_key writes it: the id's order, held by no
# other index, so that the planner cannot walk another index on sample_id and filter.
BY_ID = ["run_id", "sample_reviewed", "flagged", sa.text("(sample_id + 0)"), "sample_split"]
CELL_BY_ID = ["run_id", "sample_label", "label", "sample_reviewed", "flagged", sa.text("(sample_id + 0)"),
              "sample_split"]
# The random order's key, as app.models.tables.shuffle_key writes it.
SHUFFLE = sa.text("((CAST(sample_id AS BIGINT) * 2654435761) % 4294967311)")
RANDOM = ["run_id", "sample_reviewed", "flagged", SHUFFLE, "sample_split"]
CELL_RANDOM = ["run_id", "sample_label", "label", "sample_reviewed", "flagged", SHUFFLE, "sample_split"]


def upgrade() -> None:
    op.create_index("ix_predictions_by_id", "predictions", BY_ID)
    op.create_index("ix_predictions_cell_by_id", "predictions", CELL_BY_ID)
    op.create_index("ix_predictions_random", "predictions", RANDOM)
    op.create_index("ix_predictions_cell_random", "predictions", CELL_RANDOM)


def downgrade() -> None:
    op.drop_index("ix_predictions_cell_random", table_name="predictions")
    op.drop_index("ix_predictions_random", table_name="predictions")
    op.drop_index("ix_predictions_cell_by_id", table_name="predictions")
    op.drop_index("ix_predictions_by_id", table_name="predictions")
