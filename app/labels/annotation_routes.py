"""REST routes for second opinions: answers, agreement, the disagreement queue, reviewers'
resolutions, raw answers and assignments (docs/annotations.md)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select

from app.auth.deps import CurrentUser, EngineerUser
from app.datasets.exporters import escape_name
from app.db import SessionDep, session_factory
from app.deps import DatasetDep, SampleDep
from app.errors import Conflict
from app.ids import PathId
from app.labels import agreement, annotations, assignments, queries
from app.labels.routes import _written, if_match_version
from app.labels.schemas import (
    AnnotationCreate,
    AnsweredRead,
    AnswerRead,
    ConsensusRead,
    DisagreementPage,
    DisagreementRead,
    ResolutionCreate,
)
from app.models import Annotation, Dataset, Sample, User

router = APIRouter(tags=["annotations"])


@router.post("/samples/{sample_id}/annotations", response_model=AnsweredRead, status_code=201)
def answer(user: CurrentUser, s: SampleDep, body: AnnotationCreate, session: SessionDep) -> AnsweredRead:
    """Give your answer for a sample of a second-opinion queue (overlap k > 1): it is kept, the
    sample is left as it is until it has k answers, and the k-th decides (docs/annotations.md).

    409 when the sample is decided already, or when the queue takes one answer per sample
    (overlap 1: change the sample with PATCH instead); 422 for a label outside the classes,
    and on a multi-label dataset, whose answers are tag sets."""
    ds = session.get(Dataset, s.dataset_id)
    annotations.refuse_multilabel(ds, "label")
    a = assignments.get(session, ds, body.assignment, user) if body.assignment is not None else None
    k = assignments.overlap(ds, a)
    if k == 1:
        raise Conflict(f"dataset {ds.id} takes one answer per sample: PATCH the sample to label it")
    done = annotations.annotate(session, ds, s.id, user, body.label, k, body.seconds)
    return AnsweredRead(sample_id=s.id, answers=done.answers, needed=k,
                        consensus=ConsensusRead.model_validate(done.consensus) if done.consensus else None)


@router.get("/datasets/{dataset_id}/agreement", response_model=agreement.AgreementRead)
def get_agreement(user: CurrentUser, ds: DatasetDep, session: SessionDep) -> agreement.AgreementRead:
    """Agreement among annotators (Fleiss' kappa, overall and per class) and each annotator's
    numbers: everyone's for engineers and admins, your own for an annotator."""
    return agreement.agreement(session, ds, user)


@router.get("/datasets/{dataset_id}/disagreements", response_model=DisagreementPage)
def disagreements(
    user: EngineerUser,
    ds: DatasetDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = 20,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> DisagreementPage:
    """Samples whose answers disagree: ties waiting for a reviewer first, then decided samples
    by the consensus's quality, lowest (most uncertain) first; with every answer."""
    rows = annotations.disagreements(session, ds, offset, limit)
    ids = [row.sample_id for row in rows[:limit]]
    samples = queries.sample_details(session, ds, ids)
    answers = annotations.answers_of(session, ids)
    items = [
        DisagreementRead(sample=samples[row.sample_id], consensus=ConsensusRead.model_validate(row),
                         answers=[AnswerRead(username=u, label=label, seconds=sec) for u, label, sec in answers[row.sample_id]])
        for row in rows[:limit]
    ]
    return DisagreementPage(items=items, next_offset=offset + limit if len(rows) > limit else None)


@router.post("/samples/{sample_id}/resolution")
def resolve(
    user: EngineerUser,
    s: SampleDep,
    body: ResolutionCreate,
    session: SessionDep,
    expected: Annotated[int, Depends(if_match_version)],
):
    """A reviewer's label for a sample whose answers disagree: applied like a PATCH (If-Match
    required), and the consensus is marked as the reviewer's."""
    ds = session.get(Dataset, s.dataset_id)
    s = annotations.resolve(session, ds, s.id, expected, body.label, user)
    return _written(session, s)


@router.get("/datasets/{dataset_id}/annotations", response_class=StreamingResponse,
            responses={200: {"description": "the answers, in the format asked for",
                             "content": {m: {"schema": {"type": "string", "format": "binary"}}
                                         for m in ("text/csv", "application/x-ndjson")}}})
def export_answers(
    request: Request, user: EngineerUser, ds: DatasetDep, format: Literal["csv", "jsonl"] = "csv"
) -> StreamingResponse:
    """Every answer in the dataset (sample id, external id, username, label, seconds, time),
    oldest first; CSV cells that a spreadsheet would run as a formula are escaped as in the
    sample export."""
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(_answer_lines(request.app.state.engine, ds.id, format), media_type=media,
                             headers={"Content-Disposition": f'attachment; filename="annotations-{ds.id}.{format}"'})


def _answer_lines(engine, dataset_id: int, fmt: str) -> Iterator[bytes]:
    """The answers, read in a read-only session of their own while the response streams."""
    names = ["sample_id", "external_id", "username", "label", "seconds", "created_at"]
    query = (select(Annotation.sample_id, Sample.external_id, User.username, Annotation.label, Annotation.seconds,
                    Annotation.created_at)
             .join(Sample, Sample.id == Annotation.sample_id).join(User, User.id == Annotation.user_id)
             .where(Annotation.dataset_id == dataset_id).order_by(Annotation.id))
    if fmt == "csv":
        yield (",".join(names) + "\r\n").encode()
    with session_factory(engine, readonly=True)() as session:
        for row in session.execute(query.execution_options(yield_per=5000)):
            values = [*row[:5], row[5].isoformat()]
            if fmt == "jsonl":
                yield (json.dumps(dict(zip(names, values, strict=True))) + "\n").encode()
                continue
            out = io.StringIO()
            csv.writer(out).writerow([escape_name(v) if isinstance(v, str) else v for v in values])
            yield out.getvalue().encode()


# --- assignments --------------------------------------------------------------------------


@router.post("/datasets/{dataset_id}/assignments", response_model=assignments.AssignmentRead, status_code=201)
def create_assignment(user: EngineerUser, ds: DatasetDep, body: assignments.AssignmentCreate,
                      session: SessionDep) -> assignments.AssignmentRead:
    """Give a queue (filters, and an overlap: answers per sample, default the dataset's) to
    chosen annotators; it shows first on their home page with its progress."""
    a = assignments.create(session, ds, body, user)
    return assignments.read(session, a)


@router.get("/datasets/{dataset_id}/assignments", response_model=list[assignments.AssignmentRead])
def list_assignments(user: CurrentUser, ds: DatasetDep, session: SessionDep) -> list[assignments.AssignmentRead]:
    """The dataset's assignments with their progress: all of them for engineers and admins, an
    annotator's own otherwise."""
    return [assignments.read(session, a, progress=True) for a in assignments.of_dataset(session, ds, user)]


@router.delete("/datasets/{dataset_id}/assignments/{assignment_id}", status_code=204)
def delete_assignment(user: EngineerUser, ds: DatasetDep, assignment_id: PathId, session: SessionDep) -> Response:
    session.delete(assignments.get(session, ds, assignment_id, user))
    return Response(status_code=204)


@router.get("/me/assignments", response_model=list[assignments.AssignmentRead])
def my_assignments(user: CurrentUser, session: SessionDep) -> list[assignments.AssignmentRead]:
    """What you are assigned, newest first, with progress."""
    return [assignments.read(session, a, progress=True) for a in assignments.of_user(session, user)]
