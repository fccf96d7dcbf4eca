"""The history pages: who changed a sample's (or a dataset's) labels and when, each change
revertible through revert_event, the same service as the REST revert."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from app.auth.deps import CurrentUser
from app.db import SessionDep
from app.deps import DatasetDep, SampleDep
from app.errors import NotFound
from app.ids import FormId, QueryId, RequiredFormId, RequiredFormVersion
from app.labels import history, queries, service
from app.models import Dataset, LabelSource, Sample, User
from app.web.review_common import base_context, image_info, latest_change
from app.web.templating import render

router = APIRouter(include_in_schema=False)

HISTORY_PAGE = 50
FormStr = Annotated[str, Form()]


@router.get("/samples/{sample_id}/history")
def sample_history_page(request: Request, s: SampleDep, session: SessionDep, user: CurrentUser) -> Response:
    """Who changed this sample's label and split, and when; each change can be reverted."""
    return _sample_history(request, session, user, s)


@router.post("/samples/{sample_id}/history/revert")
def revert_from_sample_history(
    request: Request,
    s: SampleDep,
    session: SessionDep,
    user: CurrentUser,
    event_id: RequiredFormId,
    version: RequiredFormVersion,
    force: FormStr = "",
) -> Response:
    if service.get_event(session, event_id).sample_id != s.id:
        raise NotFound(f"label event {event_id} is not one of sample {s.id}'s")
    outcome = _revert(session, user, event_id, version, force == "true")
    session.refresh(s)
    return _sample_history(request, session, user, s, outcome=outcome, status_code=outcome["status"])


def _revert(session: Session, user: User, event_id: int, version: int, force: bool) -> dict[str, Any]:
    """Revert through revert_event; the outcome is a message and, when refused, what to do next."""
    try:
        s, _ = service.revert_event(session, event_id, user, version, force=force, source="annotator", reason="revert")
        session.commit()
    except service.EventSuperseded as exc:
        return {
            "status": 409,
            "kind": "superseded",
            "event_id": event_id,
            "version": exc.current.version,
            "sample_id": exc.current.id,
            "message": f"Sample #{exc.current.id} has changed since event #{event_id}: reverting it also undoes the later changes.",
        }
    except service.VersionConflict as exc:
        return {
            "status": 409,
            "kind": "moved",
            "event_id": event_id,
            "sample_id": exc.current.id,
            "message": f"Sample #{exc.current.id} changed while you were looking; here is its history now. "
            + latest_change(session, exc.current),
        }
    label = s.label if s.label is not None else "unlabelled"
    return {"status": 200, "kind": "done", "event_id": event_id, "sample_id": s.id,
            "message": f"Reverted event #{event_id}: sample #{s.id} is {label} ({s.split}) again."}


def _sample_history(
    request: Request, session: Session, user: User, s: Sample, *, outcome: dict | None = None, status_code: int = 200
) -> Response:
    ds = session.get(Dataset, s.dataset_id)
    detail = queries.sample_detail(session, s)
    context = {
        **base_context(user, ds, "history"),
        "page": "sample",
        "sample": detail,
        "image": image_info(request, s),
        "events": detail.history or [],
        "outcome": outcome,
    }
    return render(request, "history.html", context, block="sample_history_panel", status_code=status_code)


@router.get("/datasets/{dataset_id}/history")
def dataset_history_page(
    request: Request,
    ds: DatasetDep,
    session: SessionDep,
    user: CurrentUser,
    who: Annotated[str | None, Query(alias="user")] = None,
    source: str | None = None,
    before: QueryId = None,
) -> Response:
    """The dataset's latest label events, newest first, by user and source."""
    return _dataset_history(request, session, user, ds, who or None, source or None, before)


@router.post("/datasets/{dataset_id}/history/revert")
def revert_from_dataset_history(
    request: Request,
    ds: DatasetDep,
    session: SessionDep,
    user: CurrentUser,
    event_id: RequiredFormId,
    version: RequiredFormVersion,
    force: FormStr = "",
    who: Annotated[str, Form(alias="user")] = "",
    source: FormStr = "",
    before: FormId = None,
) -> Response:
    if service.get_event(session, event_id).dataset_id != ds.id:
        raise NotFound(f"label event {event_id} not found in dataset {ds.id}")
    outcome = _revert(session, user, event_id, version, force == "true")
    return _dataset_history(
        request, session, user, ds, who or None, source or None, before, outcome=outcome, status_code=outcome["status"]
    )


def _dataset_history(
    request: Request,
    session: Session,
    user: User,
    ds: Dataset,
    who: str | None,
    source: str | None,
    before: int | None,
    *,
    outcome: dict | None = None,
    status_code: int = 200,
) -> Response:
    events, next_before = history.dataset_events(
        session, ds, username=who, source=source, before=before, limit=HISTORY_PAGE
    )
    params = {k: v for k, v in (("user", who), ("source", source)) if v}
    base = f"/datasets/{ds.id}/history"
    context = {
        **base_context(user, ds, "history"),
        "page": "dataset",
        "events": events,
        "who": who or "",
        "source": source or "",
        "before": before,
        "users": history.event_users(session, ds),
        "sources": [s.value for s in LabelSource],
        "next_url": f"{base}?{urlencode({**params, 'before': next_before})}" if next_before else None,
        "first_url": f"{base}?{urlencode(params)}" if before else None,
        "outcome": outcome,
    }
    return render(request, "history.html", context, block="dataset_history_panel", status_code=status_code)
