"""ORM tables. The schema itself is created and changed only by Alembic migrations."""

from app.models.base import Base, utcnow
from app.models.tables import (
    ApiToken,
    Dataset,
    Job,
    JobLog,
    LabelEvent,
    Prediction,
    Role,
    Run,
    Sample,
    Snapshot,
    SnapshotItem,
    Split,
    User,
)

__all__ = [
    "ApiToken",
    "Base",
    "Dataset",
    "Job",
    "JobLog",
    "LabelEvent",
    "Prediction",
    "Role",
    "Run",
    "Sample",
    "Snapshot",
    "SnapshotItem",
    "Split",
    "User",
    "utcnow",
]
