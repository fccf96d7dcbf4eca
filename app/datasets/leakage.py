"""Train/test leakage: valid and test samples whose exact content is also in train, and what
they do to the metrics.

A model scores well on a sample it trained on, so a copy of a train sample in valid or test
inflates those metrics. The report takes the dataset's run (its reference run, else the
newest succeeded one: app.runs.service.latest_run_id) and recomputes each evaluated split's
metrics twice from the run's predictions and the samples' current labels: over every
labelled sample of the split, and without the leaked ones. The difference is the estimated
effect of the leak. Leaked samples are found by content key (app.datasets.content), the same
groups as GET /duplicates?scope=leak, and, when the run has embeddings, by its near-duplicate
groups (GET /duplicates?kind=near&scope=leak): a valid or test sample in a group with a train
sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.evaluation.metrics import classification_metrics
from app.models import Dataset, Prediction, Sample, Split
from app.runs.retention import check_kept
from app.runs.service import latest_run

EVALUATED = (Split.valid, Split.test)
MAX_LISTED = 1000


class SplitLeak(BaseModel):
    leaked: int = Field(description="labelled samples of the split whose content, or a near copy of it, is in train")
    leaked_exact: int = Field(default=0, description="of those, the samples whose exact content is in train")
    leaked_near: int = Field(default=0, description="of those, the samples in a near-duplicate group (under the "
                                                    "run) with a train sample")
    labelled: int = Field(description="labelled samples of the split the run scored")
    metrics_all: dict[str, Any] | None = Field(description="metrics M over every labelled sample of the split")
    metrics_clean: dict[str, Any] | None = Field(description="metrics M without the leaked samples")
    sample_ids: list[int] = Field(description=f"the leaked samples (the first {MAX_LISTED})")


class LeakageRead(BaseModel):
    run_id: int | None = Field(description="the run whose predictions the metrics come from; null before any")
    splits: dict[str, SplitLeak]


def _leaked_ids(session: Session, ds: Dataset) -> dict[str, set[int]]:
    train_keys = (select(Sample.content_hash)
                  .where(Sample.dataset_id == ds.id, Sample.split == Split.train, Sample.content_hash.is_not(None)))
    rows = session.execute(
        select(Sample.id, Sample.split)
        .where(Sample.dataset_id == ds.id, Sample.split.in_(EVALUATED), Sample.label.is_not(None),
               Sample.content_hash.in_(train_keys))
    ).all()
    out: dict[str, set[int]] = {s.value: set() for s in EVALUATED}
    for sid, split in rows:
        out[split.value if isinstance(split, Split) else str(split)].add(sid)
    return out


def _near_leaked_ids(session: Session, run_id: int) -> dict[str, set[int]]:
    """Valid and test samples in a near-duplicate group of the run that has a train member."""
    train_groups = (select(Prediction.duplicate_group)
                    .where(Prediction.run_id == run_id, Prediction.duplicate_group.is_not(None),
                           Prediction.sample_split == Split.train.value))
    rows = session.execute(
        select(Prediction.sample_id, Prediction.sample_split)
        .where(Prediction.run_id == run_id, Prediction.duplicate_group.in_(train_groups),
               Prediction.sample_split.in_([s.value for s in EVALUATED]), Prediction.sample_label.is_not(None))
    ).all()
    out: dict[str, set[int]] = {s.value: set() for s in EVALUATED}
    for sid, split in rows:
        out[str(split)].add(sid)
    return out


def leakage_report(session: Session, ds: Dataset) -> LeakageRead:
    exact = _leaked_ids(session, ds)
    run = latest_run(session, ds.id)
    if run is not None:
        check_kept(run)
    near = _near_leaked_ids(session, run.id) if run is not None else {s.value: set() for s in EVALUATED}
    leaked = {name: exact[name] | near[name] for name in exact}
    index = {c: i for i, c in enumerate(ds.classes or [])}
    splits = {}
    for split in EVALUATED:
        name = split.value
        ids = leaked[name]
        metrics_all = metrics_clean = None
        labelled = 0
        if run is not None:
            rows = session.execute(
                select(Prediction.sample_id, Prediction.label, Sample.label)
                .join(Sample, Sample.id == Prediction.sample_id)
                .where(Prediction.run_id == run.id, Sample.dataset_id == ds.id, Sample.split == split,
                       Sample.label.is_not(None))
                .order_by(Prediction.sample_id)
            ).all()
            rows = [r for r in rows if r[1] in index and r[2] in index]
            labelled = len(rows)
            y_true = np.array([index[r[2]] for r in rows], dtype=np.int64)
            y_pred = np.array([index[r[1]] for r in rows], dtype=np.int64)
            keep = np.array([r[0] not in ids for r in rows], dtype=bool)
            metrics_all = classification_metrics(y_true, y_pred, ds.classes)
            metrics_clean = classification_metrics(y_true[keep], y_pred[keep], ds.classes)
        splits[name] = SplitLeak(leaked=len(ids), leaked_exact=len(exact[name]), leaked_near=len(near[name]),
                                 labelled=labelled, metrics_all=metrics_all,
                                 metrics_clean=metrics_clean, sample_ids=sorted(ids)[:MAX_LISTED])
    return LeakageRead(run_id=run.id if run is not None else None, splits=splits)
