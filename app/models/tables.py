"""Every table of Curate."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    cast,
    false,
    literal_column,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, JSONType, UTCDateTime, utcnow


class Role(enum.StrEnum):
    annotator = "annotator"
    engineer = "engineer"
    admin = "admin"

    @property
    def rank(self) -> int:
        return {"annotator": 1, "engineer": 2, "admin": 3}[self.value]


class Split(enum.StrEnum):
    train = "train"
    valid = "valid"
    test = "test"
    unlabelled = "unlabelled"
    # Removed from training and evaluation (an outlier, a leaked or repeated copy), label
    # kept: the train job neither learns from nor scores its metrics on it. A split move like
    # any other, so it is audited and reverted from the history.
    excluded = "excluded"


class Task(enum.StrEnum):
    image = "image"
    text = "text"
    tabular = "tabular"


class LabelSource(enum.StrEnum):
    """Who wrote a label event."""

    annotator = "annotator"  # a person in the browser
    api = "api"  # a REST client
    import_ = "import"  # an import (the first labels, or a re-import)
    model = "model"  # a job acting on a model's predictions (e.g. pruning)
    consensus = "consensus"  # the consensus of several annotators (docs/annotations.md)


class JobStatus(enum.StrEnum):
    """A job's life: queued -> running -> one of the final states (running -> queued on a retry)."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_JOB_STATUSES


FINAL_JOB_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class RunStatus(enum.StrEnum):
    """A training run's life: running -> succeeded, failed or cancelled (its job's outcome)."""

    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


def state(enum_type: type[enum.StrEnum]) -> Enum:
    """A column holding one of a StrEnum's values: VARCHAR(20) in the database (no native enum
    type, no CHECK: adding a state is a code change, not a migration), the member in Python;
    a string that is not one of the values is refused before it reaches the database."""
    return Enum(
        enum_type,
        native_enum=False,
        create_constraint=False,
        length=20,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(state(Role))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def role_rank(self) -> int:
        return Role(self.role).rank


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    # sha256 of the token: a token is long and random, so a fast hash is enough to store it.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()


class UserSession(Base):
    """A browser sign-in. The signed cookie carries a random id that is stored here only as
    its sha256, so a session ends at once when its row is revoked (logout, a password change,
    deactivation, an admin's "sign out everywhere"), whatever copies of the cookie exist."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What the owner sees to tell their sessions apart; never used to authenticate.
    user_agent: Mapped[str | None] = mapped_column(String(300))
    ip: Mapped[str | None] = mapped_column(String(64))


class LoginFailure(Base):
    """One failed password check, counted against a key ("account:<sha256 of the username>",
    "password:<user id>" or "address:<client address>") for as long as the throttle's window.

    Kept in the database so that every server process counts the same failures."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_created", "key", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    task: Mapped[Task] = mapped_column(state(Task))
    classes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    label_version: Mapped[int] = mapped_column(Integer, default=0)
    # Dataset options, e.g. {"unlabelled_joins_train": true}.
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # The run an engineer pinned as the reference (POST /runs/{id}/pin): pages, scores, the
    # queue's order and exports follow it instead of the newest run while it has succeeded
    # (app.runs.service.current_run). No foreign key: a run that is gone is simply not used.
    reference_run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Samples carry a set of classes, stored as one canonical string (app.datasets.tagsets).
    multilabel: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Sample(Base):
    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("dataset_id", "external_id", name="uq_samples_dataset_external"),
        Index("ix_samples_dataset_split_label", "dataset_id", "split", "label"),
        # The listings in id order, the default, read a dataset's samples along it.
        Index("ix_samples_dataset_id", "dataset_id", "id"),
        # Exact duplicates: the samples of a dataset that share a content key (app.datasets.content).
        Index("ix_samples_dataset_content", "dataset_id", "content_hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    external_id: Mapped[str | None] = mapped_column(String(255))
    split: Mapped[Split] = mapped_column(state(Split))
    text: Mapped[str | None] = mapped_column(Text)
    features: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    image_blob: Mapped[str | None] = mapped_column(String(64))
    image_path: Mapped[str | None] = mapped_column(String(1000))
    # A hash of the content the model sees (app.datasets.content): equal keys, exact duplicates.
    content_hash: Mapped[str | None] = mapped_column(String(64))
    label: Mapped[str | None] = mapped_column(String(200))
    # The label as first imported; label_source in exports compares against it.
    original_label: Mapped[str | None] = mapped_column(String(200))
    reviewed: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def shuffle_key(sample_id):
    """The listings' random order: a fixed shuffle of the sample ids, (id * 2654435761) mod
    4294967311 (a prime). Its constants are written into the SQL, not sent as parameters, so
    that both databases match the expression to the index below."""
    return (cast(sample_id, BigInteger) * literal_column("2654435761")) % literal_column("4294967311")


# The random order, walked along this index rather than sorting every sample (docs/queries.md).
Index("ix_samples_dataset_shuffle", Sample.dataset_id, shuffle_key(Sample.id), Sample.id)


class LabelEvent(Base):
    __tablename__ = "label_events"
    __table_args__ = (
        Index("ix_label_events_sample", "sample_id", "id"),
        Index("ix_label_events_dataset", "dataset_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"))
    old_label: Mapped[str | None] = mapped_column(String(200))
    new_label: Mapped[str | None] = mapped_column(String(200))
    old_split: Mapped[Split | None] = mapped_column(state(Split))
    new_split: Mapped[Split | None] = mapped_column(state(Split))
    # import | annotator | api | model
    source: Mapped[LabelSource] = mapped_column(state(LabelSource))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(Text)
    label_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Snapshot(Base):
    __tablename__ = "snapshots"

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    label_version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str | None] = mapped_column(String(200))
    sample_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class SnapshotItem(Base):
    """The split and label of one sample as they were when the snapshot was taken."""

    __tablename__ = "snapshot_items"

    snapshot_id: Mapped[int] = mapped_column(
        ForeignKey("snapshots.id", ondelete="CASCADE"), primary_key=True
    )
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), primary_key=True)
    split: Mapped[Split] = mapped_column(state(Split))
    label: Mapped[str | None] = mapped_column(String(200))


class Claim(Base):
    """A review-queue sample handed out to one annotator until `expires_at` (docs/queries.md,
    Claims). Other annotators' queues skip it while it lasts; it ends when its holder submits
    the sample, moves on, releases it, or lets it expire. A row whose time has passed is
    dead: anyone's next hand-out may take it over."""

    __tablename__ = "claims"
    __table_args__ = (Index("ix_claims_user_dataset", "user_id", "dataset_id"),)

    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Annotation(Base):
    """One annotator's answer for one sample, kept apart from the sample's label: with one
    annotation per sample it is the label; with more, the consensus decides
    (docs/annotations.md). A second answer by the same annotator replaces the first."""

    __tablename__ = "annotations"
    __table_args__ = (
        UniqueConstraint("sample_id", "user_id"),
        Index("ix_annotations_dataset_user", "dataset_id", "user_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(200))
    seconds: Mapped[float | None] = mapped_column(Float)  # time spent on the sample, when known
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConsensusState(enum.StrEnum):
    pending = "pending"  # some answers are in, fewer than asked for: its queue finishes it first
    decided = "decided"  # the rule decided; the label was applied
    tie = "tie"  # too close to call: waits for a reviewer (the disagreement queue)
    resolved = "resolved"  # a reviewer chose the label


class SampleConsensus(Base):
    """How a sample with several annotations got its label (docs/annotations.md)."""

    __tablename__ = "consensus"
    __table_args__ = (Index("ix_consensus_dataset_state", "dataset_id", "state", "quality"),)

    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    state: Mapped[ConsensusState] = mapped_column(state(ConsensusState))
    label: Mapped[str | None] = mapped_column(String(200))  # the rule's choice (a tie: its top class; pending: none)
    rule: Mapped[str] = mapped_column(String(40))  # "annotation", "crowdlab" or "reviewer"
    quality: Mapped[float] = mapped_column(Float)  # the posterior probability of `label`
    agreement: Mapped[float] = mapped_column(Float)  # share of the annotations that give `label`
    annotations: Mapped[int] = mapped_column(Integer)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Assignment(Base):
    """A queue (filters and an overlap) an engineer gives to chosen annotators."""

    __tablename__ = "assignments"
    __table_args__ = (Index("ix_assignments_dataset", "dataset_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    filters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # split, label, predicted, flagged, order
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AssignmentUser(Base):
    __tablename__ = "assignment_users"

    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[JobStatus] = mapped_column(state(JobStatus), default=JobStatus.queued)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL", use_alter=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Devices the job trains on (a train job's `devices`; "all" needs 1): only a worker that
    # advertises at least this many claims it (app.jobs.queue.claim).
    devices: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JobLog(Base):
    __tablename__ = "job_logs"
    __table_args__ = (Index("ix_job_logs_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    level: Mapped[str] = mapped_column(String(10), default="info")
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_dataset_id", "dataset_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    status: Mapped[RunStatus] = mapped_column(state(RunStatus), default=RunStatus.running)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    label_version: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # Anything else worth keeping: lr_find suggestion, fold sizes, device, timings.
    info: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    artifact: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Retention (app.runs.retention): a pinned run keeps its predictions; a run whose
    # predictions were dropped keeps everything else and says when.
    pinned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    predictions_dropped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# The scores a listing orders by, each with two indexes on predictions (docs/queries.md).
SCORE_COLUMNS = ("loss", "self_confidence", "normalized_margin", "confusion_margin", "entropy", "aum", "combined",
                 "priority", "outlier")


def _score_indexes() -> list[Index]:
    """Per score, the listings' two indexes. Each starts with the run and the filters whose
    matches gather at one end of a score order (reviewed: the top of a queue is reviewed
    first; flagged, and the given and predicted class: a confusion cell sits at the
    suspicious end), so that a listing reads one range per combination of their values and
    merges them; the score and the sample id (the tie-break) give the order; the split, last,
    is checked on the index entry."""
    indexes = []
    for name in SCORE_COLUMNS:
        indexes.append(Index(f"ix_predictions_{name}", "run_id", "sample_reviewed", "flagged", name, "sample_id",
                             "sample_split"))
        indexes.append(Index(f"ix_predictions_cell_{name}", "run_id", "sample_label", "label", "sample_reviewed",
                             "flagged", name, "sample_id", "sample_split"))
    return indexes


class Prediction(Base):
    """The scores of one sample under one run (docs/scores.md).

    `sample_label`, `sample_reviewed` and `sample_split` mirror the sample's current values
    (database triggers keep them, migration 0008), so that the listings' indexes can hold the
    filters with the score (docs/queries.md). Each index ends in the sample id, the listings'
    tie-break, so that a walk along it gives ties, and the samples without the score (NULL),
    in the listing's order."""

    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint("run_id", "sample_id", name="uq_predictions_run_sample"),
        *_score_indexes(),
        Index("ix_predictions_run_flagged", "run_id", "flagged"),
        Index("ix_predictions_sample", "sample_id"),
        Index("ix_predictions_run_group", "run_id", "duplicate_group", "sample_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"))
    # The label the sample had when it was scored (scores are relative to it).
    given_label: Mapped[str | None] = mapped_column(String(200))
    label: Mapped[str] = mapped_column(String(200))
    probs: Mapped[dict[str, float]] = mapped_column(JSONType)
    loss: Mapped[float | None] = mapped_column(Float)
    self_confidence: Mapped[float | None] = mapped_column(Float)
    normalized_margin: Mapped[float | None] = mapped_column(Float)
    confusion_margin: Mapped[float] = mapped_column(Float)
    confusion_a: Mapped[str] = mapped_column(String(200))
    confusion_b: Mapped[str] = mapped_column(String(200))
    entropy: Mapped[float] = mapped_column(Float)
    aum: Mapped[float | None] = mapped_column(Float)
    out_of_fold: Mapped[bool] = mapped_column(Boolean, default=False)
    fold: Mapped[int | None] = mapped_column(Integer)
    # Confident learning's flagged set (app.scoring.flagged) and the class it suggests instead.
    flagged: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    suggested_label: Mapped[str | None] = mapped_column(String(200))
    # app.scoring.combined: the out-of-fold probability rank and the AUM's rank, averaged; low is suspicious.
    combined: Mapped[float | None] = mapped_column(Float)
    # The position in the review order (flagged first); low is reviewed first: app.scoring.review_gain's
    # gain order for the train split of a run with embeddings, else app.scoring.priority's.
    priority: Mapped[float | None] = mapped_column(Float)
    # app.scoring.review_gain: the expected gain of reviewing a train sample (high first; null without embeddings).
    review_gain: Mapped[float | None] = mapped_column(Float)
    # app.scoring.neighbours, for a run with embeddings: the mean distance to the nearest
    # neighbours over the train samples' median (high is unusual), and the duplicate group
    # (its lowest sample id; null outside any group, exact duplicates included).
    outlier: Mapped[float | None] = mapped_column(Float)
    duplicate_group: Mapped[int | None] = mapped_column(Integer)
    # The sample's current label, reviewed flag and split, kept by triggers (see above); an
    # insert that leaves sample_split out has all three filled from the sample.
    sample_label: Mapped[str | None] = mapped_column(String(200))
    sample_reviewed: Mapped[bool | None] = mapped_column(Boolean)
    sample_split: Mapped[str | None] = mapped_column(String(20))
