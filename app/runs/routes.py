"""REST routes for training runs."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import Response

from app.auth.deps import CurrentUser, EngineerUser
from app.db import SessionDep
from app.deps import DatasetDep, RunDep, SettingsDep
from app.errors import ErrorBody
from app.runs import external, retention, service
from app.runs.schemas import RunListItem, RunRead, RunUpdate

router = APIRouter(tags=["runs"])


@router.get("/datasets/{dataset_id}/runs", response_model=list[RunListItem])
def list_runs(
    ds: DatasetDep,
    session: SessionDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=service.MAX_RUNS)] = 100,
) -> list[RunListItem]:
    """The dataset's runs, newest first, with valid and test accuracy and macro F1."""
    return service.list_runs(session, ds.id, limit)


@router.post(
    "/datasets/{dataset_id}/runs",
    status_code=201,
    response_model=RunRead,
    responses={
        413: {"model": ErrorBody, "description": "upload over CURATE_MAX_UPLOAD_BYTES"},
        422: {"model": ErrorBody, "description": "the file was refused, no run was created: `errors` names each bad row"},
    },
)
def create_external_run(
    user: EngineerUser,
    ds: DatasetDep,
    session: SessionDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(
        description="CSV, JSON Lines or Parquet: external_id, one probability column per class named exactly as "
                    "the class, optional embedding (a list of floats; a JSON array in CSV)",
        json_schema_extra={"format": "binary"})],
    name: Annotated[str, Form(description="the model the predictions came from", min_length=1,
                              max_length=external.MAX_NAME)],
    out_of_fold: Annotated[bool, Form(description="true when every probability comes from a model that did not "
                                                  "train on that sample (cross-validated, held out)")] = False,
    normalize: Annotated[Literal["none", "softmax", "sigmoid"], Form(
        description="none: the columns are probabilities (each row sums to 1 within 0.001; on a multi-label "
                    "dataset each column is its tag's own probability); softmax: logits; sigmoid: a multi-label "
                    "model's logits, one per tag")] = "none",
) -> RunRead:
    """Bring your own model's predictions: a finished run (provenance `external`) with per-class
    metrics on the valid and test samples the file covers, every score, the flagged set,
    suggested labels and the review priority, as a train run has them (no AUM: no training
    dynamics). All or nothing: 422 names each bad row (unknown ids, missing class columns,
    NaN, probabilities that do not sum to 1)."""
    run = external.create_external_run(session, ds, file.file, file.filename or "", name, out_of_fold, normalize,
                                       settings)
    return service.run_read(run, service.reference_run_id(session, run.dataset_id) == run.id)


@router.get("/runs/{run_id}", response_model=RunRead)
def get_run(run: RunDep, user: CurrentUser, session: SessionDep) -> RunRead:
    """One run: its recipe, label version, metrics per split, per-epoch history and info."""
    return service.run_read(run, service.reference_run_id(session, run.dataset_id) == run.id)


@router.patch("/runs/{run_id}", response_model=RunRead)
def update_run(user: EngineerUser, run: RunDep, data: RunUpdate, session: SessionDep) -> RunRead:
    """Pin a run to keep its per-sample predictions past the retention rule (the latest
    CURATE_KEEP_RUNS succeeded runs of a dataset keep theirs), or unpin it. 409 when pinning
    a run whose predictions were already dropped."""
    retention.set_pinned(session, run, data.pinned)
    return service.run_read(run, service.reference_run_id(session, run.dataset_id) == run.id)


@router.post("/runs/{run_id}/pin", response_model=RunRead)
def pin_reference(user: EngineerUser, run: RunDep, session: SessionDep) -> RunRead:
    """Make this run the dataset's reference: the headline metrics, the review queue's order,
    the scores, the advisor and the exports follow it, not merely the newest run, until it is
    unpinned or another is pinned. Its predictions are kept past retention. 409 for a run
    that has not succeeded or whose predictions are gone."""
    return service.run_read(service.set_reference(session, run), True)


@router.delete("/runs/{run_id}/pin", status_code=204)
def unpin_reference(user: EngineerUser, run: RunDep, session: SessionDep) -> Response:
    """Stop following this run (when it is the reference): the newest succeeded run leads again."""
    service.clear_reference(session, run)
    return Response(status_code=204)
