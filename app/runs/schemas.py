"""Response bodies of the run routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class RunSummary(BaseModel):
    """The headline numbers of a run, for lists."""

    valid_accuracy: float | None = None
    valid_macro_f1: float | None = None
    test_accuracy: float | None = None
    test_macro_f1: float | None = None


class Provenance(BaseModel):
    """Where a run's predictions came from: Curate's train job (its recipe is the run's
    `params`, resolved in full) or a model elsewhere (`external`, with the name it was given)."""

    kind: Literal["train", "external"]
    name: str | None = Field(default=None, description="an external run's model name; null for a train run")
    job_id: int | None = Field(default=None, description="the train job that made the run")
    label_version: int = Field(description="the dataset's label version the run read")
    out_of_fold: bool | None = Field(default=None, description="whether the train samples' probabilities are held out")


class RunBase(BaseModel):
    """What every view of a run shows, read from its row."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    dataset_id: int
    job_id: int | None
    status: str
    params: dict[str, Any]
    label_version: int
    created_at: datetime
    finished_at: datetime | None
    pinned: bool = Field(default=False, description="kept past the retention rule (PATCH /runs/{id})")
    reference: bool = Field(default=False, description="the dataset's pinned reference run (POST /runs/{id}/pin)")
    predictions_dropped_at: datetime | None = Field(
        default=None, description="when retention dropped its per-sample predictions; null while they are kept"
    )
    provenance: Provenance | None = Field(default=None, description="train job or external model")

    @field_validator("params", mode="before")
    @classmethod
    def _no_params(cls, v: Any) -> Any:
        return v or {}


class RunListItem(RunBase):
    summary: RunSummary = Field(default_factory=RunSummary)


class RunMetrics(BaseModel):
    valid: dict[str, Any] | None = Field(default=None, description="metrics M on the valid split (a multi-label run's "
                                         "have multilabel: true); null without samples")
    test: dict[str, Any] | None = Field(default=None, description="metrics M on the test split; null without samples")


class RunRead(RunBase):
    metrics: RunMetrics = Field(default_factory=RunMetrics)
    history: list[dict[str, Any]] = Field(description="one entry per epoch of every model (folds, final)")
    info: dict[str, Any] = Field(description="lr_find suggestion, device, timings, fold sizes, notices")
    artifact: str | None

    @field_validator("info", "metrics", mode="before")
    @classmethod
    def _empty_dict(cls, v: Any) -> Any:
        return v or {}

    @field_validator("history", mode="before")
    @classmethod
    def _empty_list(cls, v: Any) -> Any:
        return v or []


class RunUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pinned: bool = Field(description="keep this run's per-sample predictions past the retention rule")
