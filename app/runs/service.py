"""Runs: listing a dataset's runs and reading one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.evaluation.metrics import summary
from app.models import Run, RunStatus
from app.runs.schemas import RunListItem, RunMetrics, RunRead, RunSummary

MAX_RUNS = 500


def latest_run_id(session: Session, dataset_id: int) -> int | None:
    """The dataset's newest succeeded run: the one its pages, scores and exports show."""
    return session.scalar(select(func.max(Run.id)).where(Run.dataset_id == dataset_id, Run.status == RunStatus.succeeded))


def latest_run(session: Session, dataset_id: int) -> Run | None:
    run_id = latest_run_id(session, dataset_id)
    return session.get(Run, run_id) if run_id is not None else None


def list_runs(session: Session, dataset_id: int, limit: int = 100) -> list[RunListItem]:
    """The dataset's runs, newest first, with their valid and test headline metrics."""
    runs = session.scalars(
        select(Run).where(Run.dataset_id == dataset_id).order_by(Run.id.desc()).limit(max(1, min(limit, MAX_RUNS)))
    ).all()
    return [RunListItem.model_validate(r).model_copy(update={"summary": RunSummary(**summary(r.metrics))}) for r in runs]


def _in_class_order(m: dict[str, Any] | None) -> dict[str, Any] | None:
    """per_class in the order of the confusion labels (Postgres JSONB does not keep key order)."""
    if not m or "per_class" not in m or "confusion" not in m:
        return m
    per_class = m["per_class"]
    order = [c for c in m["confusion"].get("labels", []) if c in per_class]
    order += [c for c in per_class if c not in order]
    return {**m, "per_class": {c: per_class[c] for c in order}}


def run_read(run: Run) -> RunRead:
    metrics = run.metrics or {}
    return RunRead.model_validate(run).model_copy(
        update={"metrics": RunMetrics(valid=_in_class_order(metrics.get("valid")), test=_in_class_order(metrics.get("test")))}
    )
