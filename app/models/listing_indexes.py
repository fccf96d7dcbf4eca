"""The indexes of a listing by id or at random filtered on the run's predictions
(app.labels.ranges, docs/queries.md, migration 0018)."""

from sqlalchemy import Index, literal_column

from app.models.tables import Prediction, shuffle_key


def id_key(sample_id):
    """The order such a listing walks the run's predictions in: `sample_id + 0`, the sample
    id's own order, as an expression that only the two indexes below hold. Ordered by the
    column, Postgres may walk another index that has it (ix_predictions_sample,
    uq_predictions_run_sample) and filter each entry: a generic plan takes `flagged = $1` to
    keep half the rows, and such a walk read 6,000 entries for a page of the flagged set at
    55,000 samples. The constant is written into the SQL so that both databases match the
    expression to the index."""
    return sample_id + literal_column("0")


def random_key(sample_id):
    """The random order's key on predictions: the samples' shuffle key of the sample id
    (app.models.tables.shuffle_key), which no other predictions index holds."""
    return shuffle_key(sample_id)


Index("ix_predictions_by_id", Prediction.run_id, Prediction.sample_reviewed, Prediction.flagged,
      id_key(Prediction.sample_id), Prediction.sample_split)
Index("ix_predictions_cell_by_id", Prediction.run_id, Prediction.sample_label, Prediction.label,
      Prediction.sample_reviewed, Prediction.flagged, id_key(Prediction.sample_id), Prediction.sample_split)
Index("ix_predictions_random", Prediction.run_id, Prediction.sample_reviewed, Prediction.flagged,
      random_key(Prediction.sample_id), Prediction.sample_split)
Index("ix_predictions_cell_random", Prediction.run_id, Prediction.sample_label, Prediction.label,
      Prediction.sample_reviewed, Prediction.flagged, random_key(Prediction.sample_id), Prediction.sample_split)
