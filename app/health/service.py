"""Validation health of a dataset, read from what is stored: its succeeded runs' valid and test
numbers (do they move together?), its valid split's size per class, its latest seeds job."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.health import stats
from app.models import Dataset, Job, JobStatus, Run, RunStatus, Sample

MAX_RUNS = 200


class RunPair(BaseModel):
    run_id: int
    label_version: int
    valid_accuracy: float
    test_accuracy: float
    valid_macro_f1: float
    test_macro_f1: float


class Correlation(BaseModel):
    n: int
    pearson: float | None
    spearman: float | None


class SeedsSummary(BaseModel):
    job_id: int
    seeds: int
    finished_at: Any = None
    valid_macro_f1: dict[str, Any] | None
    valid_accuracy: dict[str, Any] | None
    test_macro_f1: dict[str, Any] | None
    test_accuracy: dict[str, Any] | None
    comparison: dict[str, Any] | None
    warning: str | None


class HealthRead(BaseModel):
    dataset_id: int
    runs: list[RunPair] = Field(description="succeeded runs with valid and test metrics, oldest first")
    correlation: dict[str, Correlation] = Field(description="valid against test over those runs, per metric")
    valid_counts: dict[str, int] = Field(description="labelled valid samples per class, now")
    warnings: list[str]
    seeds: SeedsSummary | None = Field(description="the latest succeeded seeds job")
    thresholds: dict[str, float]


def run_pairs(session: Session, dataset_id: int) -> list[RunPair]:
    runs = session.scalars(
        select(Run).where(Run.dataset_id == dataset_id, Run.status == RunStatus.succeeded).order_by(Run.id.desc()).limit(MAX_RUNS)
    ).all()
    out = []
    for r in reversed(runs):
        valid, test = (r.metrics or {}).get("valid"), (r.metrics or {}).get("test")
        if not valid or not test:
            continue
        out.append(
            RunPair(
                run_id=r.id,
                label_version=r.label_version,
                valid_accuracy=valid["accuracy"],
                test_accuracy=test["accuracy"],
                valid_macro_f1=valid["macro_f1"],
                test_macro_f1=test["macro_f1"],
            )
        )
    return out


def valid_counts(session: Session, ds: Dataset) -> dict[str, int]:
    rows = session.execute(
        select(Sample.label, func.count())
        .where(Sample.dataset_id == ds.id, Sample.split == "valid", Sample.label.is_not(None))
        .group_by(Sample.label)
    ).all()
    counts = dict.fromkeys(ds.classes or [], 0)
    counts.update({label: n for label, n in rows})
    return counts


def latest_seeds(session: Session, dataset_id: int) -> SeedsSummary | None:
    job = session.scalar(
        select(Job)
        .where(Job.dataset_id == dataset_id, Job.kind == "seeds", Job.status == JobStatus.succeeded)
        .order_by(Job.id.desc())
        .limit(1)
    )
    if job is None or not job.result:
        return None
    summary = job.result.get("summary") or {}
    valid, test = summary.get("valid") or {}, summary.get("test") or {}
    return SeedsSummary(
        job_id=job.id,
        seeds=job.result.get("seeds", 0),
        finished_at=job.finished_at,
        valid_macro_f1=valid.get("macro_f1"),
        valid_accuracy=valid.get("accuracy"),
        test_macro_f1=test.get("macro_f1"),
        test_accuracy=test.get("accuracy"),
        comparison=job.result.get("comparison"),
        warning=job.result.get("warning"),
    )


def health(session: Session, ds: Dataset) -> HealthRead:
    """Correlations of valid and test over the runs, small-valid and seed-noise warnings."""
    pairs = run_pairs(session, ds.id)
    correlation = {
        "macro_f1": stats.correlation([p.valid_macro_f1 for p in pairs], [p.test_macro_f1 for p in pairs]),
        "accuracy": stats.correlation([p.valid_accuracy for p in pairs], [p.test_accuracy for p in pairs]),
    }
    warnings = []
    for metric, corr in correlation.items():
        w = stats.correlation_warning(metric.replace("_", " ").replace("macro f1", "macro F1"), corr)
        if w:
            warnings.append(w)
    counts = valid_counts(session, ds)
    small = stats.small_valid_warning(counts) if counts else None
    if small:
        warnings.append(small)
    seeds = latest_seeds(session, ds.id)
    if seeds is not None and seeds.warning:
        warnings.append(f"seeds job #{seeds.job_id}: {seeds.warning}")
    return HealthRead(
        dataset_id=ds.id,
        runs=pairs,
        correlation={k: Correlation(**v) for k, v in correlation.items()},
        valid_counts=counts,
        warnings=warnings,
        seeds=seeds,
        thresholds={
            "min_correlation": stats.MIN_CORRELATION,
            "min_runs_for_correlation": stats.MIN_RUNS_FOR_CORRELATION,
            "min_valid_per_class": stats.MIN_VALID_PER_CLASS,
            "noise_z": stats.NOISE_Z,
        },
    )
