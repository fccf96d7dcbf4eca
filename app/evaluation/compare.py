"""Run comparison, and the per-class numbers the dataset overview draws.

compare() puts two runs side by side, class by class, and ties the difference to the
label events between the label versions the two runs saw: what the corrections bought.
The other functions read a run's stored metrics (`M`, docs/rest.md) into the shapes the
overview shows: per-class rows worst first, the confusion matrix as a heat map with its
most confused pairs, each class's F1 over the runs, and the class distribution per split.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime
from itertools import pairwise
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import case, func, literal, select
from sqlalchemy.orm import Session

from app.datasets import tagsets
from app.deps import get_dataset
from app.errors import Conflict, NotFound
from app.models import Dataset, LabelEvent, Run, RunStatus, Sample
from app.runs.schemas import Provenance
from app.runs.service import latest_run, provenance

LABELLED_SPLITS = ("train", "valid", "test")
HEAT_LEVELS = 5
# Shares of a true class's samples predicted as another class; errors matter from a few percent.
ERROR_STEPS = (0.02, 0.05, 0.1, 0.2)
HISTORY_RUNS = 20


# --- schemas -----------------------------------------------------------------------------


class ClassChange(BaseModel):
    """One class in both runs; a delta is null where either run has no number."""

    f1: float | None
    base_f1: float | None
    delta: float | None = Field(description="f1 - base_f1")
    precision: float | None
    base_precision: float | None
    precision_delta: float | None
    recall: float | None
    base_recall: float | None
    recall_delta: float | None
    support: int | None
    base_support: int | None
    labels_in: int = Field(description="samples whose label became this class between the two label versions")
    labels_out: int = Field(description="samples whose label was this class and is another now")


class LabelMove(BaseModel):
    old_label: str | None
    new_label: str | None
    count: int


class Comparison(BaseModel):
    dataset_id: int
    split: str
    run_id: int
    base_run_id: int | None
    label_version: int
    base_label_version: int | None
    provenance: Provenance | None = Field(default=None, description="where the run's predictions came from")
    base_provenance: Provenance | None = Field(default=None, description="where the base run's came from")
    accuracy: float | None
    base_accuracy: float | None
    accuracy_delta: float | None
    macro_f1: float | None
    base_macro_f1: float | None
    macro_f1_delta: float | None
    labels_changed: int | None = Field(
        description="samples whose label differs between the two runs' label versions (a label changed and changed "
        "back counts not at all); null without a base run"
    )
    moves: list[LabelMove] = Field(description="those samples by (label then, label now) pair, most frequent first")
    per_class: dict[str, ClassChange]


class RunPoint(BaseModel):
    run_id: int
    label_version: int
    created_at: datetime
    accuracy: float | None
    macro_f1: float | None
    labels_changed: int | None = Field(
        description="samples whose label differs from the previous run's label version; null for the first")
    provenance: Provenance | None = Field(default=None, description="train job or external model")


class RunHistory(BaseModel):
    split: str
    runs: list[RunPoint] = Field(description="oldest first")
    f1: dict[str, list[float | None]] = Field(description="each class's F1, one value per run")
    delta: dict[str, float | None] = Field(description="each class's F1 change from the second-last run to the last")


# --- runs --------------------------------------------------------------------------------


def previous_run(session: Session, run: Run) -> Run | None:
    """The succeeded run of the same dataset just before `run`."""
    return session.scalar(
        select(Run)
        .where(Run.dataset_id == run.dataset_id, Run.status == RunStatus.succeeded, Run.id < run.id)
        .order_by(Run.id.desc())
        .limit(1)
    )


def split_metrics(run: Run | None, split: str) -> dict[str, Any] | None:
    if run is None:
        return None
    return (run.metrics or {}).get(split) or None


def _delta(new: float | None, old: float | None) -> float | None:
    return None if new is None or old is None else new - old


# --- label changes -----------------------------------------------------------------------
#
# Between two label versions a sample counts once, by its label before the first event in
# (low, high] and after the last: a label changed and changed back (A -> B -> A, an undo) is
# no change, and A -> B -> C is one change, A -> C.


def _label_ends(dataset_id: int, low: int, high: int, bounds: list[int] | None = None):
    """A subquery of each sample's label events in versions (low, high] (per interval between
    consecutive `bounds` when given: column `part` numbers them from 0): `before`, the label
    before its first event, `after`, the label after its last, and `nth`, 1 on one row per
    sample (and interval). Events that moved only the split carry the label too."""
    version = LabelEvent.label_version
    part = case(*[(version <= b, i) for i, b in enumerate(bounds[1:])], else_=len(bounds)) if bounds else literal(0)
    window = {"partition_by": (LabelEvent.sample_id, part)}
    forward, backward = (version, LabelEvent.id), (version.desc(), LabelEvent.id.desc())
    return (
        select(
            part.label("part"),
            func.first_value(LabelEvent.old_label).over(**window, order_by=forward).label("before"),
            func.first_value(LabelEvent.new_label).over(**window, order_by=backward).label("after"),
            func.row_number().over(**window, order_by=forward).label("nth"),
        )
        .where(LabelEvent.dataset_id == dataset_id, version > low, version <= high)
        .subquery()
    )


def label_moves(session: Session, dataset_id: int, low: int, high: int) -> list[LabelMove]:
    """The samples whose label differs between versions low and high, counted by (label at
    low, label at high), most frequent first."""
    ends = _label_ends(dataset_id, low, high)
    rows = session.execute(
        select(ends.c.before, ends.c.after, func.count())
        .where(ends.c.nth == 1, ends.c.before.is_distinct_from(ends.c.after))
        .group_by(ends.c.before, ends.c.after)
    ).all()
    moves = [LabelMove(old_label=o, new_label=n, count=c) for o, n, c in rows]
    return sorted(moves, key=lambda m: (-m.count, m.old_label or "", m.new_label or ""))


def _changes_between(session: Session, dataset_id: int, bounds: list[int]) -> list[int]:
    """For each interval (bounds[i], bounds[i + 1]] of ascending versions, the samples whose
    label differs between its two ends; one query for them all."""
    if len(bounds) < 2:
        return []
    ends = _label_ends(dataset_id, bounds[0], bounds[-1], bounds)
    rows = session.execute(
        select(ends.c.part, func.count())
        .where(ends.c.nth == 1, ends.c.before.is_distinct_from(ends.c.after))
        .group_by(ends.c.part)
    ).all()
    counts = dict(rows)
    return [int(counts.get(i, 0)) for i in range(len(bounds) - 1)]


# --- comparison --------------------------------------------------------------------------


def compare(session: Session, run: Run, base_run: Run | None, split: str = "valid") -> Comparison:
    """`run` against `base_run` on one split: per-class F1, precision and recall with their
    deltas, accuracy and macro F1 deltas, and the label changes between the two runs'
    label versions (in total, per (old, new) pair, and into and out of each class)."""
    now = split_metrics(run, split) or {}
    base = split_metrics(base_run, split) or {}
    moves: list[LabelMove] = []
    labels_changed = None
    if base_run is not None:
        low, high = sorted((base_run.label_version, run.label_version))
        moves = label_moves(session, run.dataset_id, low, high)
        labels_changed = sum(m.count for m in moves)
    into: Counter[str] = Counter()
    out: Counter[str] = Counter()
    for m in moves:
        if m.new_label is not None:
            into[m.new_label] += m.count
        if m.old_label is not None:
            out[m.old_label] += m.count

    now_pc, base_pc = now.get("per_class") or {}, base.get("per_class") or {}
    names = _class_order(run, base_run, split)
    per_class = {}
    for name in names:
        a, b = now_pc.get(name) or {}, base_pc.get(name) or {}
        per_class[name] = ClassChange(
            f1=a.get("f1"),
            base_f1=b.get("f1"),
            delta=_delta(a.get("f1"), b.get("f1")),
            precision=a.get("precision"),
            base_precision=b.get("precision"),
            precision_delta=_delta(a.get("precision"), b.get("precision")),
            recall=a.get("recall"),
            base_recall=b.get("recall"),
            recall_delta=_delta(a.get("recall"), b.get("recall")),
            support=a.get("support"),
            base_support=b.get("support"),
            labels_in=into[name],
            labels_out=out[name],
        )
    return Comparison(
        dataset_id=run.dataset_id,
        split=split,
        run_id=run.id,
        base_run_id=base_run.id if base_run is not None else None,
        label_version=run.label_version,
        base_label_version=base_run.label_version if base_run is not None else None,
        provenance=provenance(run),
        base_provenance=provenance(base_run) if base_run is not None else None,
        accuracy=now.get("accuracy"),
        base_accuracy=base.get("accuracy"),
        accuracy_delta=_delta(now.get("accuracy"), base.get("accuracy")),
        macro_f1=now.get("macro_f1"),
        base_macro_f1=base.get("macro_f1"),
        macro_f1_delta=_delta(now.get("macro_f1"), base.get("macro_f1")),
        labels_changed=labels_changed,
        moves=moves,
        per_class=per_class,
    )


def compare_runs(
    session: Session, dataset_id: int, run_id: int | None = None, base_id: int | None = None, split: str = "valid"
) -> Comparison:
    """compare() for two runs of a dataset: `run_id` defaults to the latest succeeded run and
    `base_id` to the succeeded run before it. 404 for an unknown dataset or a run of another
    dataset, 409 while the dataset has no succeeded run."""
    get_dataset(session, dataset_id)
    if run_id is None:
        run = latest_run(session, dataset_id)
        if run is None:
            raise Conflict(f"dataset {dataset_id} has no finished run yet")
    else:
        run = _dataset_run(session, dataset_id, run_id)
    base = previous_run(session, run) if base_id is None else _dataset_run(session, dataset_id, base_id)
    return compare(session, run, base, split)


def _dataset_run(session: Session, dataset_id: int, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None or run.dataset_id != dataset_id:
        raise NotFound(f"run {run_id} not found in dataset {dataset_id}")
    return run


def _class_order(run: Run, base_run: Run | None, split: str) -> list[str]:
    """The classes of the newer run in its order, then any only the base run knew."""
    names: list[str] = []
    for r in (run, base_run):
        m = split_metrics(r, split) or {}
        labels = (m.get("confusion") or {}).get("labels") or list((m.get("per_class") or {}).keys())
        names.extend(n for n in labels if n not in names)
    return names


def run_history(session: Session, dataset_id: int, split: str = "valid", limit: int = HISTORY_RUNS) -> RunHistory:
    """The last `limit` succeeded runs, oldest first: each class's F1 per run, the change of
    the last run from the one before, and how many labels changed between consecutive runs."""
    runs = list(
        reversed(
            session.scalars(
                select(Run)
                .where(Run.dataset_id == dataset_id, Run.status == RunStatus.succeeded)
                .order_by(Run.id.desc())
                .limit(limit)
            ).all()
        )
    )
    if not runs:
        return RunHistory(split=split, runs=[], f1={}, delta={})
    bounds = sorted({r.label_version for r in runs})
    between = dict(zip(pairwise(bounds), _changes_between(session, dataset_id, bounds), strict=True))
    points = []
    for i, r in enumerate(runs):
        m = split_metrics(r, split) or {}
        changed = None
        if i > 0:
            low, high = sorted((runs[i - 1].label_version, r.label_version))
            if low == high:
                changed = 0
            elif (low, high) in between:
                changed = between[(low, high)]
            else:  # a run on an older label version than the one before it: several intervals
                changed = _changes_between(session, dataset_id, [low, high])[0]
        points.append(
            RunPoint(
                run_id=r.id,
                label_version=r.label_version,
                created_at=r.created_at,
                accuracy=m.get("accuracy"),
                macro_f1=m.get("macro_f1"),
                labels_changed=changed,
                provenance=provenance(r),
            )
        )
    names: list[str] = []
    for r in reversed(runs):
        names.extend(n for n in ((split_metrics(r, split) or {}).get("per_class") or {}) if n not in names)
    f1 = {
        name: [((split_metrics(r, split) or {}).get("per_class") or {}).get(name, {}).get("f1") for r in runs]
        for name in names
    }
    delta = {name: _delta(v[-1], v[-2]) if len(v) > 1 else None for name, v in f1.items()}
    return RunHistory(split=split, runs=points, f1=f1, delta=delta)


# --- the latest run, read for the page ----------------------------------------------------


def per_class_rows(run: Run) -> list[dict[str, Any]]:
    """One row per class with its valid and test numbers (either may be None), worst valid F1
    first (worst test F1 first when the run has no valid metrics)."""
    valid = (split_metrics(run, "valid") or {}).get("per_class") or {}
    test = (split_metrics(run, "test") or {}).get("per_class") or {}
    names = list(valid) + [n for n in test if n not in valid]
    rows = [{"name": n, "valid": valid.get(n), "test": test.get(n)} for n in names]
    key = "valid" if valid else "test"
    rows.sort(key=lambda r: (r[key] is None, (r[key] or {}).get("f1", 0.0)))
    return rows


def heat_level(count: int, share: float, diagonal: bool) -> int:
    """0 (empty) to HEAT_LEVELS: the cell's shade in the confusion heat map.

    Diagonal cells shade with the share of their class that was right; off-diagonal cells
    reach the darkest shade at a fifth of the class, so small confusions still show."""
    if count <= 0:
        return 0
    if diagonal:
        return max(1, min(HEAT_LEVELS, math.ceil(share * HEAT_LEVELS)))
    return 1 + sum(share > step for step in ERROR_STEPS)


def confusion_view(metrics: dict[str, Any] | None, top: int = 10) -> dict[str, Any] | None:
    """The confusion matrix (rows: given class, columns: predicted) as heat-map rows, and the
    `top` largest off-diagonal cells as the most confused pairs; None without a matrix."""
    confusion = (metrics or {}).get("confusion") or {}
    labels, matrix = confusion.get("labels") or [], confusion.get("matrix") or []
    if not labels or not matrix:
        return None
    rows, pairs = [], []
    for i, given in enumerate(labels):
        counts = matrix[i]
        total = sum(counts)
        cells = []
        for j, predicted in enumerate(labels):
            count = int(counts[j])
            share = count / total if total else 0.0
            cells.append(
                {
                    "predicted": predicted,
                    "count": count,
                    "share": share,
                    "diagonal": i == j,
                    "level": heat_level(count, share, i == j),
                }
            )
            if i != j and count > 0:
                pairs.append({"given": given, "predicted": predicted, "count": count, "share": share})
        rows.append({"given": given, "total": total, "cells": cells})
    pairs.sort(key=lambda p: (-p["count"], -p["share"], p["given"], p["predicted"]))
    return {"labels": list(labels), "rows": rows, "pairs": pairs[:top]}


# --- the dataset -------------------------------------------------------------------------


def split_class_counts(session: Session, dataset: Dataset) -> list[tuple[str, str | None, int]]:
    """(split, class or None, samples) in one GROUP BY: the overview takes its split counts and
    its class distribution from this one walk of the dataset's samples (at 1M samples each
    walk is some 200 ms)."""
    return [(str(split), label, n) for split, label, n in session.execute(
        select(Sample.split, Sample.label, func.count())
        .where(Sample.dataset_id == dataset.id)
        .group_by(Sample.split, Sample.label)
    )]


def class_distribution(session: Session, dataset: Dataset,
                       counts: list[tuple[str, str | None, int]] | None = None) -> dict[str, dict[str, int]]:
    """Labelled samples per split and class, from split_class_counts (run here unless the
    caller has its rows); every class of the dataset appears in every labelled split (0
    where it has none), then any label not in the list. In a multi-label dataset a sample
    counts once for each class of its tag set."""
    counts = counts if counts is not None else split_class_counts(session, dataset)
    rows = [r for r in counts if r[1] is not None]
    if dataset.multilabel:
        # A tag set counts towards each of its classes (the empty set towards none).
        rows = [(split, tag, n) for split, label, n in rows for tag in tagsets.to_list(label) or []]
    names = list(dataset.classes or [])
    names.extend(sorted({label for _, label, _ in rows} - set(names)))
    out = {split: dict.fromkeys(names, 0) for split in LABELLED_SPLITS}
    for split, label, n in rows:
        if split in out:
            out[split][label] += n
    return out
