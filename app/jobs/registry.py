"""Job kinds and their handlers, as import paths so the web process never imports torch."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

HANDLERS: dict[str, str] = {
    "train": "app.training.jobs:run_train_job",
    "search": "app.search.job:run_search_job",
    "seeds": "app.health.seeds:run_seeds_job",
    "prune": "app.advisor.prune_job:run_prune_job",
}


def handler_for(kind: str) -> Callable:
    """The handler function of a job kind (CURATE_EXTRA_JOB_HANDLERS adds kind=module:func pairs)."""
    extra = dict(
        item.split("=", 1) for item in os.environ.get("CURATE_EXTRA_JOB_HANDLERS", "").split(",") if "=" in item
    )
    path = {**HANDLERS, **extra}.get(kind)
    if path is None:
        raise KeyError(f"unknown job kind {kind!r}; known: {', '.join(sorted(HANDLERS))}")
    module, _, func = path.partition(":")
    return getattr(importlib.import_module(module), func)


def known_kinds() -> list[str]:
    return sorted(HANDLERS)
