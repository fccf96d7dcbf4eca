"""the sample's label, reviewed flag and split on its predictions, and the listings' indexes

Revision ID: 0008
Revises: 0007

A listing filtered on the given class, the predicted class, the flagged set or the
reviewed flag, in a score order, walked one score index and checked each entry's sample:
long when the matches gather at the other end (a confusion cell from its least suspicious
end: 4.4 s at 1M samples; a queue's head once its top is reviewed). Predictions now carry
the sample's current label, reviewed flag and split, kept by triggers, and each score has
two indexes that start with the filters (docs/queries.md):

    ix_predictions_<score>       (run_id, sample_reviewed, flagged, score, sample_id, sample_split)
    ix_predictions_cell_<score>  (run_id, sample_label, label, sample_reviewed, flagged, score, sample_id, sample_split)

Triggers:
- after a sample's label, reviewed flag or split changes, its predictions take the new values;
- an insert into predictions that leaves sample_split null has all three filled from the
  sample (the train job writes them itself, and syncs any change made while it ran).
"""

from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SCORES = ("loss", "self_confidence", "normalized_margin", "confusion_margin", "entropy", "aum", "combined", "priority")

PG_FUNCTIONS = [
    """
    CREATE FUNCTION curate_samples_mirror() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE predictions
           SET sample_label = NEW.label, sample_reviewed = NEW.reviewed, sample_split = NEW.split
         WHERE sample_id = NEW.id;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION curate_predictions_fill() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        SELECT label, reviewed, split INTO NEW.sample_label, NEW.sample_reviewed, NEW.sample_split
          FROM samples WHERE id = NEW.sample_id;
        RETURN NEW;
    END $$
    """,
    """
    CREATE TRIGGER tr_samples_mirror AFTER UPDATE OF label, reviewed, split ON samples FOR EACH ROW
    WHEN (OLD.label IS DISTINCT FROM NEW.label OR OLD.reviewed IS DISTINCT FROM NEW.reviewed
          OR OLD.split IS DISTINCT FROM NEW.split)
    EXECUTE FUNCTION curate_samples_mirror()
    """,
    """
    CREATE TRIGGER tr_predictions_fill BEFORE INSERT ON predictions FOR EACH ROW
    WHEN (NEW.sample_split IS NULL)
    EXECUTE FUNCTION curate_predictions_fill()
    """,
]

SQLITE_TRIGGERS = [
    """
    CREATE TRIGGER tr_samples_mirror AFTER UPDATE OF label, reviewed, split ON samples FOR EACH ROW
    WHEN OLD.label IS NOT NEW.label OR OLD.reviewed IS NOT NEW.reviewed OR OLD.split IS NOT NEW.split
    BEGIN
        UPDATE predictions
           SET sample_label = NEW.label, sample_reviewed = NEW.reviewed, sample_split = NEW.split
         WHERE sample_id = NEW.id;
    END
    """,
    """
    CREATE TRIGGER tr_predictions_fill AFTER INSERT ON predictions FOR EACH ROW
    WHEN NEW.sample_split IS NULL
    BEGIN
        UPDATE predictions
           SET (sample_label, sample_reviewed, sample_split) =
               (SELECT label, reviewed, split FROM samples WHERE id = NEW.sample_id)
         WHERE id = NEW.id;
    END
    """,
]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("predictions", sa.Column("sample_label", sa.String(length=200), nullable=True))
    op.add_column("predictions", sa.Column("sample_reviewed", sa.Boolean(), nullable=True))
    op.add_column("predictions", sa.Column("sample_split", sa.String(length=20), nullable=True))
    if postgres:
        op.execute("UPDATE predictions p SET sample_label = s.label, sample_reviewed = s.reviewed, "
                   "sample_split = s.split FROM samples s WHERE s.id = p.sample_id")
    else:
        op.execute("UPDATE predictions SET (sample_label, sample_reviewed, sample_split) = "
                   "(SELECT label, reviewed, split FROM samples WHERE samples.id = predictions.sample_id)")
    for statement in PG_FUNCTIONS if postgres else SQLITE_TRIGGERS:
        op.execute(statement)
    for name in SCORES:
        op.drop_index(f"ix_predictions_run_{name}", table_name="predictions")
        op.create_index(f"ix_predictions_{name}", "predictions",
                        ["run_id", "sample_reviewed", "flagged", name, "sample_id", "sample_split"])
        op.create_index(f"ix_predictions_cell_{name}", "predictions",
                        ["run_id", "sample_label", "label", "sample_reviewed", "flagged", name, "sample_id",
                         "sample_split"])


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute("DROP TRIGGER tr_predictions_fill" + (" ON predictions" if postgres else ""))
    op.execute("DROP TRIGGER tr_samples_mirror" + (" ON samples" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION curate_predictions_fill()")
        op.execute("DROP FUNCTION curate_samples_mirror()")
    for name in SCORES:
        op.drop_index(f"ix_predictions_cell_{name}", table_name="predictions")
        op.drop_index(f"ix_predictions_{name}", table_name="predictions")
        op.create_index(f"ix_predictions_run_{name}", "predictions", ["run_id", name, "sample_id"])
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_column("sample_split")
        batch_op.drop_column("sample_reviewed")
        batch_op.drop_column("sample_label")
