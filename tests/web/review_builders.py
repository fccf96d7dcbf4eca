"""Finished runs with predictions, written straight into the test database, for the review pages."""

from __future__ import annotations

import math

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Dataset, LabelEvent, Prediction, Run, Sample, utcnow


def make_run(db: Session, ds: Dataset, probs_by_sample: dict[int, dict[str, float]]) -> Run:
    """A succeeded run scoring each sample from its probabilities, by the design's score table."""
    run = Run(
        dataset_id=ds.id, status="succeeded", label_version=ds.label_version, params={"epochs": 1},
        finished_at=utcnow(),
    )
    db.add(run)
    db.flush()
    samples = {s.id: s for s in db.scalars(select(Sample).where(Sample.id.in_(probs_by_sample)))}
    for sample_id, probs in probs_by_sample.items():
        given = samples[sample_id].label
        ranked = sorted(probs.items(), key=lambda kv: -kv[1])
        p_y = probs.get(given, 0.0) if given is not None else None
        best_other = max((p for c, p in probs.items() if c != given), default=0.0)
        db.add(
            Prediction(
                run_id=run.id,
                sample_id=sample_id,
                given_label=given,
                label=ranked[0][0],
                probs=dict(ranked[:5]),
                loss=-math.log(max(p_y, 1e-12)) if p_y is not None else None,
                self_confidence=p_y,
                normalized_margin=p_y - best_other if p_y is not None else None,
                confusion_margin=ranked[0][1] - ranked[1][1],
                confusion_a=ranked[0][0],
                confusion_b=ranked[1][0],
                entropy=-sum(p * math.log(p) for p in probs.values() if p > 0),
                out_of_fold=True,
            )
        )
    db.commit()
    return run


def confident(label: str, classes: list[str], p: float = 0.9) -> dict[str, float]:
    """Probabilities that put p on label and share the rest among the other classes."""
    rest = (1 - p) / (len(classes) - 1)
    return {c: (p if c == label else rest) for c in classes}


def events_of(db: Session, ds: Dataset) -> list[tuple]:
    """(sample_id, old_label, new_label, source, user_id, reason) of every label event, oldest first."""
    db.expire_all()
    rows = db.scalars(select(LabelEvent).where(LabelEvent.dataset_id == ds.id).order_by(LabelEvent.id)).all()
    return [(e.sample_id, e.old_label, e.new_label, e.source, e.user_id, e.reason) for e in rows]
