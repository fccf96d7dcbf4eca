"""The team page of a dataset: agreement among annotators, each annotator's numbers (everyone's
for engineers and admins, one's own for an annotator), the disagreement queue with a
reviewer's choice, and the dataset's assignments (docs/annotations.md)."""

from __future__ import annotations

import html
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.deps import CurrentUser, EngineerUser
from app.db import SessionDep
from app.deps import DatasetDep
from app.ids import PathId, RequiredFormId, RequiredFormVersion
from app.labels import agreement, annotations, assignments, queries, service
from app.models import Dataset, Role, Sample, User
from app.web.review_common import base_context, label_namer
from app.web.templating import render

router = APIRouter(include_in_schema=False)

PAGE = 20


@router.get("/datasets/{dataset_id}/team")
def team_page(request: Request, user: CurrentUser, ds: DatasetDep, session: SessionDep,
              offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> Response:
    """Agreement, annotators, and (engineers and admins) the disagreement queue."""
    return _team(request, session, user, ds, offset)


@router.get("/datasets/{dataset_id}/assignments/{assignment_id}/progress")
def assignment_progress(user: CurrentUser, ds: DatasetDep, assignment_id: PathId, session: SessionDep) -> Response:
    """An assignment's progress, as a fragment: the pages that list assignments load it after
    they render (each is a count over the assignment's samples: 20-40 ms at 100k samples,
    linear in them), so a list of them costs its page nothing."""
    a = assignments.read(session, assignments.get(session, ds, assignment_id, user), progress=True)
    text = (f"{a.reviewed} of {a.total} reviewed" if a.total is not None
            else "no progress: its filters need a run the dataset no longer has")
    return HTMLResponse(f'<span data-progress>{html.escape(text)}</span>')


@router.post("/datasets/{dataset_id}/team/resolve")
def resolve(request: Request, user: EngineerUser, ds: DatasetDep, session: SessionDep, sample_id: RequiredFormId,
            version: RequiredFormVersion, label: Annotated[str, Form(max_length=200)] = "") -> Response:
    """A reviewer's label for a sample whose answers disagree."""
    try:
        s = annotations.resolve(session, ds, sample_id, version, label, user)
        session.commit()
        notice = f"Sample #{s.id} is now {label_namer(ds)(s.label)}."
    except service.VersionConflict as exc:
        session.rollback()
        notice = f"Sample #{exc.current.id} changed meanwhile (now version {exc.current.version}); look again."
    return _team(request, session, user, ds, 0, notice=notice)


def _team(request: Request, session: Session, user: User, ds: Dataset, offset: int, notice: str | None = None):
    stats = agreement.agreement(session, ds, user)
    reviewer = Role(user.role).rank >= Role.engineer.rank
    rows, more = [], False
    if reviewer:
        found = annotations.disagreements(session, ds, offset, PAGE)
        more = len(found) > PAGE
        ids = [row.sample_id for row in found[:PAGE]]
        samples = {s.id: s for s in session.scalars(select(Sample).where(Sample.id.in_(ids)))}
        answers = annotations.answers_of(session, ids)
        rows = [{"c": row, "s": queries.sample_read(samples[row.sample_id]), "answers": answers[row.sample_id]}
                for row in found[:PAGE]]
    context = {
        **base_context(user, ds, "team"),
        "stats": stats,
        "reviewer": reviewer,
        "disagreements": rows,
        "next_offset": offset + PAGE if more else None,
        "assignments": [assignments.read(session, a) for a in assignments.of_dataset(session, ds, user)],
        "notice": notice,
    }
    return render(request, "team.html", context)
