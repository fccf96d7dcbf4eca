"""What a job handler gets: its parameters, and ways to report progress, log and notice cancel.

A handler is a function `handler(ctx: JobContext, ...) -> dict` registered in
app.jobs.registry, which says what it takes after ctx (its validated params, the dataset);
the dict it returns becomes the job's `result`. It opens its own sessions on `ctx.engine`
and keeps slow work (training, scoring) outside transactions.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Engine

from app.config import Settings


class JobCancelled(Exception):
    """Raised inside a handler when its job has been cancelled."""

    def __init__(self, message: str = "the job was cancelled") -> None:
        super().__init__(message)


class JobContext(Protocol):
    job_id: int
    dataset_id: int | None
    params: dict[str, Any]  # as queued; the handler gets them validated too
    settings: Settings
    engine: Engine

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress in [0, 1] and an optional one-line status message."""

    def log(self, message: str, level: str = "info") -> None:
        """Append a line to the job's log, visible through the API while it runs."""

    def is_cancelled(self) -> bool:
        """True once cancel was requested; cheap enough to call every batch."""

    def check_cancelled(self) -> None:
        """Raise JobCancelled if cancel was requested."""

    def set_run(self, run_id: int) -> None:
        """Tie the run this job created to the job (shown as the job's run_id)."""


@dataclass
class LocalJobContext:
    """A JobContext without a queue: for scripts, benchmarks and unit tests."""

    engine: Engine
    settings: Settings
    params: dict[str, Any] = field(default_factory=dict)
    dataset_id: int | None = None
    job_id: int = 0
    run_id: int | None = None
    fractions: list[float] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    logs: list[tuple[str, str]] = field(default_factory=list)
    cancel_event: threading.Event = field(default_factory=threading.Event)

    def progress(self, fraction: float, message: str | None = None) -> None:
        self.fractions.append(fraction)
        if message:
            self.messages.append(message)

    def log(self, message: str, level: str = "info") -> None:
        self.logs.append((level, message))

    def is_cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise JobCancelled()

    def set_run(self, run_id: int) -> None:
        self.run_id = run_id
