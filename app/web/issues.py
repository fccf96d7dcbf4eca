"""Data issues on the pages: the dataset page's summary panel (duplicates, leaks, conflicting
labels, outliers), its leakage effect loaded on demand, and what the review queue shows about
a sample's duplicate twins and outlier score.

The panel stays cheap: the run's counts come from Run.info["data_issues"] (written when the
run was stored: app.runs.data_issues), the exact duplicates from one query along the
(dataset_id, content_hash) index that stops after EXACT_CAP groups. The leakage effect
(app.datasets.leakage, which reads the valid and test predictions) is loaded by the panel
after the page shows, and only when something leaks.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from app.auth.deps import CurrentUser
from app.datasets.leakage import leakage_report
from app.db import SessionDep
from app.deps import DatasetDep
from app.labels.schemas import SampleRead
from app.models import Dataset, Prediction, Run, Sample, Split
from app.web.deps import is_htmx
from app.web.templating import render
from app.web.urls import review_url

router = APIRouter(include_in_schema=False)

EXACT_CAP = 1000
MAX_TWINS = 8
EVALUATED = (Split.valid.value, Split.test.value)


def duplicates_url(dataset_id: int, kind: str = "exact", scope: str = "all", cursor: str | None = None) -> str:
    query = f"kind={kind}&scope={scope}" + (f"&cursor={cursor}" if cursor else "")
    return f"/datasets/{dataset_id}/duplicates?{query}"


def exact_counts(session: Session, ds: Dataset) -> dict[str, Any]:
    """Exact duplicate groups among the samples still in use (not excluded): how many, how
    many leak train into valid or test, how many disagree on the label; at most EXACT_CAP
    groups are read (`capped` says the counts stopped there)."""
    train = func.sum(case((Sample.split == Split.train, 1), else_=0))
    held_out = func.sum(case((Sample.split.in_(EVALUATED), 1), else_=0))
    labels = func.count(func.distinct(Sample.label))
    rows = session.execute(
        select(Sample.content_hash, train, held_out, labels)
        .where(Sample.dataset_id == ds.id, Sample.content_hash.is_not(None), Sample.split != Split.excluded)
        .group_by(Sample.content_hash)
        .having(func.count() > 1)
        .limit(EXACT_CAP + 1)
    ).all()
    capped = len(rows) > EXACT_CAP
    rows = rows[:EXACT_CAP]
    return {
        "groups": len(rows),
        "leak": sum(1 for r in rows if r[1] and r[2]),
        "conflict": sum(1 for r in rows if r[3] > 1),
        "capped": capped,
    }


def issues_summary(session: Session, ds: Dataset, run: Run | None) -> dict[str, Any]:
    """The dataset page's data-issues panel: counts and the links that open each kind."""
    info = (run.info or {}) if run is not None else {}
    issues = info.get("data_issues") or {}
    exact = exact_counts(session, ds)
    near = None
    if run is not None and issues:
        near = {
            "embedding": bool(issues.get("embedding")),
            "groups": issues.get("groups"),
            "grouped_samples": issues.get("grouped_samples"),
            "leak": issues.get("leak_groups"),
            "conflict": issues.get("conflict_groups"),
            "outliers": issues.get("outliers"),
            "fence": issues.get("outlier_fence"),
            "twins_flagged": (info.get("flagged") or {}).get("twin_conflicts"),
        }
    leaks = bool(exact["leak"] or (near and near["leak"]))
    return {
        "run_id": run.id if run is not None else None,
        "exact": exact,
        "near": near,
        "leaks": leaks,
        "leak_url": f"/datasets/{ds.id}/issues/leakage" if leaks and run is not None else None,
        "urls": {
            "exact": duplicates_url(ds.id),
            "exact_leak": duplicates_url(ds.id, scope="leak"),
            "exact_conflict": duplicates_url(ds.id, scope="conflict"),
            "near": duplicates_url(ds.id, "near"),
            "near_leak": duplicates_url(ds.id, "near", "leak"),
            "near_conflict": duplicates_url(ds.id, "near", "conflict"),
            "outliers": review_url(ds.id, order="outlier", split="train"),
        },
    }


@router.get("/datasets/{dataset_id}/issues/leakage")
def leakage_panel(request: Request, user: CurrentUser, ds: DatasetDep, session: SessionDep) -> Response:
    """The issues panel's leakage effect: each evaluated split's metrics over every labelled
    sample and without the leaked ones (GET /api/v1/datasets/{id}/leakage has it all)."""
    if not is_htmx(request):
        return RedirectResponse(f"/datasets/{ds.id}#issues", status_code=status.HTTP_303_SEE_OTHER)
    report = leakage_report(session, ds)
    splits = [(name, leak) for name, leak in report.splits.items() if leak.leaked]
    return render(request, "_leak_effect.html", {"report": report, "splits": splits})


# --- the review queue's sample panel --------------------------------------------------------


def twins(session: Session, detail: SampleRead | None, content_hash: str | None = None) -> dict[str, Any] | None:
    """The other members of the sample's duplicate group under the run that scored it (its
    twins), each exact (same content key) or near, with its label and split; a twin whose
    label differs from the sample's explains why a conflicting twin was flagged."""
    p = detail.prediction if detail is not None else None
    if p is None or p.duplicate_group is None:
        return None
    rows = session.execute(
        select(Sample.id, Sample.external_id, Sample.label, Sample.split, Sample.content_hash)
        .join(Prediction, Prediction.sample_id == Sample.id)
        .where(Prediction.run_id == p.run_id, Prediction.duplicate_group == p.duplicate_group,
               Prediction.sample_id != detail.id)
        .order_by(Sample.id)
        .limit(MAX_TWINS + 1)
    ).all()
    items = [{
        "id": r.id, "external_id": r.external_id, "label": r.label,
        "split": r.split.value if isinstance(r.split, Split) else str(r.split),
        "exact": content_hash is not None and r.content_hash == content_hash,
        "differs": r.label is not None and detail.label is not None and r.label != detail.label,
    } for r in rows[:MAX_TWINS]]
    group = p.duplicate_group
    return {
        "group": group,
        "items": items,
        "more": len(rows) > MAX_TWINS,
        "conflict": any(t["differs"] for t in items),
        # The near-duplicates view, starting at this group (its cursor is the id before).
        "url": duplicates_url(detail.dataset_id, "near", cursor=str(group - 1) if group > 1 else None),
    }


def outlier_note(session: Session, detail: SampleRead | None) -> dict[str, Any] | None:
    """The sample's outlier score under its run, with the run's fence (above it: likely an outlier)."""
    p = detail.prediction if detail is not None else None
    if p is None or p.outlier is None:
        return None
    run = session.get(Run, p.run_id)
    fence = ((run.info or {}).get("data_issues") or {}).get("outlier_fence") if run is not None else None
    return {"score": p.outlier, "fence": fence, "above": fence is not None and p.outlier > fence}
