"""Request and response bodies of the sample routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

from app.models.tables import Split
from app.errors import ErrorBody
from app.ids import MAX_ID


class PredictionRead(BaseModel):
    """A run's prediction for a sample, read from its Prediction row."""

    model_config = ConfigDict(from_attributes=True)

    run_id: int
    label: str
    probs: dict[str, float] = Field(description="top 5 classes and their probabilities")
    loss: float | None
    self_confidence: float | None
    normalized_margin: float | None
    confusion_margin: float
    confusion_pair: list[str]
    entropy: float
    aum: float | None = Field(description="area under the margin while the final model trained (train samples only)")
    combined: float | None = Field(
        default=None, description="mean of the probability rank (self-confidence and normalized margin) and the AUM rank, within the split; low is suspicious"
    )
    priority: float | None = Field(
        default=None,
        description="position in the review order, scaled to (0, 1): the flagged set first (by review_gain, highest "
        "first, for the train samples of a run with embeddings; else lowest self-confidence first), then the rest by "
        "the combined score; low is reviewed first",
    )
    review_gain: float | None = Field(
        default=None,
        description="expected gain of reviewing this train sample: (1 - self-confidence) x what relabelling it to the "
        "suggested class adds to its KNN-Shapley value among its neighbours in the run's embedding space; high is "
        "reviewed first within the flagged set (null for a run without embeddings, an older run, or outside train)",
    )
    flagged: bool = Field(default=False, description="in the run's flagged set of likely label errors")
    suggested_label: str | None = Field(default=None, description="the class the flagged set suggests instead")
    outlier: float | None = Field(
        default=None,
        description="mean distance to the nearest neighbours in the run's embedding space over the train samples' "
        "median: 1 is typical, high is unusual (null for a run without embeddings)",
    )
    duplicate_group: int | None = Field(
        default=None,
        description="the near or exact duplicate group the sample is in under this run (the group's lowest sample "
        "id; null outside any group)",
    )
    out_of_fold: bool

    @computed_field(description="why the sample sits where it does in the review order (order=priority): the signal "
                    "behind its position")
    @property
    def queue_reason(self) -> str | None:
        return queue_reason(self.flagged, self.review_gain, self.self_confidence, self.combined, self.priority)

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, data: Any) -> Any:
        # A Prediction row stores the pair as two columns.
        if hasattr(data, "confusion_a"):
            return {**{f: getattr(data, f) for f in cls.model_fields if f != "confusion_pair"},
                    "confusion_pair": [data.confusion_a, data.confusion_b]}
        return data

    @field_validator("probs")
    @classmethod
    def _most_probable_first(cls, probs: dict[str, float]) -> dict[str, float]:
        # JSONB does not keep key order.
        return dict(sorted(probs.items(), key=lambda kv: -kv[1]))


def queue_reason(flagged: bool, gain: float | None, self_confidence: float | None, combined: float | None,
                 priority: float | None) -> str | None:
    """The signal behind a sample's place in the review order (app.scoring.review_gain, app.scoring.priority)."""
    if priority is None:
        return None
    if flagged and gain is not None:
        return f"flagged as a likely label error; expected gain of a review {gain:.3g} (fixing it helps its neighbours)"
    if flagged:
        sc = "" if self_confidence is None else f" {self_confidence:.3g}"
        return f"flagged as a likely label error; self-confidence{sc} (least likely given label first)"
    score = "" if combined is None else f" {combined:.3g}"
    return f"not flagged; combined score{score} (most suspicious first, after the flagged set)"


class LabelEventRead(BaseModel):
    """One label change; `user` is the username of whoever made it (none for imports and jobs)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    old_label: str | None
    new_label: str | None
    old_split: str | None
    new_split: str | None
    source: str
    user: str | None = None
    reason: str | None
    label_version: int
    created_at: datetime


class SampleRead(BaseModel):
    """A sample; built from its row, with `prediction` and `history` when the route reads them."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    dataset_id: int
    external_id: str | None
    split: Split
    label: str | None = Field(description="the class; in a multi-label dataset, the tag set's canonical text: its "
                                          "classes in class order joined by \"|\" (\"\" for none of them)")
    labels: list[str] | None = Field(default=None, description="a multi-label dataset's tag set as a list ([] for none "
                                                               "of the classes); null when unlabelled, and in a "
                                                               "single-label dataset")
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


class QueueHandOut(BaseModel):
    items: list[SampleRead] = Field(description="unreviewed samples claimed for the caller, in queue order")
    claimed_until: datetime = Field(description="when the claims end unless renewed (by fetching the queue again)")
    run_id: int | None = Field(description="the run whose scores order and annotate the items")
    needed: int = Field(default=1, description="answers per sample this queue asks for: 1, PATCH the items; more, "
                                               "POST /samples/{id}/annotations (docs/annotations.md)")


class SampleUpdate(BaseModel):
    label: str | None = Field(default=None, description="a class of the dataset; in a multi-label dataset, the whole "
                                                        "tag set as classes joined by \"|\"")
    labels: list[Annotated[str, Field(max_length=200)]] | None = Field(
        default=None, max_length=1000,
        description="a multi-label dataset only: the whole tag set, replacing the sample's ([] for none of the classes)")
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


# Most samples one bulk request may change: one grid page is 48, the REST list pages 500 at most.
MAX_BULK_ITEMS = 500


class BulkItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=1, le=MAX_ID, description="a sample of this dataset")
    version: int = Field(ge=1, le=MAX_ID, description="the sample version the client saw (what If-Match carries for PATCH)")


class BulkRelabel(BaseModel):
    """Set one class, or each sample's predicted class, on many samples at once."""

    model_config = ConfigDict(extra="forbid")

    items: list[BulkItem] = Field(min_length=1, max_length=MAX_BULK_ITEMS)
    label: str | None = Field(default=None, description="the class to set on every item")
    accept_predicted: bool = Field(default=False, description="set each item's predicted class instead of `label`")
    run: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="with accept_predicted: the run whose predictions to take (default: the latest)"
    )

    @field_validator("items")
    @classmethod
    def _unique_ids(cls, items: list[BulkItem]) -> list[BulkItem]:
        seen: set[int] = set()
        for item in items:
            if item.id in seen:
                raise ValueError(f"sample {item.id} appears more than once")
            seen.add(item.id)
        return items

    @model_validator(mode="after")
    def _one_target(self) -> BulkRelabel:
        if self.accept_predicted == (self.label is not None):
            raise ValueError("give exactly one of label and accept_predicted=true")
        if self.run is not None and not self.accept_predicted:
            raise ValueError("run only applies with accept_predicted=true")
        return self


class SampleConflict(ErrorBody):
    """409 of a change to a sample that moved on: the sample as it is now, with its history."""

    current: SampleRead


class BulkItemResult(BaseModel):
    id: int
    status: Literal["changed", "kept", "conflict", "skipped"] = Field(
        description="changed: relabelled, one label event written; kept: it already had that label (now reviewed); "
        "conflict: its version moved on, nothing written; skipped: not in this dataset or no prediction"
    )
    event_id: int | None = Field(default=None, description="the label event written (changed only)")
    sample: SampleRead | None = Field(default=None, description="the sample after the change (changed, kept)")
    detail: str | None = Field(default=None, description="why nothing was written (conflict, skipped)")
    current: SampleRead | None = Field(
        default=None, description="conflict only: the sample as it is now, with its history, as PATCH's 409 gives it"
    )


class BulkCounts(BaseModel):
    changed: int
    kept: int
    conflict: int
    skipped: int


class BulkRelabelResult(BaseModel):
    label_version: int = Field(description="the dataset's label version after this request")
    counts: BulkCounts
    items: list[BulkItemResult] = Field(description="one result per requested item, in request order")


class AnnotationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=200, description="a class of the dataset")
    seconds: float | None = Field(default=None, ge=0, le=86400, description="time spent on the sample")
    assignment: int | None = Field(default=None, ge=1, le=2**31 - 1,
                                   description="the assignment whose queue handed the sample out (its overlap applies)")


class AnswerRead(BaseModel):
    username: str
    label: str
    seconds: float | None


class ConsensusRead(BaseModel):
    """How a sample with several answers got its label (docs/annotations.md)."""

    model_config = ConfigDict(from_attributes=True)

    state: str = Field(description="decided, tie (waiting for a reviewer) or resolved (a reviewer chose)")
    rule: str = Field(description="crowdlab (answers weighted by estimated quality, with the model) or reviewer")
    label: str | None
    quality: float = Field(description="the consensus posterior of `label`")
    agreement: float = Field(description="share of the answers that give `label`")
    annotations: int


class AnsweredRead(BaseModel):
    sample_id: int
    answers: int = Field(description="answers the sample has now")
    needed: int = Field(description="answers the queue asks for (its overlap)")
    consensus: ConsensusRead | None = Field(description="set once the answers are complete")


class DisagreementRead(BaseModel):
    sample: SampleRead
    consensus: ConsensusRead
    answers: list[AnswerRead]


class DisagreementPage(BaseModel):
    items: list[DisagreementRead]
    next_offset: int | None


class ResolutionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=200)
