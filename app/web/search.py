"""HTML pages of a search (engineers): the form that starts one on a dataset, and the study's
page, whose trials table refreshes itself (HTMX) while the search runs.

The form fills the default space (app.search.params.default_space) with the bounds it asks
for; the posted params go through the same validation and enqueue as the REST API.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.deps import EngineerUser
from app.datasets import service as dataset_service
from app.db import SessionDep
from app.deps import DatasetDep, SettingsDep
from app.formatting import fmt
from app.ids import PathId
from app.jobs import service as job_service
from app.models import Dataset, Job, JobStatus, User
from app.search import service
from app.search.params import (
    KIND,
    METRICS,
    PRUNERS,
    SearchParamsError,
    default_space,
    validate_search,
)
from app.web.deps import created_at
from app.web.templating import render

router = APIRouter(include_in_schema=False)

# (form field, label, help); the bounds fields write into the space.
FIELDS = [
    ("n_trials", "Trials", "Models trained in all, each with its own draw of the settings below."),
    ("workers", "Workers", "Jobs that take trials of this search at the same time; each needs a free worker."),
    ("metric", "Optimise", "The valid-split measure each trial is judged by: macro F1 and accuracy higher, loss lower."),
    ("pruner", "Pruner", "Stops a trial early when its epochs fall behind the others' (none: every trial runs to the end)."),
    ("timeout_s", "Time limit (seconds)", "No trial starts after this long; empty: no limit."),
    ("lr_low", "Learning rate from", "Lowest peak learning rate tried; drawn on a log scale."),
    ("lr_high", "Learning rate to", "Highest peak learning rate tried."),
    ("epochs_low", "Epochs from", "Fewest epochs a trial trains."),
    ("epochs_high", "Epochs to", "Most epochs a trial trains; also the most a pruner lets run."),
    ("batch_sizes", "Batch sizes", "The batch sizes to try, comma-separated."),
    ("ls_low", "Label smoothing from", "Smallest smoothing tried, in trials that draw the label smoothing loss."),
    ("ls_high", "Label smoothing to", "Largest smoothing tried."),
]
LABELS = {name: label for name, label, _ in FIELDS}
# Where a validation error of the params shows on the form.
ERROR_FIELDS = {
    "space.lr.low": "lr_low", "space.lr.high": "lr_high",
    "space.epochs.low": "epochs_low", "space.epochs.high": "epochs_high",
    "space.batch_size": "batch_sizes",
    "space.label_smoothing.low": "ls_low", "space.label_smoothing.high": "ls_high",
}


def _form_values(task: str, sent: dict[str, str] | None = None) -> dict[str, str]:
    space = default_space(task)
    values = {
        "n_trials": "20", "workers": "1", "metric": "macro_f1", "pruner": "median", "timeout_s": "",
        "lr_low": repr(space["lr"]["low"]), "lr_high": repr(space["lr"]["high"]),
        "epochs_low": str(space["epochs"]["low"]), "epochs_high": str(space["epochs"]["high"]),
        "batch_sizes": ", ".join(str(b) for b in space["batch_size"]["choices"]),
        "ls_low": repr(space["label_smoothing"]["low"]), "ls_high": repr(space["label_smoothing"]["high"]),
    }
    return values | {k: v.strip() for k, v in (sent or {}).items() if k in values}


def _parse(task: str, values: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The form as search params, and errors by form field."""
    errors: dict[str, str] = {}

    def number(name: str, integer: bool, optional: bool = False):
        raw = values.get(name, "")
        if raw == "" and optional:
            return None
        try:
            v = int(raw) if integer else float(raw)
        except ValueError:
            errors[name] = "Must be a whole number." if integer else "Must be a number."
            return None
        if not math.isfinite(v):
            errors[name] = "Must be a finite number."
            return None
        return v

    params: dict[str, Any] = {
        "n_trials": number("n_trials", True),
        "workers": number("workers", True),
        "metric": values["metric"],
        "pruner": values["pruner"],
    }
    timeout = number("timeout_s", False, optional=True)
    if timeout is not None:
        params["timeout_s"] = timeout
    space = default_space(task)
    space["lr"] = {"low": number("lr_low", False), "high": number("lr_high", False), "log": True}
    space["epochs"] = {"low": number("epochs_low", True), "high": number("epochs_high", True)}
    space["label_smoothing"] = {"low": number("ls_low", False), "high": number("ls_high", False)}
    try:
        sizes = [int(p) for p in values["batch_sizes"].replace(",", " ").split()]
        if not sizes:
            raise ValueError
        space["batch_size"] = {"choices": sizes}
    except ValueError:
        errors["batch_sizes"] = "Must be whole numbers separated by commas."
    params["space"] = space
    return params, errors


def _errors_by_field(exc: SearchParamsError) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in exc.errors:
        loc, message = e["field"], e["message"]
        name = next((f for prefix, f in ERROR_FIELDS.items() if loc.startswith(prefix)), None)
        if name is None:
            top = loc.split(".", 1)[0]
            name = top if top in LABELS else "form"
            message = message if name != "form" else f"{loc}: {message}"
        out.setdefault(name, message[:1].upper() + message[1:])
    return out


def _searches(session: Session, dataset_id: int) -> list[dict[str, Any]]:
    jobs = session.scalars(
        select(Job).where(Job.dataset_id == dataset_id, Job.kind == KIND).order_by(Job.id.desc()).limit(200)
    ).all()
    out = []
    for j in jobs:
        if (j.params or {}).get("parent_job"):
            continue
        best = (j.result or {}).get("best") if j.result else None
        out.append({"job": j, "metric": (j.params or {}).get("metric", "macro_f1"), "best": best,
                    "percent": int(math.floor((j.progress or 0) * 100)) if j.status != JobStatus.succeeded else 100})
    return out[:50]


def _form_page(request: Request, session: Session, ds: Dataset, user: User, values: dict[str, str],
               errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    context = {
        "user": user,
        "nav": "datasets",
        "dataset": dataset_service.to_read(session, ds),
        "fields": FIELDS,
        "values": values,
        "errors": errors or {},
        "metrics": list(METRICS),
        "pruners": list(PRUNERS),
        "searches": _searches(session, ds.id),
    }
    return render(request, "search_new.html", context, block="search_form", status_code=status_code)


class SearchForm(BaseModel):
    """The search form's fields, as typed (checked by _parse, which names each wrong one)."""

    n_trials: str = ""
    workers: str = ""
    metric: str = ""
    pruner: str = ""
    timeout_s: str = ""
    lr_low: str = ""
    lr_high: str = ""
    epochs_low: str = ""
    epochs_high: str = ""
    batch_sizes: str = ""
    ls_low: str = ""
    ls_high: str = ""


@router.get("/datasets/{dataset_id}/search")
def search_form(request: Request, user: EngineerUser, ds: DatasetDep, session: SessionDep) -> Response:
    """The form that starts a search, and the dataset's searches."""
    return _form_page(request, session, ds, user, _form_values(ds.task))


@router.post("/datasets/{dataset_id}/search")
def start_search(
    request: Request,
    user: EngineerUser,
    ds: DatasetDep,
    session: SessionDep,
    settings: SettingsDep,
    form: Annotated[SearchForm, Form()],
) -> Response:
    """Queue a search with the form's settings; 422 with the errors inline when they do not validate."""
    values = _form_values(ds.task, form.model_dump())
    params, errors = _parse(ds.task, values)
    if not errors:
        try:
            validate_search(params, ds.task, bool(ds.multilabel))
        except SearchParamsError as exc:
            errors = _errors_by_field(exc)
    if not errors and dataset_service.split_counts(session, [ds.id])[ds.id].valid == 0:
        errors = {"form": "This dataset has no valid samples: a search measures every trial on them."}
    if errors:
        return _form_page(request, session, ds, user, values, errors, status_code=422)
    job = job_service.enqueue(session, KIND, params, dataset_id=ds.id, user=user,
                              max_attempts=settings.job_max_attempts)
    return created_at(request, f"/jobs/{job.id}/search")



@router.get("/jobs/{job_id}/search")
def search_page(
    request: Request, job_id: PathId, session: SessionDep, user: EngineerUser, settings: SettingsDep
) -> Response:
    """A search's trials and best trial; HTMX polls its live block while the search runs."""
    search = service.read_search(session, settings, job_id)
    ds = session.get(Dataset, search["dataset_id"]) if search["dataset_id"] is not None else None
    names = sorted({k for t in search["trials"] for k in t["params"]})
    best = search["best"]["number"] if search["best"] else None
    context = {
        "user": user,
        "nav": "datasets",
        "dataset": ds,
        "search": search,
        "param_names": names,
        "best_number": best,
        "fmt": lambda v: fmt(v, ".4g"),
        "percent": 100 if search["status"] == JobStatus.succeeded else int(math.floor(search["progress"] * 100)),
    }
    return render(request, "search.html", context, block="search_live")


@router.post("/jobs/{job_id}/search/train-best")
def train_best(
    request: Request, job_id: PathId, session: SessionDep, user: EngineerUser, settings: SettingsDep
) -> Response:
    """Queue a train job with the best trial's params and go to its page."""
    job = service.train_best(session, settings, job_id, user, max_attempts=settings.job_max_attempts)
    return created_at(request, f"/jobs/{job.id}")
