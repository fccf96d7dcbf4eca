"""Runs: listing a dataset's runs and reading one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.errors import Conflict
from app.evaluation.metrics import summary
from app.models import Dataset, Run, RunStatus
from app.runs.schemas import Provenance, RunListItem, RunMetrics, RunRead, RunSummary

MAX_RUNS = 500


def current_run(dataset_id):
    """SQL for the run a dataset follows: its reference run (pinned by an engineer, while it is
    the dataset's and has succeeded), else its newest succeeded run; NULL without either."""
    reference = (
        select(Run.id).join(Dataset, Dataset.reference_run_id == Run.id)
        .where(Dataset.id == dataset_id, Run.dataset_id == dataset_id, Run.status == RunStatus.succeeded)
        .scalar_subquery()
    )
    newest = select(func.max(Run.id)).where(Run.dataset_id == dataset_id, Run.status == RunStatus.succeeded)
    return func.coalesce(reference, newest.scalar_subquery())


def latest_run_id(session: Session, dataset_id: int) -> int | None:
    """The run the dataset's pages, scores, queue and exports show: the reference run if an
    engineer pinned one, else the newest succeeded run (current_run)."""
    return session.scalar(select(current_run(dataset_id)))


def latest_run(session: Session, dataset_id: int) -> Run | None:
    run_id = latest_run_id(session, dataset_id)
    return session.get(Run, run_id) if run_id is not None else None


def list_runs(session: Session, dataset_id: int, limit: int = 100) -> list[RunListItem]:
    """The dataset's runs, newest first, with their valid and test headline metrics."""
    runs = session.scalars(
        select(Run).where(Run.dataset_id == dataset_id).order_by(Run.id.desc()).limit(max(1, min(limit, MAX_RUNS)))
    ).all()
    reference = reference_run_id(session, dataset_id)
    return [RunListItem.model_validate(r).model_copy(update={"summary": RunSummary(**summary(r.metrics)),
                                                            "reference": r.id == reference,
                                                            "provenance": provenance(r)}) for r in runs]


def provenance(run: Run) -> Provenance:
    """A run's origin: info["provenance"] for an external run, else its train job and recipe."""
    external = (run.info or {}).get("provenance")
    if isinstance(external, dict) and external.get("kind") == "external":
        return Provenance(kind="external", name=external.get("name"), job_id=None, label_version=run.label_version,
                          out_of_fold=bool(external.get("out_of_fold")))
    scoring = (run.params or {}).get("scoring")
    return Provenance(kind="train", job_id=run.job_id, label_version=run.label_version,
                      out_of_fold=None if scoring is None else scoring == "out_of_fold")


def _in_class_order(m: dict[str, Any] | None) -> dict[str, Any] | None:
    """per_class in the order of the confusion labels, a multi-label run's swaps labels
    (Postgres JSONB does not keep key order)."""
    matrix = (m or {}).get("confusion") or (m or {}).get("swaps")
    if not m or "per_class" not in m or not matrix:
        return m
    per_class = m["per_class"]
    order = [c for c in matrix.get("labels", []) if c in per_class]
    order += [c for c in per_class if c not in order]
    return {**m, "per_class": {c: per_class[c] for c in order}}


def run_read(run: Run, reference: bool = False) -> RunRead:
    metrics = run.metrics or {}
    return RunRead.model_validate(run).model_copy(
        update={"metrics": RunMetrics(valid=_in_class_order(metrics.get("valid")), test=_in_class_order(metrics.get("test"))),
                "reference": reference, "provenance": provenance(run)}
    )


def set_reference(session: Session, run: Run) -> Run:
    """Make a succeeded run its dataset's reference, and keep its predictions past retention
    (a pin); 409 for a run that has not succeeded or whose predictions are gone."""
    from app.runs import retention

    if run.status != RunStatus.succeeded:
        raise Conflict(f"run {run.id} is {run.status}; only a succeeded run can be the reference")
    retention.set_pinned(session, run, True)
    session.execute(update(Dataset).where(Dataset.id == run.dataset_id).values(reference_run_id=run.id))
    session.commit()
    return run


def clear_reference(session: Session, run: Run) -> None:
    """Stop following this run if it is its dataset's reference (the newest succeeded run
    leads again); its retention pin stays (PATCH /runs/{id} lifts it)."""
    session.execute(update(Dataset).where(Dataset.id == run.dataset_id, Dataset.reference_run_id == run.id)
                    .values(reference_run_id=None))
    session.commit()


def reference_run_id(session: Session, dataset_id: int) -> int | None:
    """The dataset's pinned reference run, if any (whether or not it is usable now)."""
    return session.scalar(select(Dataset.reference_run_id).where(Dataset.id == dataset_id))
