"""A hand-made run: metrics from a given confusion matrix, predictions written row by row."""

from __future__ import annotations

import math

import numpy as np
from sqlalchemy.orm import Session

from app.evaluation.metrics import classification_metrics
from app.models import Dataset, Prediction, Run, Sample


def metrics_from(matrix: list[list[int]], classes: list[str]) -> dict:
    """Metrics M whose confusion matrix (rows true, columns predicted) is `matrix`."""
    y_true, y_pred = [], []
    for i, row in enumerate(matrix):
        for j, n in enumerate(row):
            y_true += [i] * n
            y_pred += [j] * n
    return classification_metrics(np.array(y_true), np.array(y_pred), classes)


def make_run(db: Session, ds: Dataset, valid: dict | None, test: dict | None = None, **values) -> Run:
    run = Run(dataset_id=ds.id, status=values.pop("status", "succeeded"), params={}, label_version=ds.label_version,
              metrics={"valid": valid, "test": test}, history=[], info={}, **values)
    db.add(run)
    db.commit()
    return run


def predict(db: Session, run: Run, sample: Sample, probs: dict[str, float]) -> Prediction:
    """A prediction with the scores docs/scores.md defines, from the given probabilities."""
    ranked = sorted(probs.items(), key=lambda kv: -kv[1])
    (a, pa), (b, pb) = ranked[0], ranked[1]
    given = sample.label
    p = Prediction(
        run_id=run.id, sample_id=sample.id, given_label=given, label=a, probs=probs,
        loss=-math.log(max(probs.get(given, 0.0), 1e-12)) if given else None,
        self_confidence=probs.get(given, 0.0) if given else None,
        normalized_margin=(probs.get(given, 0.0) - max(v for k, v in probs.items() if k != given)) if given else None,
        confusion_margin=pa - pb, confusion_a=a, confusion_b=b,
        entropy=-sum(v * math.log(v) for v in probs.values() if v > 0), aum=None, out_of_fold=False,
    )
    db.add(p)
    db.commit()
    return p


def two_way(classes: list[str], top: str, second: str, p_top: float) -> dict[str, float]:
    """Probabilities with `top` first at p_top, `second` next, the rest sharing what is left."""
    rest = [c for c in classes if c not in (top, second)]
    p_second = (1 - p_top) * 0.5
    left = (1 - p_top - p_second) / max(1, len(rest))
    return {top: p_top, second: p_second, **dict.fromkeys(rest, left)}
