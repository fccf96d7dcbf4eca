"""What a train job on a multi-label dataset does differently once its probabilities are known:
the per-class thresholds and metrics (app.evaluation.multilabel) and the prediction rows with
their label-error scores (app.scoring.multilabel). app.training.jobs.TrainRun calls these in
place of its single-label `_evaluate` and `_write`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from app.datasets.tagsets import MAX_LENGTH, SEPARATOR
from app.evaluation.multilabel import choose_thresholds, multilabel_metrics, predict_sets
from app.runs.data_issues import run_issues
from app.scoring.multilabel import multilabel_scores
from app.scoring.scores import TOP_K
from app.training.records import write_predictions

if TYPE_CHECKING:
    from app.training.data import TrainingData


def tag_string(row: np.ndarray, classes: list[str], P_row: np.ndarray | None = None) -> str:
    """The canonical string of a 0/1 row. A set too long for the label column (MAX_LENGTH)
    drops its least probable tags (by P_row) until it fits."""
    tags = [j for j in np.flatnonzero(row)]
    text = SEPARATOR.join(classes[j] for j in tags)
    if len(text) > MAX_LENGTH and P_row is not None:
        keep = sorted(tags, key=lambda j: -P_row[j])
        while keep and len(SEPARATOR.join(classes[j] for j in sorted(keep))) > MAX_LENGTH:
            keep.pop()
        text = SEPARATOR.join(classes[j] for j in sorted(keep))
    return text


def evaluate(data: TrainingData, P: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """(metrics of the labelled valid and test samples, the per-class thresholds chosen on valid)."""
    items = data.items
    y, split = items["y"].to_numpy(), items["split"].to_numpy()
    Y = data.targets()
    valid = np.flatnonzero((split == "valid") & (y >= 0))
    thresholds = choose_thresholds(Y[valid], P[valid])
    metrics = {}
    for name in ("valid", "test"):
        pos = np.flatnonzero((split == name) & (y >= 0))
        metrics[name] = multilabel_metrics(Y[pos], P[pos], thresholds, data.classes)
    return metrics, thresholds


def write(run: Any, P: np.ndarray, fold_col: np.ndarray, thresholds: np.ndarray) -> int:
    """One Prediction per sample of `run` (app.training.jobs.TrainRun) of a multi-label dataset,
    scored against the tag set it had when the run read it (docs/scores.md, "Multi-label runs")."""
    t = time.monotonic()
    data, info = run.data, run.info
    items = data.items
    y, split = items["y"].to_numpy(), items["split"].to_numpy()
    sample_ids = items["sample_id"].to_numpy()
    issues = run_issues(run.ctx.engine, run.ctx.settings.data_dir, run.run_id, data.dataset_id, sample_ids, split, y)
    info["data_issues"] = issues.info
    labels = [label if isinstance(label, str) else None for label in items["label"].tolist()]  # NaN: unlabelled
    rows, flagged = prediction_rows(run.run_id, P, data.targets(), y >= 0, split, thresholds, data.classes, sample_ids,
                                    labels, items["reviewed"].tolist(), fold_col, issues)
    info["flagged"] = {**flagged, "out_of_fold": run.plan.fold_plan is not None}
    info["timings"]["label_errors"] = round(time.monotonic() - t, 3)
    t = time.monotonic()
    write_predictions(run.ctx.engine, rows, run.ctx)
    info["timings"]["writing"] = round(time.monotonic() - t, 3)
    info["covers_through"] = int(sample_ids.max(initial=0))  # as the single-label write (app.training.jobs)
    return len(rows)


def prediction_rows(run_id: int, P: np.ndarray, Y: np.ndarray, labelled: np.ndarray, split: np.ndarray,
                    thresholds: np.ndarray, classes: list[str], sample_ids: np.ndarray, labels: list[str | None],
                    reviewed: list, fold_col: np.ndarray, issues) -> tuple[list[dict], dict[str, Any]]:
    """(one predictions row per sample, the flagged set's summary) of a multi-label run, from
    its probabilities P (n, k), the given tags Y (n, k), the decision thresholds, and the data
    issues (app.runs.data_issues); fold_col -1 where a sample was not held out. The train job
    and an external run (app.runs.external) both write these."""
    s = multilabel_scores(P, Y, labelled, split, thresholds, classes)
    predicted = predict_sets(P, thresholds)
    top = np.argsort(-P, axis=1, kind="stable")[:, :TOP_K]
    rows = []
    for i in range(len(P)):

        def value(a: np.ndarray) -> float | None:
            v = float(a[i])
            return None if v != v else v

        rows.append({
            "run_id": run_id,
            "sample_id": int(sample_ids[i]),
            "given_label": labels[i],
            "label": tag_string(predicted[i], classes, P[i]),
            "probs": {classes[j]: float(P[i, j]) for j in top[i]},
            "loss": value(s.loss),
            "self_confidence": value(s.self_confidence),
            "normalized_margin": value(s.normalized_margin),
            "confusion_margin": float(s.confusion_margin[i]),
            "confusion_a": classes[s.confusion_a[i]],
            "confusion_b": classes[s.confusion_b[i]],
            "entropy": float(s.entropy[i]),
            "aum": None,
            "combined": value(s.combined),
            "priority": value(s.priority),
            "flagged": bool(s.flagged[i]),
            "suggested_label": tag_string(s.suggested[i], classes, P[i]) if s.flagged[i] else None,
            "out_of_fold": bool(fold_col[i] >= 0),
            "fold": int(fold_col[i]) if fold_col[i] >= 0 else None,
            "outlier": value(issues.outlier),
            "duplicate_group": int(issues.group[i]) if issues.group[i] >= 0 else None,
            "sample_label": labels[i],
            "sample_split": str(split[i]),
            "sample_reviewed": bool(reviewed[i]),
        })
    return rows, s.info["flagged"]
