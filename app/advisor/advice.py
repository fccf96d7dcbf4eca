"""Per-class advice from the latest succeeded run's metrics and the dataset's split counts.

Thresholds are relative to the dataset, so a dataset of balanced, mostly well learnt classes
(the demo) gets advice where a class stands out from the others, and none where none does.
A class *lags* on a metric (recall, precision) when it is below 0.8, or below the mean of
the classes by more than 5 points, more than one sample (1/n) and more than one binomial
standard error of a rate measured on its n samples (sqrt(p (1 - p) / n), the larger at the
class's rate and at the mean): a gap that a sample or two explain is not a finding. n is the
class's support for recall and the number of samples predicted as it for precision.

- collect: recall lags and the class has few train samples (no more than the median class:
  a class with more data than a typical class is not starved for it, and advice to collect
  it would contradict its own numbers). When no class lags, the class with the lowest recall
  among those with few train samples (below the mean recall) is named as the place to start,
  with `numbers.basis` "lowest" and a reason that says the gap is small (the demo's balanced
  digits get this). Lists the unlabelled samples the run predicts as the class, most
  probable first.
- relabel: precision lags. Lists the classes whose samples the run predicts as this one (the
  confusion matrix column), each with the train samples labelled this class that the run
  reads as that one: the likely mislabels. More data of the class will not fix its precision.
- prune: train count at or above the median, F1 at least 0.9 and at least the mean, and no
  collect or relabel advice for it: a well learnt, well stocked class whose easiest samples
  may cost the others capacity. Suggests the prune experiment; only its result decides.
- confused_pair: the (a, b) pairs most confused both ways on the split (at least 2 samples),
  with the unlabelled samples whose two most probable classes are a and b.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from app.evaluation import compare as cmp
from app.models import Dataset, Prediction, Run, Sample
from app.runs.service import latest_run
from app.web.urls import review_url

LOW = 0.8
MARGIN = 0.05
# A class has few train samples at up to this many times the median class's count (1: no more
# than the median, so "collect more" never names a class that has more than a typical one).
FEW_FACTOR = 1.0
HIGH_F1 = 0.9
MIN_PAIR = 2
MAX_PER_KIND = {"collect": 3, "relabel": 3, "prune": 2, "confused_pair": 3}
TOP_SAMPLES = 10

Kind = Literal["collect", "relabel", "prune", "confused_pair"]


class Link(BaseModel):
    title: str
    url: str


class AdviceItem(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_: str = Field(alias="class", description="the class the advice is about (a pair's first class)")
    kind: Kind
    reason: str = Field(description="why, with the numbers")
    numbers: dict[str, Any] = Field(default_factory=dict)
    samples: list[dict[str, Any]] = Field(default_factory=list, description="sample ids to look at first")
    pairs: list[dict[str, Any]] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list, description="review queues filtered for this advice")
    action: dict[str, Any] | None = Field(default=None, description="a request that starts the suggested job")


class AdviceRead(BaseModel):
    dataset_id: int
    run_id: int | None
    split: str | None = Field(description="the split whose metrics the advice reads: valid, else test")
    message: str | None = None
    thresholds: dict[str, float]
    items: list[AdviceItem]


def lags(value: float, mean: float, n: int) -> bool:
    """Below LOW, or below the mean by more than MARGIN, more than one sample's worth (1/n) and
    more than one binomial standard error of a rate measured on n samples (the larger of
    those at the class's rate and at the mean)."""
    if value < LOW:
        return True
    if n <= 0:
        return False
    se = math.sqrt(max(mean * (1 - mean), value * (1 - value), 0.0) / n)
    return value < mean - max(MARGIN, 1 / n, se)


def advise(session: Session, ds: Dataset, train_counts: dict[str, int] | None = None) -> AdviceRead:
    """Every advice item for the dataset's latest succeeded run (none without one); a caller
    that has already counted the train classes passes them in."""
    thresholds = {"low": LOW, "margin": MARGIN, "few_factor": FEW_FACTOR, "high_f1": HIGH_F1, "min_pair": MIN_PAIR}
    run = latest_run(session, ds.id)
    if run is None:
        return AdviceRead(dataset_id=ds.id, run_id=None, split=None, thresholds=thresholds, items=[],
                          message="no finished run yet: train a model to get advice")
    split = "valid" if cmp.split_metrics(run, "valid") else ("test" if cmp.split_metrics(run, "test") else None)
    if split is None:
        return AdviceRead(dataset_id=ds.id, run_id=run.id, split=None, thresholds=thresholds, items=[],
                          message=f"run #{run.id} has no valid or test metrics to advise from")
    metrics = cmp.split_metrics(run, split)
    if train_counts is None:
        train_counts = cmp.class_distribution(session, ds)["train"]
    items = plan(ds.id, metrics, train_counts, split)
    _fill_samples(session, ds, run, items)
    return AdviceRead(dataset_id=ds.id, run_id=run.id, split=split, thresholds=thresholds, items=items)


@dataclass
class _Split:
    """One split's per-class metrics and the train counts, as the rules read them."""

    dataset_id: int
    split: str
    labels: list[str]  # the confusion matrix's order
    matrix: list[list[int]]
    classes: list[str]  # the labels that have per-class metrics
    recall: dict[str, float]
    precision: dict[str, float]
    f1: dict[str, float]
    support: dict[str, int]
    predicted_n: dict[str, int]  # samples predicted as each class
    train_counts: dict[str, int]

    @property
    def mean_recall(self) -> float:
        return statistics.fmean(self.recall.values())

    @property
    def mean_precision(self) -> float:
        return statistics.fmean(self.precision.values())

    @property
    def mean_f1(self) -> float:
        return statistics.fmean(self.f1.values())

    @property
    def median_train(self) -> float:
        return statistics.median([self.train(c) for c in self.classes])

    def train(self, c: str) -> int:
        return self.train_counts.get(c, 0)


def plan(dataset_id: int, metrics: dict[str, Any], train_counts: dict[str, int], split: str) -> list[AdviceItem]:
    """The advice the rules give for one split's metrics M and the train count per class
    (sample lists left empty; advise() fills them from the run's predictions)."""
    confusion = metrics.get("confusion") or {}
    labels: list[str] = confusion.get("labels") or list(metrics["per_class"])
    matrix = confusion.get("matrix") or []
    pc = metrics["per_class"]
    classes = [c for c in labels if c in pc]
    if not classes:
        return []
    support = {c: pc[c]["support"] for c in classes}
    s = _Split(
        dataset_id=dataset_id, split=split, labels=labels, matrix=matrix, classes=classes,
        recall={c: pc[c]["recall"] for c in classes},
        precision={c: pc[c]["precision"] for c in classes},
        f1={c: pc[c]["f1"] for c in classes},
        support=support,
        predicted_n={c: sum(row[j] for row in matrix) for j, c in enumerate(labels)} if matrix else support,
        train_counts=train_counts,
    )
    items = _collect(s) + _relabel(s)
    items += _prune(s, flagged={i.class_ for i in items})
    return items + _confused_pairs(s)


def _collect(s: _Split) -> list[AdviceItem]:
    """collect: classes whose recall lags and that have few train samples; else the lowest-recall one."""
    median, mean_recall, recall = s.median_train, s.mean_recall, s.recall
    collect = [
        c for c in s.classes
        if s.support[c] > 0 and lags(recall[c], mean_recall, s.support[c]) and s.train(c) <= FEW_FACTOR * median
    ]
    collect.sort(key=lambda c: (recall[c], c))
    basis = "gap"
    few = [c for c in s.classes if s.support[c] > 0 and s.train(c) <= FEW_FACTOR * median]
    if not collect and few:
        # No class lags clearly: name the lowest-recall class of those with few train samples,
        # as the place to start, and say so.
        lowest = min(recall[c] for c in few)
        collect = [c for c in few if recall[c] == lowest and lowest < mean_recall]
        basis = "lowest"
    items = []
    for c in collect[: MAX_PER_KIND["collect"]]:
        n = s.train(c)
        if basis == "gap":
            why = (
                f"{s.split} recall {recall[c]:.2f} against a mean of {mean_recall:.2f} over {len(s.classes)} classes, "
                f"with {n} train samples (median class: {median:g}): the model misses {c} for want of examples."
            )
        else:
            short = (mean_recall - recall[c]) * s.support[c]
            among = (f"the lowest of {len(s.classes)} classes" if recall[c] <= min(recall.values())
                     else f"the lowest of the {len(few)} classes with no more train samples than the median class")
            why = (
                f"{s.split} recall {recall[c]:.2f}, {among} (mean {mean_recall:.2f}, "
                f"{short:.1f} of its {s.support[c]} {s.split} samples below it), with {n} train samples (median class: "
                f"{median:g}). No class lags clearly, so this is where to start, not a finding: if you collect more, "
                f"collect {c}."
            )
        items.append(AdviceItem(
            class_=c, kind="collect",
            reason=f"{why} Label the unlabelled samples it already predicts as {c} first.",
            numbers={"recall": recall[c], "mean_recall": mean_recall, "support": s.support[c], "train": n,
                     "median_train": median, "basis": basis},
            links=[Link(title=f"unlabelled samples predicted {c}",
                        url=review_url(s.dataset_id, split="unlabelled", predicted=c))],
        ))
    return items


def _relabel(s: _Split) -> list[AdviceItem]:
    """relabel: classes whose precision lags, with the classes the run reads as them."""
    labels, matrix, split, precision, mean_precision = s.labels, s.matrix, s.split, s.precision, s.mean_precision
    relabel = [c for c in s.classes if s.predicted_n.get(c, 0) > 0 and lags(precision[c], mean_precision, s.predicted_n[c])]
    relabel.sort(key=lambda c: (precision[c], c))
    items = []
    for c in relabel[: MAX_PER_KIND["relabel"]]:
        j = labels.index(c)
        into = sorted(
            ({"given": g, "count": int(matrix[i][j])} for i, g in enumerate(labels) if i != j and matrix and matrix[i][j] > 0),
            key=lambda p: (-p["count"], p["given"]),
        )
        listed = ", ".join(f"{p['count']} labelled {p['given']}" for p in into[:5]) or "none"
        links = []
        for p in into:
            g = p["given"]
            links.append(Link(title=f"train samples labelled {c} that the model reads as {g}",
                              url=review_url(s.dataset_id, split="train", label=c, predicted=g)))
            links.append(Link(title=f"{split} samples of {g} predicted {c}",
                              url=review_url(s.dataset_id, split=split, label=g, predicted=c)))
        predicted = s.predicted_n[c]
        items.append(AdviceItem(
            class_=c, kind="relabel",
            reason=(
                f"{split} precision {precision[c]:.2f} against a mean of {mean_precision:.2f}: of the "
                f"{predicted} {split} samples predicted {c}, {predicted - int(matrix[j][j]) if matrix else '?'} "
                f"are other classes ({listed}). Train samples of those classes labelled {c} teach the model to say {c}: "
                f"relabel them. More data of {c} will not fix its precision."
            ),
            numbers={"precision": precision[c], "mean_precision": mean_precision, "predicted": predicted},
            pairs=into,
            links=links,
        ))
    return items


def _prune(s: _Split, flagged: set[str]) -> list[AdviceItem]:
    """prune: well learnt, well stocked classes that no other advice (flagged) names."""
    median, mean_f1, f1 = s.median_train, s.mean_f1, s.f1
    prune = [
        c for c in s.classes
        if c not in flagged and s.train(c) >= median and s.train(c) > 0 and f1[c] >= HIGH_F1 and f1[c] >= mean_f1
    ]
    prune.sort(key=lambda c: (-f1[c], -s.train(c), c))
    items = []
    for c in prune[: MAX_PER_KIND["prune"]]:
        n = s.train(c)
        items.append(AdviceItem(
            class_=c, kind="prune",
            reason=(
                f"{s.split} F1 {f1[c]:.2f} (mean {mean_f1:.2f}) with {n} train samples (median class: {median:g}): "
                f"{c} is learnt well and well stocked. A prune experiment trains with and without its easiest "
                f"train samples and recommends pruning only if {c} holds and the other classes improve."
            ),
            numbers={"f1": f1[c], "mean_f1": mean_f1, "train": n, "median_train": median},
            action={"method": "POST", "url": f"/api/v1/datasets/{s.dataset_id}/jobs",
                    "json": {"kind": "prune", "params": {"class": c}}},
        ))
    return items


def _confused_pairs(s: _Split) -> list[AdviceItem]:
    """confused_pair: the pairs of classes most confused both ways (none without a confusion matrix)."""
    labels, matrix, split, ds_id = s.labels, s.matrix, s.split, s.dataset_id
    if not matrix:
        return []
    pairs = []
    for i, a in enumerate(labels):
        for k in range(i + 1, len(labels)):
            b = labels[k]
            ab, ba = int(matrix[i][k]), int(matrix[k][i])
            if ab + ba >= MIN_PAIR:
                pairs.append((ab + ba, a, b, ab, ba))
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    items = []
    for total, a, b, ab, ba in pairs[: MAX_PER_KIND["confused_pair"]]:
        items.append(AdviceItem(
            class_=a, kind="confused_pair",
            reason=(
                f"{a} and {b} are confused {total} times on {split} ({ab} {a} predicted {b}, {ba} {b} predicted {a}). "
                f"Labelling the unlabelled samples the model is torn between them sharpens that boundary."
            ),
            numbers={"count": total, "a_as_b": ab, "b_as_a": ba},
            pairs=[{"a": a, "b": b, "a_as_b": ab, "b_as_a": ba}],
            links=[
                Link(title=f"unlabelled samples predicted {a}, most torn first",
                     url=review_url(ds_id, split="unlabelled", predicted=a, order="confusion_margin")),
                Link(title=f"unlabelled samples predicted {b}, most torn first",
                     url=review_url(ds_id, split="unlabelled", predicted=b, order="confusion_margin")),
                Link(title=f"train samples labelled {a} predicted {b}",
                     url=review_url(ds_id, split="train", label=a, predicted=b)),
                Link(title=f"train samples labelled {b} predicted {a}",
                     url=review_url(ds_id, split="train", label=b, predicted=a)),
            ],
        ))
    return items


def train_confusion(y: Any, predicted: Any, classes: list[str]) -> dict[str, dict[str, int]]:
    """{given: {predicted: n}} over labelled train samples (class indices in, names out; zero
    counts left out): a relabel item's train suspects for class c predicted as g are
    [c][g]. The train job stores it in Run.info when the run finishes."""
    import numpy as np

    y, predicted = np.asarray(y, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    keep = y >= 0
    cells, counts = np.unique(y[keep] * len(classes) + predicted[keep], return_counts=True)
    out: dict[str, dict[str, int]] = {}
    for cell, n in zip(cells.tolist(), counts.tolist()):
        given, pred = divmod(cell, len(classes))
        out.setdefault(classes[given], {})[classes[pred]] = n
    return out


def _fill_samples(session: Session, ds: Dataset, run: Run, items: list[AdviceItem]) -> None:
    """Sample lists from the run's predictions on samples that are still unlabelled, and the
    train suspect counts of relabel advice."""
    unlabelled = and_(Sample.dataset_id == ds.id, Sample.split == "unlabelled", Sample.label.is_(None))
    collect = {i.class_: i for i in items if i.kind == "collect"}
    if collect:
        rows = session.execute(
            select(Prediction.sample_id, Prediction.label, Prediction.probs)
            .join(Sample, Sample.id == Prediction.sample_id)
            .where(Prediction.run_id == run.id, unlabelled, Prediction.label.in_(list(collect)))
        ).all()
        by_class: dict[str, list[dict[str, Any]]] = {c: [] for c in collect}
        for sample_id, label, probs in rows:
            by_class[label].append({"id": sample_id, "probability": float((probs or {}).get(label, 0.0))})
        for c, item in collect.items():
            found = sorted(by_class[c], key=lambda s: (-s["probability"], s["id"]))
            item.samples = found[:TOP_SAMPLES]
            item.numbers["unlabelled_predicted"] = len(found)
    for item in items:
        if item.kind == "relabel":
            c = item.class_
            stored = (run.info or {}).get("train_confusion")
            for p in item.pairs:
                if stored is not None:
                    # As the run read the train labels (a run from before the record counts now).
                    p["train_suspects"] = int(stored.get(c, {}).get(p["given"], 0))
                    continue
                p["train_suspects"] = session.scalar(
                    select(func.count())
                    .select_from(Prediction)
                    .join(Sample, Sample.id == Prediction.sample_id)
                    .where(Prediction.run_id == run.id, Sample.dataset_id == ds.id, Sample.split == "train",
                           Sample.label == c, Prediction.label == p["given"])
                )
        elif item.kind == "confused_pair":
            a, b = item.pairs[0]["a"], item.pairs[0]["b"]
            torn = or_(
                and_(Prediction.confusion_a == a, Prediction.confusion_b == b),
                and_(Prediction.confusion_a == b, Prediction.confusion_b == a),
            )
            base = select(Prediction.sample_id, Prediction.confusion_margin, Prediction.confusion_a, Prediction.confusion_b).join(
                Sample, Sample.id == Prediction.sample_id
            ).where(Prediction.run_id == run.id, unlabelled, torn)
            rows = session.execute(base.order_by(Prediction.confusion_margin, Prediction.sample_id).limit(TOP_SAMPLES)).all()
            item.samples = [
                {"id": r.sample_id, "confusion_margin": float(r.confusion_margin), "top2": [r.confusion_a, r.confusion_b]}
                for r in rows
            ]
            item.numbers["unlabelled_torn"] = session.scalar(
                select(func.count()).select_from(base.subquery())
            )

