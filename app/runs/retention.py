"""Retention of runs' per-sample predictions.

Every run writes one prediction per sample: at a million samples, ten runs are ten million
rows, each in twenty-two listing indexes. A dataset keeps the predictions of its latest `keep_runs`
succeeded runs (CURATE_KEEP_RUNS) and of every pinned run. An older run keeps its row: its
metrics, per-epoch history and the summaries its pages read (`info`: train confusion,
flagged counts, timings); its predictions are dropped and `predictions_dropped_at` says
when. Nothing a page shows reads a dropped run's predictions: listings, bulk edits and the
prune job refuse such a run by name (409), and the pages read the latest run, which is kept.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Engine, delete, select, update

from app.db import session_scope
from app.errors import Conflict
from app.models import Prediction, Run, RunStatus, utcnow
from app.runs import embeddings

log = logging.getLogger(__name__)

# Predictions deleted per transaction: short enough that no lock or snapshot is held long.
DROP_BATCH = 50_000


def runs_to_drop(engine: Engine, dataset_id: int, keep: int) -> list[int]:
    """The dataset's succeeded runs, past the latest `keep`, that are unpinned and still hold predictions."""
    with session_scope(engine) as session:
        runs = session.execute(
            select(Run.id, Run.pinned, Run.predictions_dropped_at)
            .where(Run.dataset_id == dataset_id, Run.status == RunStatus.succeeded)
            .order_by(Run.id.desc())
        ).all()
    return [r.id for r in runs[keep:] if not r.pinned and r.predictions_dropped_at is None]


def apply_retention(engine: Engine, dataset_id: int, keep: int, data_dir: str | Path | None = None) -> list[int]:
    """Drop the predictions (and, given the data folder, the embeddings) of the runs
    `runs_to_drop` names, in batches; returns those runs.

    A run is marked first, so that a listing that reads it from then on is refused rather
    than shown a part of its rows; a pin that arrives while its rows go is refused too."""
    dropped = []
    for run_id in runs_to_drop(engine, dataset_id, keep):
        with session_scope(engine) as session:
            marked = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.pinned.is_(False), Run.predictions_dropped_at.is_(None))
                .values(predictions_dropped_at=utcnow())
            ).rowcount
        if not marked:
            continue  # pinned (or dropped) meanwhile
        total = 0
        while True:
            with session_scope(engine) as session:
                ids = select(Prediction.id).where(Prediction.run_id == run_id).limit(DROP_BATCH)
                n = session.execute(delete(Prediction).where(Prediction.id.in_(ids))).rowcount
            total += n
            if n < DROP_BATCH:
                break
        if data_dir is not None:
            embeddings.drop(data_dir, run_id)
        log.info("run %s: dropped its %s predictions (retention: the latest %s runs and pinned ones are kept)",
                 run_id, total, keep)
        dropped.append(run_id)
    return dropped


def check_kept(run: Run) -> None:
    """Refuse a run whose per-sample predictions were dropped (409), naming what remains."""
    if run.predictions_dropped_at is not None:
        raise Conflict(
            f"run {run.id}'s per-sample predictions were dropped on {run.predictions_dropped_at:%Y-%m-%d} "
            "(retention keeps the latest runs and pinned ones); its metrics and history remain. "
            "List by a kept run, or pin a run to keep its predictions."
        )


def set_pinned(session, run: Run, pinned: bool) -> Run:
    """Pin (or unpin) a run. A run whose predictions are gone cannot be pinned back (409);
    the pin is one conditional UPDATE, so that it and retention's mark cannot both win."""
    if pinned:
        check_kept(run)
    condition = [Run.id == run.id] + ([Run.predictions_dropped_at.is_(None)] if pinned else [])
    if session.execute(update(Run).where(*condition).values(pinned=pinned)).rowcount == 0:
        session.refresh(run)
        check_kept(run)
    session.refresh(run)
    return run
