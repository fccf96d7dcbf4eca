"""REST routes of the review queue: hand-outs claimed for the caller (docs/rest.md, Review queue)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.auth.deps import CurrentUser
from app.db import SessionDep
from app.deps import DatasetDep, SettingsDep
from app.ids import QueryId
from app.labels import assignments, claims, queries, queue
from app.labels.routes import Filters
from app.labels.schemas import QueueHandOut
from app.runs.service import latest_run_id

router = APIRouter(tags=["queue"])

MAX_HAND_OUT = 100
MAX_SKIP = 100


@router.get("/datasets/{dataset_id}/queue", response_model=QueueHandOut)
def get_queue(
    ds: DatasetDep,
    session: SessionDep,
    user: CurrentUser,
    settings: SettingsDep,
    f: Filters,
    order: Annotated[
        str | None,
        Query(description=f"one of {', '.join(queries.ORDERS)}; default: the run's review order, else id"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_HAND_OUT)] = 10,
    assignment: Annotated[QueryId, Query(description="work this assignment's queue: its filters and overlap")] = None,
    skip: Annotated[
        list[int],
        Query(max_length=MAX_SKIP, description="sample ids to leave out of this hand-out: the ones the caller passes over"),
    ] = [],
) -> QueueHandOut:
    """Up to `limit` unreviewed samples under the filters, most suspicious first, claimed for
    the caller until `claimed_until`: no one else's queue hands them out meanwhile, and none
    of them was claimed by anyone else when handed out.

    Each call hands out the head of the queue again: the caller's own claimed samples come
    back (renewed) with others in place of the ones they have changed, and the caller's
    claims on anything else in this dataset end. A PATCH by the caller ends that sample's
    claim; DELETE releases them all; unrenewed, they lapse after CURATE_CLAIM_SECONDS.

    With an overlap k > 1 (the dataset's, or `assignment`'s), the queue hands out only
    samples the caller has not answered and that have fewer than k answers; answer them with
    POST /samples/{id}/annotations (docs/annotations.md). `needed` says which applies.

    `skip` leaves samples out of this hand-out, as the browser's skip key does: a client
    that passes over a sample (one it cannot decide, or a second opinion it would rather not
    give) sends its id with each later fetch, else the head of the queue hands it back.
    """
    a = assignments.get(session, ds, assignment, user) if assignment is not None else None
    q = f.query(limit=limit)
    if a is not None:
        af = assignments.filters_of(a)
        q = replace(assignments.query_of(a), run_id=f.run, limit=limit)
        order = order or af.order
    if order is None:
        run_id = q.run_id if q.run_id is not None else latest_run_id(session, ds.id)
        order = queries.default_order(session, run_id) if run_id is not None else "id"
    k = assignments.overlap(ds, a)
    q = replace(q, order=order, blind=k > 1)
    items, out = queue.queue_items(session, ds, q, user, settings.claim_seconds, tuple(skip))
    return QueueHandOut(items=items, claimed_until=out.until, run_id=out.run_id, needed=k)


@router.delete("/datasets/{dataset_id}/queue", status_code=204)
def release_queue(ds: DatasetDep, session: SessionDep, user: CurrentUser) -> Response:
    """Release every claim the caller holds in this dataset, so others' queues hand those samples out."""
    claims.release(session, ds.id, user.id)
    return Response(status_code=204)
