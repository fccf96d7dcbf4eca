"""External runs: a model's predictions made elsewhere, brought in as a finished run.

`POST /api/v1/datasets/{id}/runs` with a file of probabilities (app.runs.external_file) makes a
run that the pages, the queue, the advisor and the exports use exactly as a train run's: the
per-class metrics on the valid and test samples the file covers, every score, the flagged set,
the suggested labels and the review priority, computed by the same code the train job uses
(app.training.label_errors.columns_from, app.scoring.scores.score). What an external run lacks
is the training dynamics: no AUM, so the combined score takes the probability-only scores in
its place (app.scoring.noise, docs/scores.md). On a multi-label dataset each class column is a
tag's own probability; the thresholds come from the valid samples the file covers and the rows
from the multi-label train job's code (app.training.multilabel_run.prediction_rows).

Samples the file leaves out get no prediction under the run (they list after the scored ones,
as a train run's do for samples imported after it). The run is written as a running run,
its predictions, then its succeeded status: nothing follows it until it is complete, and a
failed write deletes it, so the request creates the whole run or none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.datasets.importers.validation import Errors, short
from app.datasets.tagsets import indicator
from app.evaluation.metrics import classification_metrics
from app.evaluation.multilabel import choose_thresholds, multilabel_metrics
from app.models import Dataset, Run, RunStatus, Sample
from app.runs import embeddings
from app.runs.data_issues import run_issues
from app.runs.external_file import PredictionsFile, read_predictions, refused
from app.runs.retention import apply_retention
from app.scoring.scores import score
from app.training.label_errors import columns_from
from app.training.multilabel_run import prediction_rows
from app.training.records import finish_run, write_predictions

log = logging.getLogger(__name__)

MAX_NAME = 200
# Reads of the dataset's samples retried when a relabel lands between them and its version.
READ_ATTEMPTS = 5


@dataclass
class Matched:
    """The file's rows matched to the dataset's samples, as of one label version."""

    sample_ids: np.ndarray
    y: np.ndarray  # current class index, -1 unlabelled
    split: np.ndarray
    labels: list[str | None]
    reviewed: list[bool]
    label_version: int
    covers_all: bool  # the file has a row for every sample of the dataset


def create_external_run(session: Session, ds: Dataset, fh: IO[bytes], filename: str, name: str, out_of_fold: bool,
                        normalize: str, settings: Settings) -> Run:
    """Check the file, score it, and store it as a succeeded run; ImportFailed (422, by row)
    when anything is wrong, with nothing written."""
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME:
        errors = Errors(1)
        errors.add(None, "name", f"give the run a name of 1 to {MAX_NAME} characters (the model it came from)")
        _raise(errors, filename)
    classes = list(ds.classes or [])
    if len(classes) < 2:
        errors = Errors(1)
        errors.add(None, "dataset", f"dataset {ds.id} has {len(classes)} classes; an external run needs at least two")
        _raise(errors, filename)
    parsed = read_predictions(fh, filename, classes, normalize, settings.max_import_rows, settings.max_import_errors,
                              multilabel=bool(ds.multilabel))
    matched = _match(session, ds, parsed, filename, settings.max_import_errors)
    session.rollback()  # the read transaction; the run is written in transactions of its own
    return _store(session.get_bind(), session, ds, classes, parsed, matched, name, filename, out_of_fold,
                  normalize, settings)


def _raise(errors: Errors, filename: str) -> None:
    from app.datasets.importers.validation import ImportFailed

    try:
        errors.raise_if_any(filename or "request")
    except ImportFailed as exc:
        raise refused(exc) from None


def _match(session: Session, ds: Dataset, parsed: PredictionsFile, filename: str, max_errors: int) -> Matched:
    """The sample behind each row, by external id: unknown and repeated ids are refused by row."""
    for _ in range(READ_ATTEMPTS):
        version = session.scalar(select(Dataset.label_version).where(Dataset.id == ds.id))
        rows = session.execute(
            select(Sample.id, Sample.external_id, Sample.split, Sample.label, Sample.reviewed)
            .where(Sample.dataset_id == ds.id).order_by(Sample.id)
        ).all()
        if session.scalar(select(Dataset.label_version).where(Dataset.id == ds.id)) == version:
            break
        session.rollback()
    else:
        raise RuntimeError(f"dataset {ds.id} kept changing while its samples were read")
    by_external = {r.external_id: i for i, r in enumerate(rows) if r.external_id is not None}
    errors = Errors(max_errors)
    positions = np.full(len(parsed.external_ids), -1, dtype=np.int64)
    seen: dict[str, int] = {}
    for i, ext in enumerate(parsed.external_ids):
        if ext in seen:
            errors.add(i, "external_id", f"{short(ext)} appears again (first in row {seen[ext] + 1})")
            continue
        seen[ext] = i
        pos = by_external.get(ext)
        if pos is None:
            errors.add(i, "external_id", f"{short(ext)} is not a sample of dataset {ds.id}")
        else:
            positions[i] = pos
    _raise(errors, filename)
    index = {c: j for j, c in enumerate(ds.classes or [])}
    picked = [rows[p] for p in positions.tolist()]
    return Matched(
        sample_ids=np.array([r.id for r in picked], dtype=np.int64),
        y=np.array([index.get(r.label, -1) if r.label is not None else -1 for r in picked], dtype=np.int64),
        split=np.array([str(r.split.value if hasattr(r.split, "value") else r.split) for r in picked], dtype=object),
        labels=[r.label for r in picked],
        reviewed=[bool(r.reviewed) for r in picked],
        label_version=version,
        covers_all=len(picked) == len(rows),
    )


def _metrics(P: np.ndarray, m: Matched, classes: list[str]) -> dict[str, Any]:
    """Per-class metrics on the labelled valid and test samples the file covers (null without any)."""
    out = {}
    for name in ("valid", "test"):
        pos = np.flatnonzero((m.split == name) & (m.y >= 0))
        out[name] = classification_metrics(m.y[pos], P[pos].argmax(axis=1), classes)
    return out


def _store(engine: Engine, session: Session, ds: Dataset, classes: list[str], parsed: PredictionsFile, m: Matched,
           name: str, filename: str, out_of_fold: bool, normalize: str, settings: Settings) -> Run:
    from app.advisor.advice import train_confusion

    P = parsed.P
    if ds.multilabel:  # a tag set is a "class" of its own for y: equal sets share an index (twins, folds)
        sets = {s: i for i, s in enumerate(sorted({lab for lab in m.labels if lab is not None}))}
        m.y = np.array([sets[lab] if lab is not None else -1 for lab in m.labels], dtype=np.int64)
    issues = run_issues(engine, settings.data_dir, 0, ds.id, m.sample_ids, m.split.astype(str), m.y, X=parsed.embedding)
    info: dict[str, Any] = {
        "provenance": {"kind": "external", "name": name, "file": filename, "out_of_fold": out_of_fold,
                       "normalize": normalize, "rows": len(m.sample_ids)},
        "notices": [] if out_of_fold else [
            "the probabilities are not held out (out_of_fold false): a model that memorised a wrong label no "
            "longer finds it, so held-out (cross-validated) probabilities flag more of them"],
        "data_issues": issues.info,
    }
    if parsed.ignored_columns:
        info["ignored_columns"] = parsed.ignored_columns
    if ds.multilabel:
        Y = indicator(m.labels, classes)
        thresholds = choose_thresholds(Y[(m.split == "valid") & (m.y >= 0)], P[(m.split == "valid") & (m.y >= 0)])
        info["thresholds"] = dict(zip(classes, thresholds.tolist()))
        metrics = {name: multilabel_metrics(Y[pos], P[pos], thresholds, classes)
                   for name in ("valid", "test") for pos in [np.flatnonzero((m.split == name) & (m.y >= 0))]}
        columns = None
    else:
        columns = columns_from(P, m.y, m.split.astype(str), classes, out_of_fold, group=issues.group,
                               Z=parsed.embedding)
        info.update(columns.info)
        on_train = m.split == "train"
        info["train_confusion"] = train_confusion(m.y[on_train], P[on_train].argmax(axis=1), classes)
        metrics = _metrics(P, m, classes)
    if m.covers_all:
        # Every sample up to this id has a prediction: the listings' fast path (docs/queries.md).
        info["covers_through"] = int(m.sample_ids.max())
    run = Run(dataset_id=ds.id, job_id=None, status=RunStatus.running, params={}, label_version=m.label_version,
              history=[], info={"provenance": info["provenance"]})
    session.add(run)
    session.commit()
    run_id = run.id
    try:
        if columns is None:
            rows, flagged = prediction_rows(run_id, P, Y, m.y >= 0, m.split.astype(str), thresholds, classes,
                                            m.sample_ids, m.labels, m.reviewed, np.full(len(P), -1), issues)
            info["flagged"] = {**flagged, "out_of_fold": out_of_fold}
            for row in rows:
                row["out_of_fold"] = out_of_fold
        else:
            rows = _prediction_rows(run_id, P, m, classes, columns, out_of_fold, issues)
        write_predictions(engine, rows)
        if parsed.embedding is not None:
            info["embedding"] = embeddings.save(settings.data_dir, run_id, m.sample_ids, parsed.embedding, "external")
        finish_run(engine, run_id, info, RunStatus.succeeded, metrics=metrics)
    except BaseException:
        session.rollback()
        session.execute(delete(Run).where(Run.id == run_id))
        session.commit()
        embeddings.drop_run_dir(settings.data_dir, run_id)
        raise
    if dropped := apply_retention(engine, ds.id, settings.keep_runs, settings.data_dir):
        log.info("dropped the per-sample predictions of runs %s", dropped)
    session.expire_all()
    return session.get(Run, run_id)


def _prediction_rows(run_id: int, P: np.ndarray, m: Matched, classes: list[str], columns, out_of_fold: bool,
                     issues) -> list[dict]:
    rows = score(P, m.y, classes).rows()
    outlier, group = issues.outlier.tolist(), issues.group.tolist()
    combined, priority = columns.combined.tolist(), columns.priority.tolist()
    gain = columns.review_gain.tolist() if columns.review_gain is not None else [None] * len(rows)
    flagged, suggested = columns.flagged.tolist(), columns.suggested.tolist()
    splits = m.split.tolist()
    for i, (row, sample_id) in enumerate(zip(rows, m.sample_ids.tolist())):
        row["run_id"] = run_id
        row["sample_id"] = sample_id
        row["sample_label"], row["sample_split"], row["sample_reviewed"] = m.labels[i], str(splits[i]), m.reviewed[i]
        row["out_of_fold"] = out_of_fold
        row["combined"] = None if combined[i] != combined[i] else combined[i]  # NaN -> None
        row["priority"] = None if priority[i] != priority[i] else priority[i]
        row["review_gain"] = None if gain[i] is None or gain[i] != gain[i] else gain[i]
        row["flagged"] = flagged[i]
        row["suggested_label"] = classes[suggested[i]] if suggested[i] >= 0 else None
        row["outlier"] = None if outlier[i] != outlier[i] else outlier[i]
        row["duplicate_group"] = group[i] if group[i] >= 0 else None
    return rows
