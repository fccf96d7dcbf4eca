"""Builders for test data: users with tokens, datasets, samples."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.auth.service import create_token, create_user
from app.models import Dataset, Sample, User

_n = itertools.count(1)


@dataclass
class Account:
    user: User
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_user(session: Session, role: str = "engineer", username: str | None = None) -> Account:
    """A committed user of the given role, with a password and an API token."""
    user, password = create_user(session, username or f"{role}{next(_n)}", role, "password-123")
    _, token = create_token(session, user, "test")
    session.commit()
    return Account(user, password, token)


def make_dataset(
    session: Session,
    task: str = "tabular",
    classes: list[str] | None = None,
    name: str | None = None,
    settings: dict | None = None,
) -> Dataset:
    ds = Dataset(
        name=name or f"ds{next(_n)}",
        task=task,
        classes=classes if classes is not None else ["a", "b", "c"],
        settings=settings if settings is not None else {"unlabelled_joins_train": True},
        label_version=0,
    )
    session.add(ds)
    session.commit()
    return ds


def add_samples(session: Session, ds: Dataset, rows: list[dict]) -> list[Sample]:
    """Insert samples given as dicts of Sample fields; label defaults to original_label."""
    samples = []
    for i, row in enumerate(rows):
        row = dict(row)
        row.setdefault("external_id", f"s{i}")
        row.setdefault("split", "train" if row.get("label") is not None else "unlabelled")
        row.setdefault("original_label", row.get("label"))
        if ds.task == "tabular":
            row.setdefault("features", {"x": float(i)})
        elif ds.task == "text":
            row.setdefault("text", f"sample {i}")
        samples.append(Sample(dataset_id=ds.id, **row))
    session.add_all(samples)
    session.commit()
    return samples
