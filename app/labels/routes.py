"""REST routes for samples: ranked listing, one sample, relabel, image bytes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select

from app.auth.deps import CurrentUser
from app.datasets.storage import BlobStore
from app.db import SessionDep
from app.deps import DatasetDep, SampleDep, SettingsDep
from app.labels import history, queries, queue, service
from app.labels.schemas import (
    BulkCounts,
    BulkItemResult,
    BulkRelabel,
    BulkRelabelResult,
    LabelEventPage,
    ReviewProgress,
    RevertRequest,
    SampleConflict,
    SamplePage,
    SampleRead,
    SampleUpdate,
)
from app.errors import BadRequest, Conflict, ErrorBody, NotFound, PreconditionRequired
from app.ids import MAX_ID, PathId, QueryId, in_range
from app.models import Dataset, LabelSource, Prediction, Run, RunStatus, Split
from app.runs.retention import check_kept

router = APIRouter(tags=["samples"])


def if_match_version(if_match: Annotated[str | None, Header()] = None) -> int:
    """The sample version an If-Match header carries (3, "3" or W/"3"): 428 when it is missing."""
    if if_match is None:
        raise PreconditionRequired("If-Match header required: send the sample's current version (e.g. If-Match: 3)")
    v = if_match.strip()
    if v.startswith("W/"):
        v = v[2:]
    v = v.strip('"')
    if not v.isdigit() or not in_range(int(v)):
        raise BadRequest(f"If-Match must be a version number, not {if_match!r}")
    return int(v)


@dataclass
class SampleFilters:
    """The filters the sample list and the review progress share, as query parameters."""

    split: Split | None = None
    label: Annotated[str | None, Query(description="the given class")] = None
    predicted: Annotated[str | None, Query(description="the class the run predicts")] = None
    run: QueryId = None
    flagged: Annotated[bool | None, Query(description="only the run's flagged likely label errors (true) or the others (false)")] = None
    missed: Annotated[str | None, Query(description="multi-label: the given set holds this class, the predicted set lacks it")] = None
    extra: Annotated[str | None, Query(description="multi-label: the predicted set holds this class, the given set lacks it")] = None

    def query(self, **kwargs) -> queries.SampleQuery:
        return queries.SampleQuery(
            split=self.split, label=self.label, predicted=self.predicted, run_id=self.run, flagged=self.flagged,
            missed=self.missed, extra=self.extra, **kwargs
        )


Filters = Annotated[SampleFilters, Depends()]


@router.get("/datasets/{dataset_id}/samples", response_model=SamplePage)
def list_samples(
    ds: DatasetDep,
    session: SessionDep,
    user: CurrentUser,
    f: Filters,
    order: Annotated[str, Query(description=f"one of {', '.join(queries.ORDERS)}; most suspicious first")] = "id",
    reverse: bool = False,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = 50,
    cursor: str | None = None,
    reviewed: bool | None = None,
) -> SamplePage:
    """Samples of a dataset, filtered and ranked by a score of the latest finished run (or `run`)."""
    q = f.query(order=order, reverse=reverse, limit=limit, cursor=cursor, reviewed=reviewed)
    items, next_cursor, run_id = queries.list_samples(session, ds, q)
    return SamplePage(items=items, next_cursor=next_cursor, run_id=run_id)


@router.get("/samples/{sample_id}", response_model=SampleRead)
def get_sample(s: SampleDep, session: SessionDep, user: CurrentUser, response: Response) -> SampleRead:
    """One sample with its latest prediction and its label history."""
    response.headers["ETag"] = f'"{s.version}"'
    return queries.sample_detail(session, s)


@router.patch(
    "/samples/{sample_id}",
    response_model=SampleRead,
    responses={
        409: {"model": SampleConflict, "description": "the sample is no longer at If-Match's version"},
        428: {"model": ErrorBody, "description": "If-Match is missing"},
    },
)
def patch_sample(
    s: SampleDep,
    change: SampleUpdate,
    session: SessionDep,
    user: CurrentUser,
    expected: Annotated[int, Depends(if_match_version)],
):
    """Relabel or move a sample; If-Match must carry the version the client saw."""
    s, _ = service.change_sample(session, s.id, expected, change, user, source="api")
    return _written(session, s)


@router.post("/datasets/{dataset_id}/samples/bulk", response_model=BulkRelabelResult)
def bulk_relabel(ds: DatasetDep, body: BulkRelabel, session: SessionDep, user: CurrentUser) -> JSONResponse:
    """Set one class (`label`), or each sample's predicted class (`accept_predicted`), on many samples.

    Each item carries the version the client saw, like If-Match on PATCH, and goes through the
    same conditional update: items are independent, not all or nothing. The answer is 200 with
    one result per item, in request order:

    - `changed`: relabelled; one label event written (`event_id`), `sample` is the new state;
    - `kept`: it already had that class: no event, the sample is now marked reviewed;
    - `conflict`: the sample moved past `version`; nothing written, `current` is the sample as it
      is now with its history (what PATCH's 409 carries): show it, then resend with its version;
    - `skipped`: the sample is not in this dataset, or (accept_predicted) the run has no prediction for it.

    A request that cannot apply to any item is refused whole: 422 when the body is malformed
    (both or neither of `label` and `accept_predicted`, a label outside the dataset's classes,
    an id twice, more than 500 items), 404 for an unknown dataset or `run`, 409 when
    accept_predicted finds no finished run.
    """
    run_id = _bulk_run(session, ds, body.run) if body.accept_predicted else None
    items = [(i.id, i.version) for i in body.items]
    result = service.bulk_relabel(
        session, ds, items, user, label=body.label, accept_predicted=body.accept_predicted, run_id=run_id, source="api"
    )
    session.refresh(ds)
    label_version = ds.label_version
    session.commit()  # the answer is read after the dataset's lock is released
    shown_run = run_id if run_id is not None else queries.latest_run_id(session, ds.id)
    answer = BulkRelabelResult(
        label_version=label_version,
        counts=BulkCounts(
            changed=len(result.changed), kept=len(result.kept), conflict=len(result.conflicts), skipped=len(result.skipped)
        ),
        items=_bulk_items(session, result, [i for i, _ in items], shown_run),
    )
    # Built here, in the worker thread, for the reason _written gives.
    return JSONResponse(answer.model_dump(mode="json"))


def _bulk_items(session, result: service.BulkResult, ids: list[int], shown_run: int | None) -> list[BulkItemResult]:
    """One result per requested sample id, in request order, each sample under shown_run."""
    written = [s for s, _ in result.changed] + result.kept
    predictions = {}
    if shown_run is not None and written:
        query = select(Prediction).where(Prediction.run_id == shown_run, Prediction.sample_id.in_([s.id for s in written]))
        predictions = {p.sample_id: p for p in session.scalars(query)}
    by_id: dict[int, BulkItemResult] = {}
    for s, event in result.changed:
        sample = queries.sample_read(s, predictions.get(s.id))
        by_id[s.id] = BulkItemResult(id=s.id, status="changed", event_id=event.id, sample=sample)
    for s in result.kept:
        by_id[s.id] = BulkItemResult(id=s.id, status="kept", sample=queries.sample_read(s, predictions.get(s.id)))
    for conflict in result.conflicts:
        s = conflict.current
        current = queries.sample_detail(session, s, shown_run)
        by_id[s.id] = BulkItemResult(id=s.id, status="conflict", detail=conflict.detail, current=current)
    for sample_id, why in result.skipped:
        by_id[sample_id] = BulkItemResult(id=sample_id, status="skipped", detail=why)
    return [by_id[i] for i in ids]


def _bulk_run(session, ds: Dataset, run_id: int | None) -> int:
    """The finished run whose predictions accept_predicted takes: `run`, or the dataset's latest."""
    if run_id is None:
        latest = queries.latest_run_id(session, ds.id)
        if latest is None:
            raise Conflict(f"dataset {ds.id} has no finished run to take predictions from; train one first")
        return latest
    run = session.get(Run, run_id)
    if run is None or run.dataset_id != ds.id:
        raise NotFound(f"run {run_id} not found in dataset {ds.id}")
    if run.status != RunStatus.succeeded:
        raise Conflict(f"run {run_id} is {run.status}; its predictions are not final")
    check_kept(run)
    return run.id


@router.get("/datasets/{dataset_id}/review-progress", response_model=ReviewProgress)
def review_progress(ds: DatasetDep, session: SessionDep, user: CurrentUser, f: Filters) -> ReviewProgress:
    """How many of the samples under these filters are reviewed, and how many there are."""
    reviewed, total = queue.review_progress(session, ds, f.query())
    return ReviewProgress(reviewed=reviewed, total=total)


@router.get("/datasets/{dataset_id}/label-events", response_model=LabelEventPage)
def list_label_events(
    ds: DatasetDep,
    session: SessionDep,
    user: CurrentUser,
    username: Annotated[str | None, Query(alias="user", description="only this user's changes")] = None,
    source: Annotated[LabelSource | None, Query(description="who wrote the change")] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="only events older than this event id")] = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = 50,
) -> LabelEventPage:
    """The dataset's label events, newest first."""
    items, next_before = history.dataset_events(
        session, ds, username=username, source=source, before=before, limit=limit
    )
    return LabelEventPage(items=items, next_before=next_before)


@router.post(
    "/label-events/{event_id}/revert",
    response_model=SampleRead,
    responses={409: {"model": SampleConflict, "description": "the sample changed since the event, or since If-Match"}},
)
def revert_label_event(
    event_id: PathId,
    session: SessionDep,
    user: CurrentUser,
    body: RevertRequest | None = None,
    if_match: Annotated[str | None, Header()] = None,
):
    """Restore the label and split from before this event, as a new change.

    409 when the sample has later events (unless force) or is no longer at If-Match's version.
    """
    body = body or RevertRequest()
    expected = if_match_version(if_match) if if_match is not None else None
    s, _ = service.revert_event(
        session, event_id, user, expected, force=body.force, source="api", reason=body.reason or "revert"
    )
    return _written(session, s)


def _written(session, s) -> JSONResponse:
    """The changed sample: committed first, then serialised here, in the request's worker
    thread. A label change locks the dataset's row (its label version) until commit, so every
    other write to that dataset waits: reading what the answer shows after the commit keeps
    that lock short. Returned as a model, FastAPI would build the body in a second trip to the
    thread pool, which under load can be taken by writers all waiting for the dataset's lock."""
    session.commit()
    body = queries.sample_detail(session, s).model_dump(mode="json")
    return JSONResponse(body, headers={"ETag": f'"{s.version}"'})


@router.get("/samples/{sample_id}/image", response_class=Response,
            responses={200: {"description": "the image bytes",
                             "content": {m: {"schema": {"type": "string", "format": "binary"}}
                                         for m in ("image/png", "image/jpeg", "image/gif", "image/webp",
                                                   "application/octet-stream")}}})
def sample_image(s: SampleDep, user: CurrentUser, settings: SettingsDep) -> Response:
    """The image bytes of an image sample (content-addressed, so cacheable forever)."""
    if not s.image_blob:
        raise NotFound(f"sample {s.id} has no image")
    store = BlobStore(settings.blob_dir)
    data = store.get(s.image_blob)
    return Response(
        data,
        media_type=_image_type(data),
        headers={"Cache-Control": "private, max-age=31536000, immutable", "ETag": f'"{s.image_blob}"'},
    )


def _image_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"
