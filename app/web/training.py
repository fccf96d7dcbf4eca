"""The training form, the job page and a dataset's jobs.

The form is built from the Recipe model (app.training.recipe): a select for every
Literal or enum field, a number input for numbers, a checkbox for booleans and a text
input for lists, so a knob added to the recipe appears here with its default. A posted
form is validated by the same resolve_recipe the train job runs, and queued through the
same app.jobs.service.enqueue as POST /api/v1/datasets/{id}/jobs.
"""

from __future__ import annotations

import enum
import math
import types
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import RedirectResponse, Response
from pydantic.fields import FieldInfo
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.deps import CurrentUser, EngineerUser
from app.datasets import service as dataset_service
from app.db import SessionDep
from app.deps import DatasetDep, JobDep, SettingsDep
from app.evaluation.metrics import summary
from app.ids import PathId
from app.jobs import service as job_service
from app.models import FINAL_JOB_STATUSES, Dataset, Job, JobStatus, Role, Run, User
from app.training.recipe import ARCHS, TASK_DEFAULTS, TASK_FIELDS, TASK_ONLY_FIELDS, Recipe, RecipeError, resolve_recipe
from app.web.deps import created_at, is_htmx
from app.web.templating import render

router = APIRouter(include_in_schema=False)

TRAIN_KIND = "train"
LOG_TAIL = 25
# Fields shown up front; every other recipe field (and any added later) goes under "More options".
MAIN_FIELDS = ("arch", "epochs", "batch_size", "lr", "scoring", "folds", "oof_repeats")
# "More options" in groups, in this order; a field in none of them goes to the last, "Other".
GROUPS = (
    ("Class imbalance", ("sampling", "loss", "label_smoothing", "focal_gamma", "focal_alpha")),
    ("Optimiser and schedule", ("optimizer", "eps", "weight_decay", "schedule", "cycle_len", "lr_rule", "accumulate", "precision",
                                "torch_compile")),
    ("Stopping and best weights", ("early_stopping", "monitor", "keep_best", "retrain_best_epochs")),
    ("Ensembles", ("ensemble", "snapshot_ensemble")),
    ("Parallel training", ("devices", "fold_parallelism")),
)
# History keys that are not per-epoch metrics.
HISTORY_META = ("model", "fold", "epoch", "frozen", "seconds")

HELP = {
    "arch": "The network. The options are the architectures for {task} datasets.",
    "epochs": "Passes over the training data, for every model (each fold and the final model).",
    "lr": "Peak learning rate. Leave empty to choose one with fastai's learning-rate finder.",
    "batch_size": "Samples per training step, or auto (from the gradient noise scale). Smaller needs less memory; "
                  "larger is faster on a GPU.",
    "seed": "Seeds the fold split and the weights: the same seed and labels repeat a run.",
    "scoring": "Out of fold scores each training sample with a model that never saw it, so memorised "
    "wrong labels still look suspicious. In sample trains one model: faster, but blind to them.",
    "folds": "Models trained for out-of-fold scoring, each on all but one fold; then a final model on all of it.",
    "oof_repeats": "How many times out-of-fold scoring runs, each time splitting the train samples into folds its own "
    "way; a sample's scores average its predictions from the models that never saw it. More passes find label errors a "
    "little better and train that many times the fold models.",
    "loss": "Cross-entropy; weighted cross-entropy (class weight sqrt(rarest count / class count)); focal "
    "(down-weights easy samples); or label smoothing (softer targets, more tolerant of wrong labels). "
    "Default: focal or label smoothing when their settings are filled in, else cross-entropy.",
    "label_smoothing": "The share of each target spread over the other classes (label smoothing loss only).",
    "focal_gamma": "How strongly the focal loss down-weights samples the model already gets right (2 by default).",
    "focal_alpha": "Focal loss class weights: 'balanced' (as weighted cross-entropy) or one number per class, "
    "in the dataset's class order. Empty: none.",
    "sampling": "How batches draw the classes: as they come; oversample (repeat the rarer classes' samples until "
    "every class is as large as the largest); or weighted (draw each sample with weight 1 / its class count).",
    "optimizer": "AdamW (fastai's Adam, decoupled weight decay); Adam with L2 weight decay; RAdam; Ranger "
    "(RAdam with Lookahead, good with flat + cosine); SGD with Nesterov momentum 0.9.",
    "eps": "The optimizer's epsilon (stabilises its division). Empty: the optimizer's default.",
    "weight_decay": "Weight decay (not on batchnorm and bias weights). Empty: the optimizer's default "
    "(0.01 for the Adam family and Ranger, 0 for RAdam and SGD).",
    "schedule": "The learning-rate schedule: one-cycle warms up, then anneals; flat + cosine holds the rate, then "
    "anneals the last quarter; SGDR restarts a cosine every cycle.",
    "cycle_len": "Epochs per SGDR cycle (1 by default: a restart every epoch).",
    "lr_rule": "Which learning-rate finder suggestion to use: valley (the default), steepest descent, or a tenth "
    "of the rate at the lowest loss. Only when the learning rate is empty.",
    "precision": "Auto trains in mixed precision on a GPU (bf16 where supported) and fp32 on a CPU.",
    "accumulate": "Accumulate gradients to step the optimizer every this many samples (an effective batch size "
    "larger than the batch size). Empty: every batch.",
    "early_stopping": "Stop a model after this many epochs without a better monitored value. Empty: never.",
    "monitor": "The validation value that early stopping, keep best and retraining watch: loss, accuracy or macro F1.",
    "keep_best": "At the end of training, go back to the weights of the epoch with the best monitored value.",
    "retrain_best_epochs": "Train the final model for the fold models' median best epoch count (out-of-fold scoring).",
    "ensemble": "Predict valid, test and unlabelled samples with the average of the fold models, "
    "instead of the final model alone (out-of-fold scoring).",
    "snapshot_ensemble": "Average the predictions of the weights after each of the last this many epochs "
    "(with SGDR, the end of each cycle). Empty: off.",
    "image_size": "Images are resized to this many pixels square.",
    "augment": "Small random rotations, zooms and lighting changes while training.",
    "pretrained": "Start from pretrained weights when they can be loaded; else train from scratch.",
    "seq_len": "Tokens the model reads at a time.",
    "layers": "Sizes of the hidden layers, comma-separated, e.g. 200, 100.",
    "freeze_epochs": "Pretrained models: epochs that train only the new head, before the whole model trains (1 by default).",
    "lr_mult": "Pretrained models: after the head-only epochs the whole model trains at half the learning rate, "
    "its first layers this many times slower than the head (lr / 2 / this value, up to lr / 2 for the head). "
    "100 by default.",
    "tta": "Test-time augmentation: predict valid, test and unlabelled images as the average over augmented copies.",
    "devices": "Processes that train each model together (one per GPU; on a CPU, gloo processes), or all of the "
               "claiming worker's. Only a worker that offers this many takes the job. The batch size stays the batch of "
               "one step over all of them.",
    "torch_compile": "Compile the model with torch.compile: tens of seconds up front, then faster steps on a GPU for "
                     "large models and long runs; on a CPU or for small models it usually costs more than it saves.",
    "fold_parallelism": "With several devices: 'folds' trains the out-of-fold models one per device at once (each "
                        "exactly the one-device model), 'data' each on every device in turn, 'auto' whichever the "
                        "fold and device counts make faster.",
}
PLACEHOLDER = {
    "lr": "found with lr_find",
    "early_stopping": "off",
    "label_smoothing": "0.1 with the label smoothing loss",
    "focal_gamma": "2 with the focal loss",
    "focal_alpha": "none",
    "eps": "optimizer default",
    "weight_decay": "optimizer default",
    "cycle_len": "1 with SGDR",
    "accumulate": "off",
    "snapshot_ensemble": "off",
}
LABEL = {
    "lr": "Learning rate",
    "seq_len": "Sequence length",
    "arch": "Architecture",
    "eps": "Epsilon",
    "lr_rule": "Learning-rate rule",
    "lr_mult": "First layers' slowdown",
    "freeze_epochs": "Head-only epochs",
    "oof_repeats": "Out-of-fold passes",
    "cycle_len": "SGDR cycle length",
    "accumulate": "Effective batch size",
    "retrain_best_epochs": "Retrain for the best epochs",
    "ensemble": "Fold ensemble",
    "snapshot_ensemble": "Snapshot ensemble",
    "tta": "Test-time augmentation",
}


# --- the form, from the recipe ------------------------------------------------------------


@dataclass
class FormField:
    """One input of the training form."""

    name: str
    label: str
    kind: Literal["select", "int", "float", "bool", "list", "size", "text"]  # size: a whole number or "auto"
    help: str
    value: str = ""
    checked: bool = False
    options: list[tuple[str, str]] = field(default_factory=list)
    min: float | None = None
    max: float | None = None
    placeholder: str = ""
    main: bool = False


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type inside Optional[...], whether None is allowed)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(get_args(annotation))
        return (args[0] if len(args) == 1 else Union[tuple(args)]), nullable
    return annotation, False


def _bounds(info: FieldInfo) -> tuple[float | None, float | None]:
    low = high = None
    for m in info.metadata:
        if isinstance(m, annotated_types.Ge):
            low = m.ge
        elif isinstance(m, annotated_types.Gt):
            low = m.gt
        elif isinstance(m, annotated_types.Le):
            high = m.le
        elif isinstance(m, annotated_types.Lt):
            high = m.lt
    return low, high


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _label(name: str) -> str:
    return LABEL.get(name, name.replace("_", " ").capitalize())


def recipe_fields(task: str, values: dict[str, Any] | None = None) -> list[FormField]:
    """The form's inputs for a dataset of `task`, filled with `values` (the task's defaults
    where absent); fields that belong to other tasks are left out."""
    own = set(TASK_FIELDS.get(task, ()))
    defaults = {name: info.default for name, info in Recipe.model_fields.items()} | TASK_DEFAULTS.get(task, {})
    values = defaults | (values or {})
    out = []
    for name, info in Recipe.model_fields.items():
        if name in TASK_ONLY_FIELDS and name not in own:
            continue
        inner, nullable = _unwrap(info.annotation)
        value = values.get(name)
        help_text = HELP.get(name, info.description or "").format(task=task)
        f = FormField(name=name, label=_label(name), kind="text", help=help_text, main=name in MAIN_FIELDS or name in own)
        f.placeholder = PLACEHOLDER.get(name, "default" if nullable else "")
        if name == "arch":
            f.kind = "select"
            f.options = [(a, a) for a in ARCHS.get(task, ())]
        elif get_origin(inner) is Literal:
            f.kind = "select"
            f.options = [(str(o), str(o).replace("_", " ")) for o in get_args(inner)]
        elif isinstance(inner, type) and issubclass(inner, enum.Enum):
            f.kind = "select"
            f.options = [(str(m.value), str(m.value).replace("_", " ")) for m in inner]
        elif inner is bool:
            f.kind = "bool"
        elif inner is int:
            f.kind = "int"
        elif inner is float:
            f.kind = "float"
        elif get_origin(inner) is list:
            f.kind = "list"
        elif get_origin(inner) is Union and int in get_args(inner):
            f.kind = "size"
        if f.kind == "select" and nullable and defaults.get(name) is None:
            f.options.insert(0, ("", "default"))
        if f.kind == "bool":
            f.checked = value is True or value == "true"
        else:
            f.value = _text(value)
        if f.kind in ("int", "float"):
            f.min, f.max = _bounds(info)
        out.append(f)
    return out


def field_groups(fields: list[FormField]) -> list[tuple[str, list[FormField]]]:
    """The "More options" fields under their GROUPS headings (empty groups left out)."""
    placed = {name for _, names in GROUPS for name in names}
    groups = [(title, [f for f in fields if f.name in names]) for title, names in GROUPS]
    groups.append(("Other", [f for f in fields if f.name not in placed]))
    return [(title, fs) for title, fs in groups if fs]


def parse_form(fields: list[FormField], form: dict[str, list[str]]) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """The posted form as train params: (params, errors per field, values to show again).

    An empty input means "the default" and is left out of the params; a checkbox sends
    "false" from its hidden twin and "true" when ticked."""
    params: dict[str, Any] = {}
    errors: dict[str, str] = {}
    shown: dict[str, Any] = {}
    for f in fields:
        sent = form.get(f.name)
        if not sent:
            continue
        if f.kind == "bool":
            params[f.name] = shown[f.name] = "true" in sent
            continue
        raw = sent[-1].strip()
        shown[f.name] = raw
        if raw == "":
            continue
        try:
            if f.kind == "int":
                params[f.name] = int(raw)
            elif f.kind == "float":
                number = float(raw)
                if not math.isfinite(number):
                    raise ValueError
                params[f.name] = number
            elif f.kind == "list":
                params[f.name] = [int(p) for p in raw.replace(",", " ").split()]
            elif f.kind == "size":
                params[f.name] = "auto" if raw.lower() == "auto" else int(raw)
            else:
                params[f.name] = raw
        except ValueError:
            errors[f.name] = {
                "int": "Must be a whole number.",
                "float": "Must be a number.",
                "list": "Must be whole numbers separated by commas.",
                "size": "Must be a whole number or auto.",
            }.get(f.kind, "Invalid value.")
    return params, errors, shown


def recipe_errors(exc: RecipeError) -> dict[str, str]:
    """resolve_recipe's errors by form field. A rule across fields (no field of its own) goes to
    the field its message starts with, else to the whole form."""
    out: dict[str, str] = {}
    for e in exc.errors:
        name, message = e["field"].split(".", 1)[0], e["message"]
        if name not in Recipe.model_fields:
            first = message.split(" ", 1)[0]
            name = first if first in Recipe.model_fields else "form"
        elif message.split(" ", 1)[0] not in Recipe.model_fields:
            message = message[:1].upper() + message[1:]
        out.setdefault(name, message)
    return out


async def _form_lists(request: Request) -> dict[str, list[str]]:
    """Every posted field with all its values (a checkbox and its hidden twin share a name)."""
    form = await request.form()
    out: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            out.setdefault(key, []).append(value)
    return out


FormLists = Annotated[dict[str, list[str]], Depends(_form_lists)]


@router.get("/datasets/{dataset_id}/train")
def train_page(request: Request, user: EngineerUser, ds: DatasetDep, session: SessionDep) -> Response:
    return _train_form(request, session, ds, user, recipe_fields(ds.task))


@router.post("/datasets/{dataset_id}/train")
def start_training(
    request: Request, user: EngineerUser, ds: DatasetDep, session: SessionDep, settings: SettingsDep, form: FormLists
) -> Response:
    """Queue a train job with the form's params; 422 with the errors inline when they do not validate."""
    fields = recipe_fields(ds.task)
    params, errors, shown = parse_form(fields, form)
    if not errors:
        try:
            resolve_recipe(params, ds.task, multilabel=bool(ds.multilabel))
        except RecipeError as exc:
            errors = recipe_errors(exc)
    if errors:
        filled = recipe_fields(ds.task, shown)
        return _train_form(request, session, ds, user, filled, errors=errors, status_code=422)
    job = job_service.enqueue(
        session, TRAIN_KIND, params, dataset_id=ds.id, user=user,
        max_attempts=settings.job_max_attempts,
    )
    return created_at(request, f"/jobs/{job.id}")


def _train_form(
    request: Request,
    session: Session,
    ds: Dataset,
    user: User,
    fields: list[FormField],
    *,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    read = dataset_service.to_read(session, ds)
    active = session.scalar(
        select(Job)
        .where(Job.dataset_id == ds.id, Job.kind == TRAIN_KIND, Job.status.in_((JobStatus.queued, JobStatus.running)))
        .order_by(Job.id.desc())
        .limit(1)
    )
    context = {
        "user": user,
        "nav": "datasets",
        "dataset": read,
        "main_fields": [f for f in fields if f.main],
        "more_fields": [f for f in fields if not f.main],
        "more_groups": field_groups([f for f in fields if not f.main]),
        "errors": errors or {},
        "active_job": active,
    }
    return render(request, "train.html", context, block="train_form", status_code=status_code)


# --- jobs ----------------------------------------------------------------------------------


def progress_percent(job: Job) -> int:
    """Whole percent for the page; a succeeded job is 100 whatever its last report said."""
    if job.status == JobStatus.succeeded:
        return 100
    return max(0, min(100, int(math.floor((job.progress or 0.0) * 100))))


def epoch_table(history: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """(metric columns in first-seen order, the history rows) of a run's per-epoch history."""
    columns: list[str] = []
    for entry in history:
        for key in entry:
            if key not in HISTORY_META and key not in columns:
                columns.append(key)
    return columns, history


@router.get("/jobs/{job_id}")
def job_page(request: Request, user: CurrentUser, job: JobDep, session: SessionDep, part: str | None = None) -> Response:
    """The job page; HTMX polls its status block (and, with part=detail, the epochs and log)."""
    block = "job_detail" if part == "detail" else "job_live"
    return render(request, "job.html", _job_context(session, job, user), block=block)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(request: Request, job_id: PathId, session: SessionDep, user: EngineerUser) -> Response:
    """Cancel a queued job, or ask a running one to stop (the same service as the REST route)."""
    job = job_service.cancel_job(session, job_id, user)
    if not is_htmx(request):
        return RedirectResponse(f"/jobs/{job.id}", status_code=status.HTTP_303_SEE_OTHER)
    return render(request, "job.html", _job_context(session, job, user), block="job_live")


def _job_context(session: Session, job: Job, user: User) -> dict[str, Any]:
    ds = session.get(Dataset, job.dataset_id) if job.dataset_id is not None else None
    run = session.get(Run, job.run_id) if job.run_id is not None else None
    columns, history = epoch_table((run.history or []) if run is not None else [])
    creator = session.get(User, job.created_by) if job.created_by is not None else None
    finished = job.status in FINAL_JOB_STATUSES
    return {
        "user": user,
        "nav": "datasets",
        "job": job,
        "dataset": ds,
        "run": run,
        "run_summary": summary(run.metrics) if run is not None and run.metrics else None,
        "creator": creator.username if creator is not None else None,
        "percent": progress_percent(job),
        "finished": finished,
        "can_cancel": user.role_rank >= Role.engineer.rank and not finished and not job.cancel_requested,
        "columns": columns,
        "history": history,
        "logs": job_service.job_logs(session, job.id, LOG_TAIL),
        "chart": {"history": history},
    }


@router.get("/datasets/{dataset_id}/jobs")
def dataset_jobs(request: Request, user: CurrentUser, ds: DatasetDep, session: SessionDep) -> Response:
    """The dataset's jobs, newest first; the table refreshes itself while one is active."""
    jobs = job_service.list_jobs(session, ds.id, limit=100)
    ids = {j.created_by for j in jobs if j.created_by is not None}
    names = dict(session.execute(select(User.id, User.username).where(User.id.in_(ids))).all()) if ids else {}
    context = {
        "user": user,
        "nav": "datasets",
        "dataset": ds,
        "jobs": [{"job": j, "percent": progress_percent(j), "creator": names.get(j.created_by)} for j in jobs],
        "active": any(j.status not in FINAL_JOB_STATUSES for j in jobs),
        "can_train": user.role_rank >= Role.engineer.rank,
    }
    return render(request, "jobs.html", context, block="jobs_table")

