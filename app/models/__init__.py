"""ORM tables. The schema itself is created and changed only by Alembic migrations."""

from app.models.base import Base, utcnow
from app.models.tables import (
    ApiToken,
    Dataset,
    Job,
    JobLog,
    LabelEvent,
    LoginFailure,
    Prediction,
    Role,
    Run,
    Sample,
    Snapshot,
    SnapshotItem,
    Split,
    User,
    UserSession,
)

__all__ = [
    "ApiToken",
    "Base",
    "Dataset",
    "Job",
    "JobLog",
    "LabelEvent",
    "LoginFailure",
    "Prediction",
    "Role",
    "Run",
    "Sample",
    "Snapshot",
    "SnapshotItem",
    "Split",
    "User",
    "UserSession",
    "utcnow",
]
