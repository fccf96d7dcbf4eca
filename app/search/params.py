"""Search job params and the search space, validated against the Recipe model.

Imports neither optuna nor torch: the web process validates params when a search is queued.

A space maps Recipe field names to either a range, `{"low", "high", "log"?, "step"?}` (numbers
only; integers for integer fields), or `{"choices": [...]}`. Every value must be one the
Recipe accepts for the dataset's task. `label_smoothing` is searched only in trials whose
loss is label smoothing.
"""

from __future__ import annotations

import math
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from app.errors import Invalid
from app.training.recipe import (
    LOSS_NAMES,
    ONE_PROCESS_JOBS,
    OPTIMIZER_NAMES,
    TASK_DEFAULTS,
    TASK_FIELDS,
    TASK_ONLY_FIELDS,
    Recipe,
    RecipeError,
    one_process_recipe,
    resolve_recipe,
)

KIND = "search"
METRICS: dict[str, str] = {"macro_f1": "maximize", "accuracy": "maximize", "valid_loss": "minimize"}
PRUNERS = ("median", "successive_halving", "hyperband", "none")
# Recipe fields a search never varies: the seed would only add noise, scoring and folds do not
# apply to trials (no scoring), a list cannot be an Optuna choice, and trials train in one
# process (devices).
NOT_SEARCHABLE = frozenset({"seed", "scoring", "folds", "layers", "devices", "fold_parallelism"})
MAX_CHOICES = 32


class SearchParamsError(Invalid):
    """Invalid search params (422); `errors` lists {"field", "message"} like RecipeError."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("invalid search params: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)


Number = StrictInt | StrictFloat


class RangeSpec(BaseModel):
    """A numeric range to sample from: low..high, on a log scale or in steps."""

    model_config = ConfigDict(extra="forbid")

    low: Number
    high: Number
    log: StrictBool = False
    step: Number | None = None


class ChoiceSpec(BaseModel):
    """A list of values to choose from (numbers, strings or booleans)."""

    model_config = ConfigDict(extra="forbid")

    choices: list[StrictBool | StrictInt | StrictFloat | str] = Field(min_length=1, max_length=MAX_CHOICES)


_SPECS = {"choices": TypeAdapter(ChoiceSpec), "range": TypeAdapter(RangeSpec)}


class SearchParams(BaseModel):
    """The params of a `search` job."""

    model_config = ConfigDict(extra="forbid")

    n_trials: int = Field(default=20, ge=1, le=1000, description="trials of the study, over all its workers")
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600, description="stop starting trials after this long")
    metric: Literal[tuple(METRICS)] = "macro_f1"  # type: ignore[valid-type]
    pruner: Literal[PRUNERS] = "median"  # type: ignore[valid-type]
    startup_trials: int = Field(default=5, ge=0, le=1000, description="median pruner: trials finished before it prunes")
    warmup_epochs: int = Field(default=0, ge=0, le=1000, description="median pruner: epochs of a trial before it may be pruned")
    sampler: Literal["tpe"] = "tpe"
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="seeds the sampler")
    workers: int = Field(default=1, ge=1, le=64, description="jobs taking trials of the study in parallel")
    space: dict[str, Any] | None = Field(default=None, description="Recipe params to search; null: the default space")
    base: dict[str, Any] = Field(default_factory=dict, description="Recipe params fixed for every trial")
    parent_job: int | None = Field(default=None, ge=1, description="set on the extra jobs of a search: the job that owns the study")

    @property
    def direction(self) -> str:
        return METRICS[self.metric]


def _unwrap(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def field_kind(name: str) -> str:
    """How a Recipe field is searched: "int" or "float" (range or choices), or "choice"."""
    inner = _unwrap(Recipe.model_fields[name].annotation)
    if inner is bool:
        return "choice"
    if inner is int:
        return "int"
    if inner is float:
        return "float"
    return "choice"


def searchable(task: str) -> list[str]:
    """The Recipe fields a search on a dataset of `task` may vary."""
    own = set(TASK_FIELDS.get(task, ()))
    return [
        n for n in Recipe.model_fields
        if n not in NOT_SEARCHABLE and (n not in TASK_ONLY_FIELDS or n in own)
    ]


def default_space(task: str, base: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The space searched when none is given; params fixed in `base` are left out of it."""
    base = base or {}
    epochs = int(TASK_DEFAULTS[task]["epochs"])
    space: dict[str, dict[str, Any]] = {
        "lr": {"low": 1e-4, "high": 1e-1, "log": True},
        "batch_size": {"choices": [32, 64, 128]},
        "epochs": {"low": max(1, epochs // 2), "high": epochs},
        "loss": {"choices": [n for n in ("cross_entropy", "label_smoothing") if n in LOSS_NAMES]},
        "label_smoothing": {"low": 0.05, "high": 0.2},
        "optimizer": {"choices": list(OPTIMIZER_NAMES)},
    }
    if "weight_decay" in Recipe.model_fields:
        space["weight_decay"] = {"low": 1e-5, "high": 0.1, "log": True}
    for name in list(space):
        if name in base:
            del space[name]
    # A fixed loss or smoothing decides the other; searching it would contradict the base.
    if "loss" in base or "label_smoothing" in base:
        space.pop("loss", None)
        if base.get("loss") not in (None, "label_smoothing"):
            space.pop("label_smoothing", None)
    return space


def smooths(loss: Any) -> bool:
    """Whether a trial with this loss (None: unset) takes a label_smoothing amount."""
    return loss in (None, "label_smoothing")


def _number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return not integer or float(value).is_integer()


def _recipe_error(params: dict[str, Any], task: str, name: str) -> str | None:
    """Why the Recipe refuses `params` (the message about `name` first), or None."""
    try:
        resolve_recipe(params, task)
    except RecipeError as exc:
        own = [e["message"] for e in exc.errors if e["field"] == name]
        return (own or [exc.errors[0]["message"]])[0]
    return None


def _check_value(name: str, value: Any, base: dict[str, Any], task: str) -> str | None:
    params = {**base, name: value}
    if name == "label_smoothing":
        params["loss"] = "label_smoothing"
    elif name == "loss" and not smooths(value):
        params.pop("label_smoothing", None)
    return _recipe_error(params, task, name)


def _parse_entry(loc: str, entry: Any) -> tuple[RangeSpec | ChoiceSpec | None, list[dict[str, str]]]:
    """The entry as a RangeSpec or a ChoiceSpec (by whether it has "choices"), or its errors."""
    if not isinstance(entry, dict):
        return None, [{"field": loc, "message": 'must be {"low": ..., "high": ...} or {"choices": [...]}'}]
    kind = "choices" if "choices" in entry else "range"
    try:
        return _SPECS[kind].validate_python(entry), []
    except ValidationError as exc:
        return None, [_entry_error(loc, kind, e) for e in exc.errors()]


def _entry_error(loc: str, kind: str, e: dict[str, Any]) -> dict[str, str]:
    parts = list(e["loc"])
    where = loc + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts[:2])
    messages = {
        "extra_forbidden": "choices take no other keys" if kind == "choices" else "unknown key; a range has low, high, log and step",
        "missing": "required (or give choices)",
        "too_short": "must be a non-empty list",
        "too_long": f"at most {MAX_CHOICES} choices",
        "bool_type": "must be true or false",
    }
    if e["type"] in messages:
        return {"field": where, "message": messages[e["type"]]}
    if kind == "choices" and len(parts) > 1:
        return {"field": where, "message": "must be a number, a string or a boolean"}
    if kind == "choices":
        return {"field": where, "message": "must be a non-empty list"}
    return {"field": where, "message": "must be a finite number"}


def _check_entry(name: str, entry: Any, base: dict[str, Any], task: str) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    loc = f"space.{name}"
    spec, errors = _parse_entry(loc, entry)
    if spec is None:
        return None, errors
    if isinstance(spec, ChoiceSpec):
        return _check_choices(name, loc, spec, base, task)
    if field_kind(name) == "choice":
        return None, [{"field": loc, "message": f'{name} takes {{"choices": [...]}}, not a range'}]
    return _check_range(name, loc, spec, base, task)


def _check_choices(name: str, loc: str, spec: ChoiceSpec, base: dict[str, Any], task: str):
    choices = spec.choices
    if len({repr(c) for c in choices}) != len(choices):
        return None, [{"field": f"{loc}.choices", "message": "has duplicates"}]
    errors = []
    for i, choice in enumerate(choices):
        why = _check_value(name, choice, base, task)
        if why:
            errors.append({"field": f"{loc}.choices[{i}]", "message": f"{choice!r}: {why}"})
    return ({"choices": list(choices)} if not errors else None), errors


def _check_range(name: str, loc: str, spec: RangeSpec, base: dict[str, Any], task: str):
    integer = field_kind(name) == "int"
    errors = []
    for key in ("low", "high"):
        if not _number(getattr(spec, key), integer):
            errors.append({"field": f"{loc}.{key}", "message": "must be a whole number" if integer else "must be a finite number"})
    if spec.step is not None and (not _number(spec.step, integer) or spec.step <= 0):
        errors.append({"field": f"{loc}.step", "message": "must be a positive number" + (" (whole)" if integer else "")})
    if errors:
        return None, errors
    low, high, log, step = spec.low, spec.high, spec.log, spec.step
    if low > high:
        return None, [{"field": f"{loc}.high", "message": f"must be at least low ({low})"}]
    if log and step is not None:
        return None, [{"field": f"{loc}.step", "message": "a log range takes no step"}]
    if log and low <= 0:
        return None, [{"field": f"{loc}.low", "message": "must be above 0 for a log range"}]
    for key, value in (("low", low), ("high", high)):
        why = _check_value(name, value, base, task)
        if why:
            errors.append({"field": f"{loc}.{key}", "message": f"{value!r}: {why}"})
    if errors:
        return None, errors
    cast = int if integer else float
    out: dict[str, Any] = {"low": cast(low), "high": cast(high), "log": log}
    if step is not None:
        out["step"] = cast(step)
    return out, []


def resolve_space(space: dict[str, Any] | None, base: dict[str, Any], task: str) -> dict[str, dict[str, Any]]:
    """The space to search (the default one when None), checked against the Recipe and the base;
    raises SearchParamsError naming the field (`space.lr.low`, `space.foo`, ...)."""
    if space is None:
        space = default_space(task, base)
        if not space:
            raise SearchParamsError([{"field": "space", "message": "the base fixes every param of the default space; give a space"}])
    elif not isinstance(space, dict) or not space:
        raise SearchParamsError([{"field": "space", "message": "name at least one param to search"}])
    allowed = searchable(task)
    errors: list[dict[str, str]] = []
    out: dict[str, dict[str, Any]] = {}
    for name, entry in space.items():
        loc = f"space.{name}"
        if name not in Recipe.model_fields:
            errors.append({"field": loc, "message": f"unknown parameter; searchable: {', '.join(allowed)}"})
        elif name in TASK_ONLY_FIELDS and name not in TASK_FIELDS.get(task, ()):
            errors.append({"field": loc, "message": f"does not apply to {task} datasets"})
        elif name == "devices":
            errors.append({"field": loc, "message": f"not searchable: {ONE_PROCESS_JOBS[KIND]}; data-parallel training is "
                           "for train jobs"})
        elif name in NOT_SEARCHABLE:
            errors.append({"field": loc, "message": f"not searchable; searchable: {', '.join(allowed)}"})
        elif name in base:
            errors.append({"field": loc, "message": "also fixed in base; search it or fix it, not both"})
        else:
            checked, errs = _check_entry(name, entry, base, task)
            errors += errs
            if checked is not None:
                out[name] = checked
    if "label_smoothing" in out:
        loss_choices = out.get("loss", {}).get("choices")
        fixed_loss = base.get("loss")
        if loss_choices is None and not smooths(fixed_loss):
            errors.append({"field": "space.label_smoothing", "message": f"needs loss 'label_smoothing', and base fixes loss {fixed_loss!r}"})
        elif loss_choices is not None and "label_smoothing" not in loss_choices:
            errors.append({"field": "space.label_smoothing",
                           "message": "searched only when loss is label_smoothing, which space.loss.choices leaves out"})
    if errors:
        raise SearchParamsError(errors)
    # label_smoothing after loss: whether a trial samples it depends on the loss drawn.
    return dict(sorted(out.items(), key=lambda kv: kv[0] == "label_smoothing"))


def _pydantic_errors(exc: ValidationError) -> list[dict[str, str]]:
    out = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "params"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown parameter; known: {', '.join(SearchParams.model_fields)}"
        out.append({"field": loc, "message": msg})
    return out


def multilabel_space(space: dict[str, Any] | None, task: str, base: dict[str, Any]) -> dict[str, Any] | None:
    """A multi-label dataset's space: the default one without label smoothing (a softmax loss),
    searching plain against positive-weighted BCE instead; a given space must not search label
    smoothing (SearchParamsError naming the field)."""
    if space is None:
        space = {k: v for k, v in default_space(task, base).items() if k not in ("loss", "label_smoothing")}
        if "loss" not in base and "label_smoothing" not in base:
            space["loss"] = {"choices": ["cross_entropy", "weighted_cross_entropy"]}
        return space
    errors = []
    if isinstance(space, dict) and "label_smoothing" in space:
        errors.append({"field": "space.label_smoothing", "message": "does not apply to multi-label datasets"})
    choices = space.get("loss", {}).get("choices") if isinstance(space, dict) and isinstance(space.get("loss"), dict) else None
    if isinstance(choices, list) and "label_smoothing" in choices:
        errors.append({"field": "space.loss", "message": "label_smoothing does not apply to multi-label datasets"})
    if errors:
        raise SearchParamsError(errors)
    return space


def validate_search(params: dict[str, Any] | None, task: str,
                    multilabel: bool = False) -> tuple[SearchParams, dict[str, dict[str, Any]]]:
    """(the params, the resolved space) for a dataset of `task`; raises SearchParamsError."""
    try:
        p = SearchParams.model_validate(dict(params or {}))
    except ValidationError as exc:
        raise SearchParamsError(_pydantic_errors(exc)) from None
    base, why = one_process_recipe(p.base, KIND)
    errors = [{"field": "base.devices", "message": why}] if why else []
    try:
        resolve_recipe(base, task, multilabel=multilabel)
    except RecipeError as exc:
        errors += [{"field": f"base.{e['field']}", "message": e["message"]} for e in exc.errors]
    if errors:
        raise SearchParamsError(errors)
    space = multilabel_space(p.space, task, p.base) if multilabel else p.space
    return p, resolve_space(space, p.base, task)


class SearchJobParams(BaseModel):
    """A search job's params as the job registry validates them: the params and the space to
    search, resolved for the "task" of the validation context. When the job is queued (a
    "session" and the "dataset" in the context) they are also checked against the database,
    so a search that cannot run is refused then, not failed in the worker."""

    params: SearchParams
    space: dict[str, dict[str, Any]]

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any, info: ValidationInfo) -> dict[str, Any]:
        context = info.context or {}
        if "task" not in context:
            raise ValueError("search params are validated for a dataset's task")
        multilabel = context.get("multilabel", getattr(context.get("dataset"), "multilabel", False))
        p, space = validate_search(data, context["task"], bool(multilabel))
        if context.get("session") is not None:
            _check_queued(context["session"], p, context["dataset"])
        return {"params": p, "space": space}


def _check_queued(session, p: SearchParams, dataset) -> None:
    """A parent_job that is a first search job of the same dataset, and valid samples to measure on."""
    from app.datasets.service import split_counts
    from app.models import Job

    if p.parent_job is not None:
        parent = session.get(Job, p.parent_job)
        if parent is None or parent.kind != KIND or parent.dataset_id != dataset.id or (parent.params or {}).get("parent_job"):
            raise SearchParamsError([{"field": "parent_job", "message": "not a search job of this dataset"}])
    if split_counts(session, [dataset.id])[dataset.id].valid == 0:
        raise Invalid(
            "a search measures every trial on the valid split, and this dataset has no valid samples",
            errors=[{"field": "dataset_id", "message": "has no valid samples"}],
        )
