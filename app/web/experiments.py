"""The overview's buttons that queue an experiment: a prune experiment from the prune advice,
a seeds job from the validation health section. Both answer with the job's page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from app.auth.deps import EngineerUser
from app.db import SessionDep
from app.deps import DatasetDep, SettingsDep
from app.jobs import service as job_service
from app.web.deps import created_at

router = APIRouter(include_in_schema=False)


@router.post("/datasets/{dataset_id}/advice/prune")
def start_prune(
    request: Request,
    user: EngineerUser,
    ds: DatasetDep,
    session: SessionDep,
    settings: SettingsDep,
    cls: Annotated[str, Form(alias="class")] = "",
) -> Response:
    """The prune advice's button: queue a prune experiment for the class with default params."""
    job = job_service.enqueue(
        session, "prune", {"class": cls}, dataset_id=ds.id, user=user, max_attempts=settings.job_max_attempts
    )
    return created_at(request, f"/jobs/{job.id}")


@router.post("/datasets/{dataset_id}/health/seeds")
def start_seeds(request: Request, user: EngineerUser, ds: DatasetDep, session: SessionDep, settings: SettingsDep) -> Response:
    """The validation health section's button: queue a seeds job of the default recipe."""
    job = job_service.enqueue(session, "seeds", {}, dataset_id=ds.id, user=user, max_attempts=settings.job_max_attempts)
    return created_at(request, f"/jobs/{job.id}")
