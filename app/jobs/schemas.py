"""Request and response bodies of the job routes."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.models import JobStatus


def _finite(value: Any, path: str) -> None:
    """Refuse NaN and infinities: Postgres JSONB cannot store them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path} is {value}; parameters must be finite numbers")
    if isinstance(value, dict):
        for k, v in value.items():
            _finite(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite(v, f"{path}[{i}]")


class JobCreate(BaseModel):
    kind: str = Field(min_length=1, max_length=20, description="train, search, seeds or prune")
    params: dict[str, Any] = Field(default_factory=dict, description="the kind's parameters (docs/rest.md)")

    @field_validator("params")
    @classmethod
    def _params_finite(cls, v: dict[str, Any]) -> dict[str, Any]:
        _finite(v, "params")
        return v


class JobLogRead(BaseModel):
    at: datetime
    level: str
    message: str


class JobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    status: JobStatus
    progress: float
    message: str | None
    result: dict[str, Any] | None
    error: str | None
    run_id: int | None
    attempts: int
    max_attempts: int
    cancel_requested: bool
    worker_id: str | None
    dataset_id: int | None
    params: dict[str, Any]
    devices: int = Field(default=1, description="devices a worker must advertise to claim the job (a train job's `devices`)")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobDetail(JobRead):
    logs: list[JobLogRead] = Field(default_factory=list, description="the last lines of the job's log, oldest first")
