"""Job kinds: each kind's params model, its handler and what it needs before it starts.

Models and handlers are import paths, so the web process, which validates params when a job
is queued, imports neither the handlers' modules nor torch. A handler is called as
`handler(ctx)`, then its validated params when its kind has a params model, then the
dataset's TrainingData when its kind needs the dataset; the worker does that shared setup
(`JobKind.arguments`), the handler does not repeat it.

The params models are validated with a context: "task", "classes" and "dataset_id" of the
job's dataset, and, when a job is queued, "session" and "dataset" (the Dataset row) for
checks against the database.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from app.config import Settings, get_settings
from app.errors import Invalid


def _load(path: str) -> Any:
    """The object at "module:name"."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class JobKind:
    """One kind of job: its name, where its params model and handler live, what it needs."""

    name: str
    handler: str  # "module:function"
    params: str | None = None  # "module:Model"; None: the handler reads ctx.params as sent
    needs_dataset: bool = False  # the worker loads the dataset's TrainingData for the handler
    torch_threads: bool = False  # the worker sets torch's CPU threads (Settings.torch_threads)

    def handler_function(self) -> Callable[..., dict | None]:
        return _load(self.handler)

    def params_model(self) -> type[BaseModel] | None:
        return None if self.params is None else _load(self.params)

    def validate(self, params: dict[str, Any] | None, **context: Any) -> Any:
        """The params validated into the kind's model (as sent when it has none); Invalid names each bad field."""
        model = self.params_model()
        if model is None:
            return dict(params or {})
        try:
            return model.model_validate(dict(params or {}), context=context)
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]) or "params", "message": e["msg"].removeprefix("Value error, ")}
                for e in exc.errors()
            ]
            detail = f"invalid {self.name} params: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            raise Invalid(detail, errors=errors) from None

    def arguments(self, ctx) -> tuple:
        """What the handler takes after ctx: the dataset loaded, the params validated against it,
        torch's threads set first for a kind that trains."""
        data = None
        context: dict[str, Any] = {}
        if self.needs_dataset:
            from app.training.data import load_training_data

            if ctx.dataset_id is None:
                raise ValueError(f"a {self.name} job needs a dataset")
            data = load_training_data(ctx.engine, ctx.dataset_id, ctx.settings)
            context = {"task": data.task, "classes": list(data.classes), "dataset_id": data.dataset_id,
                       "multilabel": data.multilabel}
        args: list[Any] = []
        if self.params is not None:
            args.append(self.validate(ctx.params, **context))
        if self.torch_threads:
            from app.training.environment import configure_threads

            configure_threads(ctx.settings.torch_threads)
        if self.needs_dataset:
            args.append(data)
        return tuple(args)


def _trains(name: str, handler: str, params: str) -> JobKind:
    return JobKind(name, handler, params, needs_dataset=True, torch_threads=True)


KINDS: dict[str, JobKind] = {
    kind.name: kind
    for kind in (
        _trains("train", "app.training.jobs:run_train_job", "app.training.recipe:Recipe"),
        _trains("search", "app.search.job:run_search_job", "app.search.params:SearchJobParams"),
        _trains("seeds", "app.health.seeds:run_seeds_job", "app.health.seeds:SeedsParams"),
        _trains("prune", "app.advisor.prune_job:run_prune_job", "app.advisor.prune_job:PruneParams"),
    )
}


def all_kinds(settings: Settings | None = None) -> dict[str, JobKind]:
    """The built-in kinds and those of Settings.extra_job_handlers (an extra kind replaces a built-in of its name)."""
    extra = (settings or get_settings()).extra_job_handlers
    return {**KINDS, **{name: JobKind(name, path) for name, path in extra.items()}}


def job_kind(name: str, settings: Settings | None = None) -> JobKind:
    """The kind called `name`; KeyError naming the known ones otherwise."""
    kinds = all_kinds(settings)
    if name not in kinds:
        raise KeyError(f"unknown job kind {name!r}; known: {', '.join(sorted(kinds))}")
    return kinds[name]


def known_kinds(settings: Settings | None = None) -> list[str]:
    """Every job kind a worker can run, sorted."""
    return sorted(all_kinds(settings))


def run_job(ctx, kind: str) -> dict | None:
    """Run a job of `kind` in this process as a worker does (for scripts, benchmarks, tests)."""
    entry = job_kind(kind, ctx.settings)
    return entry.handler_function()(ctx, *entry.arguments(ctx))
