"""What the review queue, grid mode and the history pages share: the filters, the queue's
state carried in hidden fields, undo steps, and the pieces of context every one of them shows.

The queue keeps no server-side session state: where the annotator is (the keyset cursor),
what they skipped, the samples behind and ahead of them and what they can undo travel as
hidden fields in the panel that every action swaps.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.datasets.storage import BlobStore
from app.errors import Invalid, NotFound
from app.ids import in_range
from app.labels import history as label_history
from app.labels import annotations, assignments, queries, service
from app.labels.schemas import SampleRead
from app.labels.tag_filters import check_error_filters
from app.models import Dataset, Sample, Split, User
from app.web.templating import label_text, when

# 1-9, 0, then letters; p and u are taken by accept-prediction and undo.
CLASS_KEYS = [*"1234567890", *(c for c in "abcdefghijklmnopqrstuvwxyz" if c not in "pu")]
ORDER_CHOICES = {
    "priority": "review priority (flagged first)",
    "combined": "combined (out-of-fold + AUM)",
    "loss": "loss",
    "normalized_margin": "normalized margin",
    "aum": "AUM (training margin)",
    "confusion_margin": "confusion margin",
    "entropy": "entropy",
    "self_confidence": "self-confidence",
    "outlier": "outlier (far from its neighbours)",
    "random": "random",
    "id": "import order",
}
SPLIT_CHOICES = [s.value for s in Split] + ["all"]
UNDO_DEPTH = 50
TRAIL_DEPTH = 200
TINY_IMAGE = 128  # images up to this many pixels a side are scaled up with hard pixel edges
_UNDO = re.compile(r"^([eka])(\d+)v(\d+)$")


# --- filters -----------------------------------------------------------------------------


class FilterFields(BaseModel):
    """The queue's filters as the pages' links and forms carry them (empty: the default)."""

    order: str = ""
    split: str = ""
    label: str = ""
    predicted: str = ""
    flagged: str = ""
    assignment: str = ""
    missed: str = ""  # multi-label: a tag the model missed (app.labels.tag_filters)
    extra: str = ""  # multi-label: a tag the model added


@dataclass
class Filters:
    """The queue's ranking and filters, resolved: the REST list's query parameters."""

    order: str
    split: Split | None
    label: str | None
    predicted: str | None
    flagged: bool = False  # only the run's flagged likely label errors
    assignment: int | None = None  # working an assignment's queue (its filters win)
    overlap: int = 1  # answers per sample the queue gathers (docs/annotations.md)
    assignment_name: str | None = None
    missed: str | None = None  # multi-label: the given set holds it, the predicted set lacks it
    extra: str | None = None  # multi-label: the predicted set holds it, the given set lacks it

    def query(self, **kwargs: Any) -> queries.SampleQuery:
        return queries.SampleQuery(
            split=self.split, label=self.label, predicted=self.predicted, order=self.order,
            flagged=True if self.flagged else None, blind=self.overlap > 1, missed=self.missed, extra=self.extra,
            **kwargs
        )

    @property
    def split_value(self) -> str:
        return self.split.value if self.split else "all"

    def params(self) -> dict[str, str]:
        out = {"order": self.order, "split": self.split_value}
        if self.label:
            out["label"] = self.label
        if self.predicted:
            out["predicted"] = self.predicted
        if self.flagged:
            out["flagged"] = "1"
        for name in ("missed", "extra"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        if self.assignment is not None:
            out["assignment"] = str(self.assignment)
        return out

    def url(self, path: str, **extra: str) -> str:
        return f"{path}?{urlencode({**self.params(), **extra})}"


def progress_url(ds: Dataset, f: Filters) -> str:
    """Where the queue pages load their "n of m reviewed" from, once they show."""
    return f.url(f"/datasets/{ds.id}/review/progress")


def resolve_filters(session: Session, ds: Dataset, values: FilterFields,
                    user: User | None = None) -> tuple[Filters, int | None, str | None]:
    """Filters from request values, with defaults, the latest run, and a note when one was
    dropped; an assignment's filters and overlap when the user works one (404 if not theirs)."""
    a = None
    if values.assignment and user is not None:
        if not values.assignment.isdigit() or not in_range(int(values.assignment)):
            raise _invalid("assignment", "an assignment id")
        a = assignments.get(session, ds, int(values.assignment), user)
        af = assignments.filters_of(a)
        values = FilterFields(order=values.order or af.order or "", split=af.split, label=af.label or "",
                              predicted=af.predicted or "", flagged="1" if af.flagged else "")
    f, run_id, note = _resolve(session, ds, values)
    f.overlap = assignments.overlap(ds, a)
    if a is not None:
        f.assignment, f.assignment_name = a.id, a.name
    return f, run_id, note


def _resolve(session: Session, ds: Dataset, values: FilterFields) -> tuple[Filters, int | None, str | None]:
    run_id = queries.latest_run_id(session, ds.id)
    split_value = values.split or Split.train.value
    if split_value not in SPLIT_CHOICES:
        raise _invalid("split", f"one of {', '.join(SPLIT_CHOICES)}")
    chosen_split = None if split_value == "all" else Split(split_value)
    order = values.order
    if not order:
        # Loss needs a label, so an unlabelled pool is ranked by the model's own doubt. Labelled
        # samples go by the review priority (the flagged set by expected gain when the run has
        # embeddings, else lowest self-confidence first; then the combined score), the order that
        # bought the most test accuracy per relabel in bench/results/curation.md; runs from
        # before the priority fall back to combined, then loss.
        if run_id is None:
            order = "id"
        elif chosen_split is Split.unlabelled:
            order = "confusion_margin"
        else:
            order = queries.default_order(session, run_id)
    if order not in queries.ORDERS:
        raise _invalid("order", f"one of {', '.join(queries.ORDERS)}")
    predicted = values.predicted or None
    only_flagged = bool(values.flagged)
    missed, extra = values.missed or None, values.extra or None
    check_error_filters(ds, missed, extra)
    note = None
    if run_id is None and (order in queries.SCORES or predicted or only_flagged or missed or extra):
        note = "No finished run yet, so there are no scores or predictions: samples come in import order."
        order, predicted, only_flagged, missed, extra = "id", None, False, None, None
    f = Filters(order, chosen_split, values.label or None, predicted, only_flagged, missed=missed, extra=extra)
    return f, run_id, note


def _invalid(name: str, expected: str) -> Invalid:
    return Invalid(f"{name} must be {expected}", errors=[{"field": name, "message": f"expected {expected}"}])


# --- the queue's state and undo steps ----------------------------------------------------


@dataclass
class QueueState:
    """Where an annotator is in the queue, carried in the panel's hidden fields."""

    cursor: str | None = None
    back: list[int] = field(default_factory=list)
    fwd: list[int] = field(default_factory=list)
    sample: int | None = None  # a sample revisited with the arrows, instead of the queue head
    undo: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, cursor: str, back: str, fwd: str, sample: int | None, undo: str) -> QueueState:
        return cls(
            cursor=cursor or None,
            back=_ids(back)[-TRAIL_DEPTH:],
            fwd=_ids(fwd)[-TRAIL_DEPTH:],
            sample=sample,
            undo=[t for t in undo.split() if is_undo_step(t)][-UNDO_DEPTH:],
        )

    def fields(self) -> dict[str, str]:
        return {
            "cursor": self.cursor or "",
            "back": ",".join(map(str, self.back[-TRAIL_DEPTH:])),
            "fwd": ",".join(map(str, self.fwd[-TRAIL_DEPTH:])),
            "sample": "" if self.sample is None else str(self.sample),
            "undo": " ".join(self.undo[-UNDO_DEPTH:]),
        }

    def step_forward(self, left: int) -> None:
        """Leave sample `left` behind: it joins the trail, and the view moves to the next one."""
        self.back.append(left)
        self.sample = self.fwd.pop() if self.fwd else None


def _ids(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip().isdigit() and in_range(int(v))]


def is_undo_step(token: str) -> bool:
    """A well-formed undo step whose numbers can name a row."""
    m = _UNDO.match(token)
    return m is not None and in_range(int(m.group(2))) and in_range(int(m.group(3)))


def undo_token(s: Sample, event, was_reviewed: bool) -> str | None:
    """How to undo a change: revert its event, or un-review a keep (None: nothing to undo)."""
    if event is not None:
        return f"e{event.id}v{s.version}"
    return None if was_reviewed else f"k{s.id}v{s.version}"


def apply_undo(session: Session, user: User, ds: Dataset, token: str) -> Sample:
    """Undo one step of dataset ds (VersionConflict or EventSuperseded when it moved on)."""
    kind, ref, version = _UNDO.match(token).groups()
    if kind == "e":
        return service.undo_change(session, user, ds, event_id=int(ref), version=int(version))
    if kind == "a":  # an answer in a second-opinion queue: withdrawn while undecided
        return annotations.take_back(session, ds, int(ref), user)
    return service.undo_change(session, user, ds, sample_id=int(ref), version=int(version))


def undo_sample_id(session: Session, ds: Dataset, token: str) -> int:
    """The sample an undo step changes; 404 when the step is not one of this dataset's."""
    kind, ref, _ = _UNDO.match(token).groups()
    if kind == "e":
        event = service.get_event(session, int(ref))
        dataset_id, sample_id = event.dataset_id, event.sample_id
    else:
        sample_id = int(ref)
        sample = session.get(Sample, sample_id)
        dataset_id = sample.dataset_id if sample is not None else None
    if dataset_id != ds.id:
        raise NotFound(f"undo step {token!r} is not one of dataset {ds.id}'s")
    return sample_id


# --- what the pages show -----------------------------------------------------------------


def class_keys(classes: list[str]) -> list[tuple[str, str]]:
    """(key, class) for the classes that get a key, in the dataset's order.

    A class named by a single key gets that key (digits keep their own digit); the others take
    the free keys in order. Classes beyond the keys are reached through the filterable list.
    """
    own: dict[str, str] = {}
    for cls in classes:
        key = cls.lower()
        # Two classes differing only in case cannot share a key: the first one keeps it.
        if len(cls) == 1 and key in CLASS_KEYS and key not in own.values():
            own[cls] = key
    free = iter(k for k in CLASS_KEYS if k not in own.values())
    out = []
    for cls in classes:
        key = own.get(cls) or next(free, None)
        if key is None:
            continue
        out.append((key, cls))
    return out


def base_context(user: User, ds: Dataset, view: str) -> dict[str, Any]:
    return {"user": user, "nav": "datasets", "ds": ds, "view": view, "label_name": label_namer(ds)}


def label_namer(ds: Dataset) -> Callable[[str | None], str]:
    """label_text for this dataset's labels: a multi-label dataset's tag sets as "cat, dog"."""
    return functools.partial(label_text, multilabel=bool(ds.multilabel))


def probs(detail: SampleRead | None) -> list[tuple[str, float]]:
    if detail is None or detail.prediction is None:
        return []
    return sorted(detail.prediction.probs.items(), key=lambda kv: -kv[1])


def image_info(request: Request, s: Sample) -> dict[str, Any] | None:
    """The image's URL and pixel size (read from its header), so tiny ones scale up crisply."""
    if not s.image_blob:
        return None
    width = height = None
    try:
        from PIL import Image

        with Image.open(BlobStore(request.app.state.settings.blob_dir).path(s.image_blob)) as im:
            width, height = im.size
    except (OSError, ValueError):
        pass
    tiny = width is not None and max(width, height) <= TINY_IMAGE
    return {"url": f"/api/v1/samples/{s.id}/image", "width": width, "height": height, "tiny": tiny}


def latest_change(session: Session, s: Sample) -> str:
    """The sample's latest label change, as a sentence for a conflict notice."""
    history = label_history.sample_history(session, s.id)
    if not history:
        return f"It is now {s.label or 'unlabelled'} (version {s.version})."
    e = history[0]
    who = e.user or e.source
    return f"Latest: {who} set {e.old_label or 'unlabelled'} → {e.new_label or 'unlabelled'} at {when(e.created_at)}."


def conflict_line(session: Session, s: Sample) -> dict[str, Any]:
    """A sample a bulk change or undo could not change, with the change that got there first."""
    history = label_history.sample_history(session, s.id)
    theirs = history[0] if history else None
    return {"id": s.id, "label": s.label, "version": s.version, "theirs": theirs}
