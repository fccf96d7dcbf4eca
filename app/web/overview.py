"""The dataset overview page.

The page reads the latest succeeded run's stored metrics: per-class numbers worst first,
the confusion matrix of the valid or the test split as a heat map whose cells open the review
queue on that split and (given, predicted) pair (a multi-label run's swaps matrix instead,
its cells opening the queue on that (missed, extra) pair: app.web.swaps), each class's F1
over the runs and what changed since the run before.
GET /api/v1/datasets/{id}/compare (app.evaluation.routes) returns the same comparison.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Query, Request, status
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.advisor.advice import advise
from app.auth.deps import CurrentUser, EngineerUser
from app.datasets import service as dataset_service
from app.datasets.schemas import SplitCounts
from app.db import SessionDep
from app.deps import DatasetDep
from app.errors import NotFound
from app.evaluation import compare as cmp
from app.evaluation.metrics import summary
from app.health.service import health
from app.ids import QueryId, RequiredFormId, RequiredQueryId
from app.models import Dataset, Job, JobStatus, Role, Run, RunStatus, User
from app.runs import service as run_service
from app.runs.service import latest_run
from app.web.deps import is_htmx
from app.web.issues import issues_summary
from app.web.swaps import swaps_view
from app.web.templating import render
from app.web.urls import review_url

router = APIRouter(include_in_schema=False)

EXPORT_FORMATS = ("csv", "jsonl", "parquet")
# Beyond this many classes a confusion table is too wide to read; the pairs list remains.
MAX_MATRIX_CLASSES = 30
ACTIVE = (JobStatus.running, JobStatus.queued)
# The splits whose confusion matrix the overview can show, the default first.
MATRIX_SPLITS = ("valid", "test")
MatrixSplit = Annotated[Literal["valid", "test"] | None, Query(description="the confusion matrix's split")]


# --- the page ----------------------------------------------------------------------------


@router.get("/datasets/{dataset_id}")
def dataset_page(
    request: Request,
    ds: DatasetDep,
    session: SessionDep,
    user: CurrentUser,
    run: QueryId = None,
    base: QueryId = None,
    matrix: MatrixSplit = None,
) -> Response:
    """The overview; an HTMX request (the compare form) gets only the comparison panel,
    and only the comparison is computed for it."""
    if is_htmx(request):
        context = {
            "dataset": {"id": ds.id},
            "comparison": _comparison(session, ds, run, base),
            "history": cmp.run_history(session, ds.id),
        }
        return render(request, "dataset.html", context, block="compare_panel")
    return render(request, "dataset.html", _context(session, ds, user, run, base, matrix))


@router.get("/datasets/{dataset_id}/confusion")
def confusion_panel(request: Request, ds: DatasetDep, session: SessionDep, user: CurrentUser,
                    split: MatrixSplit = None) -> Response:
    """The overview's confusion matrix and most confused pairs on one split (its switch swaps
    them in); a plain request goes to the overview showing that split."""
    if not is_htmx(request):
        query = f"?matrix={split}" if split else ""
        return RedirectResponse(f"/datasets/{ds.id}{query}#confusion-panel", status_code=status.HTTP_303_SEE_OTHER)
    context = {"dataset": {"id": ds.id}, "review_url": review_url, **confusion_context(latest_run(session, ds.id), split)}
    return render(request, "dataset.html", context, block="confusion_panel")


@router.post("/datasets/{dataset_id}/reference")
def pin_reference(user: EngineerUser, ds: DatasetDep, session: SessionDep, run: RequiredFormId,
                  clear: Annotated[bool, Form()] = False) -> Response:
    """Pin a run of this dataset as its reference (or, with clear, stop following it): the
    overview's form; POST /api/v1/runs/{id}/pin is the same for REST clients."""
    target = session.get(Run, run)
    if target is None or target.dataset_id != ds.id:
        raise NotFound(f"run {run} not found in dataset {ds.id}")
    if clear:
        run_service.clear_reference(session, target)
    else:
        run_service.set_reference(session, target)
    return RedirectResponse(f"/datasets/{ds.id}", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/datasets/{dataset_id}/activity")
def dataset_activity(request: Request, ds: DatasetDep, session: SessionDep, user: CurrentUser, job: RequiredQueryId) -> Response:
    """The overview's job banner, polled while that job runs."""
    if request.headers.get("hx-request") != "true":
        return RedirectResponse(f"/datasets/{ds.id}", status_code=status.HTTP_303_SEE_OTHER)
    watched = session.get(Job, job)
    if watched is None or watched.dataset_id != ds.id:
        raise NotFound(f"job {job} not found in dataset {ds.id}")
    context = {"dataset": {"id": ds.id}, "active_job": watched, "can_train": user.role_rank >= Role.engineer.rank}
    return render(request, "dataset.html", context, block="activity")


def _newest_run_id(session: Session, dataset_id: int) -> int | None:
    return session.scalar(select(func.max(Run.id)).where(Run.dataset_id == dataset_id, Run.status == RunStatus.succeeded))


def _active_job(session: Session, dataset_id: int) -> Job | None:
    return session.scalar(
        select(Job).where(Job.dataset_id == dataset_id, Job.status.in_(ACTIVE)).order_by(Job.id.desc()).limit(1)
    )


def confusion_context(run: Run | None, split: str | None) -> dict[str, Any]:
    """The confusion panel's context: the chosen split's matrix (the first split that has one
    when the chosen split has none), the splits it can switch to and whether it is drawn."""
    # A multi-label run has no confusion matrix: its swaps matrix takes its place (app.web.swaps).
    shown = {s: cmp.confusion_view(m) or swaps_view(m) for s in MATRIX_SPLITS for m in [cmp.split_metrics(run, s)]}
    splits = [s for s in MATRIX_SPLITS if shown[s] is not None]
    chosen = split if split in splits else (splits[0] if splits else "valid")
    confusion = shown[chosen]
    return {
        "confusion": confusion,
        "matrix_split": chosen,
        "matrix_splits": splits,
        "draw_matrix": confusion is not None and len(confusion["labels"]) <= MAX_MATRIX_CLASSES,
    }


def _context(session: Session, ds: Dataset, user: User, run_id: int | None, base_id: int | None,
             matrix: str | None = None) -> dict[str, Any]:
    by_split_class = cmp.split_class_counts(session, ds)
    per_split: dict[str, int] = {}
    for split, _, n in by_split_class:
        per_split[split] = per_split.get(split, 0) + n
    read = dataset_service.to_read(session, ds, SplitCounts(**per_split))
    counts = read.counts
    latest = latest_run(session, ds.id)
    previous = cmp.previous_run(session, latest) if latest is not None else None
    history = cmp.run_history(session, ds.id)
    distribution = cmp.class_distribution(session, ds, by_split_class)
    rows = cmp.per_class_rows(latest) if latest is not None else []
    return {
        "user": user,
        "nav": "datasets",
        "dataset": read,
        "total": counts.train + counts.valid + counts.test + counts.unlabelled,
        "labelled": counts.train + counts.valid + counts.test,
        "can_train": user.role_rank >= Role.engineer.rank,
        "export_formats": EXPORT_FORMATS,
        "review_url": review_url,
        "active_job": _active_job(session, ds.id),
        "run": latest,
        # The newest succeeded run, when a pinned reference is not it.
        "newer_run_id": _newest_run_id(session, ds.id) if ds.reference_run_id is not None else None,
        "headline": summary(latest.metrics) if latest is not None else {},
        "previous_headline": summary(previous.metrics) if previous is not None else None,
        "previous": previous,
        "rows": rows,
        "has_test": any(r["test"] for r in rows),
        **confusion_context(latest, matrix),
        "distribution": distribution,
        "history": history,
        "comparison": _comparison(session, ds, run_id, base_id) if latest is not None else None,
        "charts": _charts(distribution, rows, history),
        "advice": advise(session, ds, distribution["train"]) if latest is not None else None,
        "issues": issues_summary(session, ds, latest) if counts.train + counts.valid + counts.test else None,
        # Validation health is about choosing between runs: an engineer's decision.
        "health": health(session, ds) if latest is not None and user.role_rank >= Role.engineer.rank else None,
    }


def _comparison(session: Session, ds: Dataset, run_id: int | None, base_id: int | None) -> cmp.Comparison | None:
    """The compare panel's comparison: the chosen runs, or the latest against the one before."""
    if run_id is None and latest_run(session, ds.id) is None:
        return None
    return cmp.compare_runs(session, ds.id, run_id, base_id)


def _charts(distribution: dict[str, dict[str, int]], rows: list[dict], history: cmp.RunHistory) -> dict[str, Any]:
    """The data each chart draws (static/js/charts.js reads it from JSON blocks in the page)."""
    names = list(next(iter(distribution.values()), {}))
    splits = [s for s, per in distribution.items() if any(per.values())]
    charts: dict[str, Any] = {
        "distribution": {
            "labels": names,
            "series": [{"name": s, "values": [distribution[s][n] for n in names]} for s in splits],
        }
    }
    if rows:
        series = [{"name": "valid F1", "values": [(r["valid"] or {}).get("f1") for r in rows]}]
        if any(r["test"] for r in rows):
            series.append({"name": "test F1", "values": [(r["test"] or {}).get("f1") for r in rows]})
        charts["per_class"] = {"labels": [r["name"] for r in rows], "series": series}
    if history.runs:
        charts["history"] = {
            "labels": [f"#{p.run_id} · v{p.label_version}" for p in history.runs],
            "series": [{"name": name, "values": values} for name, values in history.f1.items()],
        }
    return charts
