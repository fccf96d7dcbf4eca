"""GET /api/v1/datasets/{id}/advice, and the dataset page's buttons that start the experiments.

Advice is for annotators and engineers alike: collect, relabel and confused-pair advice is
annotation work, and every item links to the review queue. Starting a job (the prune
experiment, a seeds job) stays with engineers, as for every job.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, status
from fastapi.responses import RedirectResponse, Response

from app.advisor.advice import AdviceRead, advise
from app.auth.deps import CurrentUser, EngineerUser
from app.datasets.service import get_dataset
from app.db import SessionDep
from app.jobs import service as job_service
from app.web.deps import is_htmx
from app.ids import PathId

router = APIRouter(tags=["runs"])
web_router = APIRouter(include_in_schema=False)


@router.get("/datasets/{dataset_id}/advice", response_model=AdviceRead, response_model_by_alias=True)
def dataset_advice(dataset_id: PathId, session: SessionDep, user: CurrentUser) -> AdviceRead:
    """Per-class advice from the latest succeeded run: collect, relabel, prune, confused_pair
    (rules in app.advisor.advice); empty with a message before the first run."""
    return advise(session, get_dataset(session, dataset_id))


def _to_job(request: Request, job_id: int) -> Response:
    target = f"/jobs/{job_id}"
    if is_htmx(request):
        return Response(status_code=status.HTTP_201_CREATED, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)


@web_router.post("/datasets/{dataset_id}/advice/prune")
def start_prune(
    request: Request, dataset_id: PathId, session: SessionDep, user: EngineerUser, cls: Annotated[str, Form(alias="class")] = ""
) -> Response:
    """The prune advice's button: queue a prune experiment for the class with default params."""
    ds = get_dataset(session, dataset_id)
    job = job_service.enqueue(
        session, "prune", {"class": cls}, dataset_id=ds.id, user=user,
        max_attempts=request.app.state.settings.job_max_attempts,
    )
    return _to_job(request, job.id)


@web_router.post("/datasets/{dataset_id}/health/seeds")
def start_seeds(request: Request, dataset_id: PathId, session: SessionDep, user: EngineerUser) -> Response:
    """The validation health section's button: queue a seeds job of the default recipe."""
    ds = get_dataset(session, dataset_id)
    job = job_service.enqueue(
        session, "seeds", {}, dataset_id=ds.id, user=user, max_attempts=request.app.state.settings.job_max_attempts
    )
    return _to_job(request, job.id)
