"""A train job's Run row and its predictions, each written in a short transaction of its own."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, insert, update

from app.db import session_scope
from app.jobs.context import JobContext
from app.models import Prediction, Run, RunStatus, utcnow
from app.training.data import TrainingData
from app.training.recipe import Recipe

PREDICTION_BATCH = 2000
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
    """Insert Prediction rows, `batch` per statement and transaction."""
    for start in range(0, len(rows), batch):
        if ctx is not None:
            ctx.check_cancelled()
        with session_scope(engine) as session:
            session.execute(insert(Prediction), rows[start : start + batch])
    if engine.dialect.name == "postgresql" and len(rows) >= ANALYZE_AFTER_ROWS:
        # Fresh statistics before the run is the latest, not whenever autovacuum (if on) gets
        # to it: planning with the old ones, the listings join the new run's predictions by a
        # nested loop over all of them, or scan the table (docs/queries.md).
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE predictions")
            conn.commit()
