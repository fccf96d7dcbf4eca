"""Request and response bodies of the dataset routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.datasets.tagsets import class_name_problems
from app.models.tables import Task


class DatasetSettings(BaseModel):
    """A dataset's options. Only these keys are stored: anything else is refused (422)."""

    model_config = ConfigDict(extra="forbid")

    unlabelled_joins_train: bool = Field(
        default=True, description="unlabelled samples get a label when an annotator gives one, and join train"
    )
    description: str | None = Field(default=None, max_length=2000, description="what the data is, for people")
    features: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=10_000,
        description="tabular datasets: the feature columns in order (default: as the first import has them)",
    )
    overlap: int = Field(
        default=1, ge=1, le=10,
        description="independent answers per sample the review queue gathers; above 1 a consensus decides the label "
                    "(docs/annotations.md)",
    )

    @field_validator("features")
    @classmethod
    def _unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("feature names must be unique")
        return v


class StoredDatasetSettings(DatasetSettings):
    """Settings as read back: a key stored before the schema existed is not shown, not an error."""

    model_config = ConfigDict(extra="ignore")


class DatasetUpdate(BaseModel):
    """The settings an engineer may change after creation; others stay as they are."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, max_length=2000)
    unlabelled_joins_train: bool | None = None
    overlap: int | None = Field(default=None, ge=1, le=10)

    @model_validator(mode="before")
    @classmethod
    def _fixed_at_creation(cls, data):
        if isinstance(data, dict) and "multilabel" in data:
            raise ValueError("multilabel is chosen when a dataset is created and cannot change; "
                             "create a new dataset and import the samples into it")
        return data


class DatasetCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    task: Task
    classes: list[str] | None = Field(default=None, description="ordered class names; default: taken from the first import")
    settings: DatasetSettings | None = None
    multilabel: bool = Field(default=False, description="each sample carries a set of classes (docs/rest.md, "
                                                        "Multi-label datasets); fixed at creation")

    @model_validator(mode="after")
    def _features_for_tabular(self) -> DatasetCreate:
        if self.settings is not None and self.settings.features is not None and self.task != Task.tabular:
            raise ValueError(f"settings.features is for tabular datasets, not {self.task.value} ones")
        return self

    @model_validator(mode="after")
    def _multilabel_one_answer(self) -> DatasetCreate:
        if self.multilabel and self.settings is not None and self.settings.overlap > 1:
            raise ValueError("settings.overlap: a multi-label dataset takes one answer per sample; answers under "
                             "an overlap and their consensus take one class (docs/annotations.md)")
        return self

    @model_validator(mode="after")
    def _multilabel_class_names(self) -> DatasetCreate:
        problems = class_name_problems(self.classes or []) if self.multilabel else []
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("name")
    @classmethod
    def _strip(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("name must not be blank")
        return v

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        v = [c.strip() for c in v]
        if any(not c for c in v):
            raise ValueError("class names must not be blank")
        if len(set(v)) != len(v):
            raise ValueError("class names must be unique")
        if len(v) < 2:
            raise ValueError("a classifier needs at least two classes")
        return v


class SplitCounts(BaseModel):
    train: int = 0
    valid: int = 0
    test: int = 0
    unlabelled: int = 0
    excluded: int = Field(default=0, description="removed from training and evaluation, label kept")


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    task: Task
    classes: list[str]
    counts: SplitCounts
    label_version: int
    settings: StoredDatasetSettings
    reference_run_id: int | None = Field(default=None, description="the run pinned as the reference (POST /runs/{id}/pin)")
    multilabel: bool = Field(default=False, description="each sample carries a set of classes (fixed at creation)")
    created_at: datetime


class SnapshotCreate(BaseModel):
    name: str | None = Field(default=None, max_length=200)


class SnapshotRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    dataset_id: int
    name: str | None
    label_version: int
    sample_count: int
    created_at: datetime
