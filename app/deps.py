"""Resource dependencies: load the object a path names, or answer 404, in one place.

A route that works on a dataset, sample, job or run declares `DatasetDep`, `SampleDep`,
`JobDep` or `RunDep` and receives the loaded row; the getters below raise `NotFound`, which
the error handlers turn into the documented body (API) or the error page (browser).
Each loader depends on the request being authenticated first, so a caller without
credentials learns nothing from a 404; roles are checked by the role dependencies
(`app.auth.deps`): declare a route's role dependency before its resource, as FastAPI
resolves them in order, so that a role too low is a 403 whether or not the object exists.
Every object a request names beyond the path's own is checked against it
by the service that uses it (a sample of another dataset is a 404 too). `SettingsDep` is the one Settings object the app was built with.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.auth.deps import get_current_user
from app.config import Settings
from app.db import SessionDep
from app.errors import NotFound
from app.ids import PathId
from app.models import Dataset, Job, Run, Sample, User

T = TypeVar("T")


def get_row(session: Session, model: type[T], row_id: int, name: str) -> T:
    """The row of `model` with this id, or NotFound naming it (e.g. "dataset 7 not found")."""
    row = session.get(model, row_id)
    if row is None:
        raise NotFound(f"{name} {row_id} not found")
    return row


def get_dataset(session: Session, dataset_id: int) -> Dataset:
    return get_row(session, Dataset, dataset_id, "dataset")


def get_sample(session: Session, sample_id: int) -> Sample:
    return get_row(session, Sample, sample_id, "sample")


def get_job(session: Session, job_id: int) -> Job:
    return get_row(session, Job, job_id, "job")


def get_run(session: Session, run_id: int) -> Run:
    return get_row(session, Run, run_id, "run")


Authenticated = Annotated[User, Depends(get_current_user)]


def _dataset(dataset_id: PathId, session: SessionDep, _: Authenticated) -> Dataset:
    return get_dataset(session, dataset_id)


def _sample(sample_id: PathId, session: SessionDep, _: Authenticated) -> Sample:
    return get_sample(session, sample_id)


def _job(job_id: PathId, session: SessionDep, _: Authenticated) -> Job:
    return get_job(session, job_id)


def _run(run_id: PathId, session: SessionDep, _: Authenticated) -> Run:
    return get_run(session, run_id)


def _settings(request: Request) -> Settings:
    return request.app.state.settings


DatasetDep = Annotated[Dataset, Depends(_dataset)]
SampleDep = Annotated[Sample, Depends(_sample)]
JobDep = Annotated[Job, Depends(_job)]
RunDep = Annotated[Run, Depends(_run)]
SettingsDep = Annotated[Settings, Depends(_settings)]
