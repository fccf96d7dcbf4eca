"""A train job's Run row and its predictions, each written in a short transaction of its own."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
from sqlalchemy import Engine, text, update

from app.datasets.importers.writing import bulk_insert
from app.db import session_scope
from app.jobs.context import JobContext
from app.models import Run, RunStatus, utcnow
from app.training.data import TrainingData
from app.training.recipe import Recipe

PREDICTION_BATCH = 20_000
# What a train job writes of each prediction, as Arrow types (probs: JSON text).
PREDICTION_SCHEMA = pa.schema([
    ("run_id", pa.int64()), ("sample_id", pa.int64()), ("given_label", pa.string()), ("label", pa.string()),
    ("probs", pa.string()), ("loss", pa.float64()), ("self_confidence", pa.float64()),
    ("normalized_margin", pa.float64()), ("confusion_margin", pa.float64()), ("confusion_a", pa.string()),
    ("confusion_b", pa.string()), ("entropy", pa.float64()), ("aum", pa.float64()), ("out_of_fold", pa.bool_()),
    ("fold", pa.int64()), ("flagged", pa.bool_()), ("suggested_label", pa.string()), ("combined", pa.float64()),
    ("priority", pa.float64()), ("outlier", pa.float64()), ("duplicate_group", pa.int64()),
    ("review_gain", pa.float64()),
    # The sample's label, reviewed flag and split as the run read them (kept current by
    # triggers after the write; sync_sample_mirror catches what changed while the run ran).
    ("sample_label", pa.string()), ("sample_reviewed", pa.bool_()), ("sample_split", pa.string()),
])
PREDICTION_COLUMNS = tuple(PREDICTION_SCHEMA.names)
# Numbers and flags, which COPY needs no escaping for.
PLAIN_COLUMNS = tuple(f.name for f in PREDICTION_SCHEMA if not pa.types.is_string(f.type))
# Predictions written at once from which the table's statistics are refreshed (Postgres).
ANALYZE_AFTER_ROWS = 10_000


def create_run(engine: Engine, data: TrainingData, recipe: Recipe, job_id: int | None) -> int:
    """A new running run; an earlier attempt's run of the same job (its worker died) is closed as failed."""
    with session_scope(engine) as session:
        if job_id:
            session.execute(
                update(Run)
                .where(Run.job_id == job_id, Run.status == RunStatus.running)
                .values(status=RunStatus.failed, finished_at=utcnow())
            )
        run = Run(
            dataset_id=data.dataset_id,
            job_id=job_id or None,
            status=RunStatus.running,
            params=recipe.model_dump(),
            label_version=data.label_version,
            history=[],
            info={},
        )
        session.add(run)
        session.flush()
        return run.id


def update_run(engine: Engine, run_id: int, **values: Any) -> None:
    with session_scope(engine) as session:
        session.execute(update(Run).where(Run.id == run_id).values(**values))


def finish_run(engine: Engine, run_id: int, info: dict[str, Any], status: str, error: str | None = None,
               **values: Any) -> None:
    """Close the run with `status` and its info (the error, if any, goes into info["error"])."""
    if error:
        info["error"] = error
    update_run(engine, run_id, status=status, info=info, finished_at=utcnow(), **values)


def write_predictions(engine: Engine, rows: list[dict], ctx: JobContext | None = None, batch: int = PREDICTION_BATCH) -> None:
    """Write Prediction rows, `batch` per transaction: COPY on Postgres, executemany on SQLite
    (app.datasets.importers.writing.bulk_insert). Columns a row leaves out are null, or false
    for the flags."""
    for start in range(0, len(rows), batch):
        if ctx is not None:
            ctx.check_cancelled()
        with session_scope(engine) as session:
            bulk_insert(session, "predictions", PREDICTION_COLUMNS, [_prediction_batch(rows[start : start + batch])],
                        plain=PLAIN_COLUMNS)
    for run_id in sorted({r["run_id"] for r in rows[:1]}):
        sync_sample_mirror(engine, run_id)
    if engine.dialect.name == "postgresql" and len(rows) >= ANALYZE_AFTER_ROWS:
        # Fresh statistics before the run is the latest, not whenever autovacuum (if on) gets
        # to it: planning with the old ones, the listings join the new run's predictions by a
        # nested loop over all of them, or scan the table (docs/queries.md).
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE predictions")
            conn.commit()


def sync_sample_mirror(engine: Engine, run_id: int) -> int:
    """Bring the run's predictions' copies of their samples' label, reviewed flag and split up
    to date (those changed since the run read them); returns how many changed.

    After this the triggers keep them. On Postgres the samples table is locked against
    writes (SHARE) for the statement, so that a relabel in flight when the predictions were
    written, whose trigger could not see them yet, has committed before the statement reads
    the samples: writers wait for it (about a second at 1M samples), none is refused."""
    with session_scope(engine) as session:
        if engine.dialect.name == "postgresql":
            session.execute(text("LOCK TABLE samples IN SHARE MODE"))
            result = session.execute(text(
                "UPDATE predictions p SET sample_label = s.label, sample_reviewed = s.reviewed, sample_split = s.split "
                "FROM samples s WHERE p.run_id = :run AND s.id = p.sample_id AND (p.sample_label IS DISTINCT FROM "
                "s.label OR p.sample_reviewed IS DISTINCT FROM s.reviewed OR p.sample_split IS DISTINCT FROM s.split)"
            ), {"run": run_id})
        else:
            result = session.execute(text(
                "UPDATE predictions SET sample_label = s.label, sample_reviewed = s.reviewed, sample_split = s.split "
                "FROM samples s WHERE predictions.run_id = :run AND s.id = predictions.sample_id AND ("
                "predictions.sample_label IS NOT s.label OR predictions.sample_reviewed IS NOT s.reviewed OR "
                "predictions.sample_split IS NOT s.split)"
            ), {"run": run_id})
        return result.rowcount


def _prediction_batch(rows: list[dict]) -> pa.Table:
    """Rows as an Arrow table of PREDICTION_SCHEMA (probs as JSON, flags false when absent)."""
    columns = {}
    for name in PREDICTION_COLUMNS:
        if name == "probs":
            values = [json.dumps(r["probs"]) for r in rows]
        elif name in ("out_of_fold", "flagged"):
            values = [bool(r.get(name, False)) for r in rows]
        else:
            values = [r.get(name) for r in rows]
        columns[name] = pa.array(values, PREDICTION_SCHEMA.field(name).type)
    return pa.table(columns, schema=PREDICTION_SCHEMA)


def fill_prediction_rows(rows: list[dict], run_id: int, items, fold_col, columns, issues, classes: list[str]) -> None:
    """Complete the score rows of a single-label run (one per item, in order) with the run, the
    sample's mirrored label, split and review state, its fold, the label-error columns
    (app.training.label_errors) and the data issues (app.runs.data_issues)."""
    aum, combined, flagged, suggested, priority = (
        a.tolist() for a in (columns.aum, columns.combined, columns.flagged, columns.suggested, columns.priority)
    )
    outlier, group = issues.outlier.tolist(), issues.group.tolist()
    gain = columns.review_gain.tolist() if columns.review_gain is not None else [None] * len(rows)
    labels = [classes[y] if y >= 0 else None for y in items["y"].tolist()]
    splits, sample_ids, folds = items["split"].tolist(), items["sample_id"].tolist(), list(fold_col.tolist())
    reviewed = items["reviewed"].tolist() if "reviewed" in items else [None] * len(items)  # sync_sample_mirror fills
    for i, (row, sample_id, fold) in enumerate(zip(rows, sample_ids, folds)):
        row["run_id"] = run_id
        row["sample_id"] = sample_id
        row["sample_label"], row["sample_split"], row["sample_reviewed"] = labels[i], str(splits[i]), reviewed[i]
        row["out_of_fold"] = fold >= 0
        row["fold"] = fold if fold >= 0 else None
        row["aum"] = None if aum[i] != aum[i] else aum[i]  # NaN -> None
        row["combined"] = None if combined[i] != combined[i] else combined[i]
        row["priority"] = None if priority[i] != priority[i] else priority[i]
        row["review_gain"] = None if gain[i] is None or gain[i] != gain[i] else gain[i]
        row["flagged"] = flagged[i]
        row["outlier"] = None if outlier[i] != outlier[i] else outlier[i]
        row["duplicate_group"] = group[i] if group[i] >= 0 else None
        row["suggested_label"] = classes[suggested[i]] if suggested[i] >= 0 else None


def prediction_source(recipe: Recipe, fold_ensemble: bool) -> dict[str, Any]:
    """What predicted the valid, test and unlabelled samples, for Run.info."""
    source = {
        "model": "fold_ensemble" if fold_ensemble else "final",
        "snapshots": recipe.snapshot_ensemble,
        "tta": bool(recipe.tta),
    }
    # The artifact holds the final model's last (or best) weights: it repeats the stored
    # predictions only when they are that model's plain predictions.
    source["artifact_reproduces"] = source["model"] == "final" and not recipe.snapshot_ensemble and not recipe.tta
    return source
