"""each score index ends in the sample id

Revision ID: 0006
Revises: 0005

The listings order by a score, then the sample id, and list the samples without the score
by id. With the sample id last in each (run_id, score) index, a walk along it gives both in
order; before, every group of equal scores (and the run's samples without the score, all
NULL) had to be sorted. The indexes are made again; the data is untouched.
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SCORES = ("loss", "self_confidence", "normalized_margin", "confusion_margin", "entropy", "aum", "combined", "priority")


def _remake(columns) -> None:
    for score in SCORES:
        name = f"ix_predictions_run_{score}"
        op.drop_index(name, table_name="predictions")
        op.create_index(name, "predictions", columns(score), unique=False)


def upgrade() -> None:
    _remake(lambda score: ["run_id", score, "sample_id"])


def downgrade() -> None:
    _remake(lambda score: ["run_id", score])
