"""A multi-label dataset with a finished run, written straight into the test database, for
the review pages: each sample's given tag set, the model's probability per tag, and the
set the flagged set suggests."""

from __future__ import annotations

import math

from sqlalchemy.orm import Session

from app.models import Dataset, Prediction, Run, Sample, utcnow
from tests.builders import add_samples, make_dataset

TAGS = ["cat", "dog", "bird", "fish"]


def multilabel_dataset(db: Session, rows: list[dict], classes: list[str] | None = None, task: str = "text") -> tuple[Dataset, list[Sample]]:
    """A multi-label dataset of rows (Sample fields; label a canonical tag set)."""
    ds = make_dataset(db, task=task, classes=classes or TAGS)
    ds.multilabel = True
    db.commit()
    return ds, add_samples(db, ds, rows)


def make_multilabel_run(db: Session, ds: Dataset, plan: dict[int, tuple[dict[str, float], str | None]],
                        threshold: float = 0.5) -> Run:
    """A succeeded run: per sample (its probabilities per tag, the suggested set or None when
    not flagged); the predicted set is the tags at or above the threshold."""
    run = Run(dataset_id=ds.id, status="succeeded", label_version=ds.label_version, params={"epochs": 1},
              finished_at=utcnow(), info={"thresholds": {c: threshold for c in ds.classes}})
    db.add(run)
    db.flush()
    for sample_id, (probs, suggested) in plan.items():
        s = db.get(Sample, sample_id)
        given = set((s.label or "").split("|")) - {""}
        predicted = "|".join(c for c in ds.classes if probs.get(c, 0.0) >= threshold)
        conf = [probs.get(c, 0.0) if c in given else 1 - probs.get(c, 0.0) for c in ds.classes]
        near = sorted(ds.classes, key=lambda c: abs(probs.get(c, 0.0) - threshold))
        db.add(Prediction(
            run_id=run.id, sample_id=sample_id, given_label=s.label, label=predicted,
            probs=dict(sorted(probs.items(), key=lambda kv: -kv[1])[:5]),
            loss=-sum(math.log(max(c, 1e-12)) for c in conf), self_confidence=min(conf),
            normalized_margin=min(conf) - threshold, confusion_margin=abs(probs.get(near[0], 0.0) - threshold),
            confusion_a=near[0], confusion_b=near[1], entropy=1.0, out_of_fold=True,
            flagged=suggested is not None, suggested_label=suggested,
        ))
    db.commit()
    return run
