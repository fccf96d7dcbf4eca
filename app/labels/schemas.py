"""Request and response bodies of the sample routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.models.tables import Split


class PredictionRead(BaseModel):
    run_id: int
    label: str
    probs: dict[str, float] = Field(description="top 5 classes and their probabilities")
    loss: float | None
    self_confidence: float | None
    normalized_margin: float | None
    confusion_margin: float
    confusion_pair: list[str]
    entropy: float
    aum: float | None
    out_of_fold: bool


class LabelEventRead(BaseModel):
    id: int
    old_label: str | None
    new_label: str | None
    old_split: str | None
    new_split: str | None
    source: str
    user: str | None
    reason: str | None
    label_version: int
    created_at: datetime


class SampleRead(BaseModel):
    id: int
    dataset_id: int
    external_id: str | None
    split: Split
    label: str | None
    original_label: str | None
    reviewed: bool
    version: int
    text: str | None = None
    features: dict[str, Any] | None = None
    image_url: str | None = None
    prediction: PredictionRead | None = None
    history: list[LabelEventRead] | None = None


class SamplePage(BaseModel):
    items: list[SampleRead]
    next_cursor: str | None
    run_id: int | None = Field(description="the run whose scores order and annotate the items")


class SampleUpdate(BaseModel):
    label: str | None = Field(default=None, description="a class of the dataset")
    split: Split | None = None
    reviewed: bool | None = Field(default=None, description="mark the sample reviewed (kept as it is)")
    reason: str | None = Field(default=None, max_length=2000)


class DatasetEventRead(LabelEventRead):
    sample_id: int
    external_id: str | None
    sample_version: int = Field(description="the sample's current version (send it as If-Match to revert)")
    latest: bool = Field(description="true when no later event exists for the sample, so a revert needs no force")


class LabelEventPage(BaseModel):
    items: list[DatasetEventRead]
    next_before: int | None = Field(description="pass as `before` for the next (older) page")


class RevertRequest(BaseModel):
    force: bool = Field(default=False, description="revert even when later events exist for the sample")
    reason: str | None = Field(default=None, max_length=2000)


class ReviewProgress(BaseModel):
    reviewed: int
    total: int
