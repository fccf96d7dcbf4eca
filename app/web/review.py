"""The review queue (one sample at a time, keyboard first), grid mode, and the history pages.

Routes stay thin: the queue's actions go through the same service as the REST PATCH
(change_sample with the version the page showed), undo and revert through revert_event,
bulk actions through bulk_relabel. The queue keeps no server-side session state: where the
annotator is (the keyset cursor), what they skipped, the samples behind and ahead of them
and what they can undo travel as hidden fields in the panel that every action swaps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, status
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.deps import CurrentUser
from app.datasets.service import get_dataset
from app.datasets.storage import BlobStore
from app.db import SessionDep, commit_now
from app.labels import service
from app.labels.schemas import SampleRead, SampleUpdate
from app.models import Dataset, Sample, Split, User
from app.web.templating import render, templates
from app.ids import FormId, FormVersion, PathId, QueryId, RequiredFormId, RequiredFormVersion, in_range

router = APIRouter(include_in_schema=False)

FormStr = Annotated[str, Form()]

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
    "random": "random",
    "id": "import order",
}
SPLIT_CHOICES = [s.value for s in Split] + ["all"]
SOURCES = ["annotator", "api", "import", "model"]
GRID_PAGE = 48
HISTORY_PAGE = 50
UNDO_DEPTH = 50
TRAIL_DEPTH = 200
TINY_IMAGE = 128  # images up to this many pixels a side are scaled up with hard pixel edges
_UNDO = re.compile(r"^([ek])(\d+)v(\d+)$")


def _undo_step(token: str) -> bool:
    """A well-formed undo step whose numbers can name a row."""
    m = _UNDO.match(token)
    return m is not None and in_range(int(m.group(2))) and in_range(int(m.group(3)))


# --- filters and queue state -------------------------------------------------------------


@dataclass
class Filters:
    """The queue's ranking and filters: the REST list's query parameters."""

    order: str
    split: Split | None
    label: str | None
    predicted: str | None
    flagged: bool = False  # only the run's flagged likely label errors

    def query(self, **kwargs: Any) -> service.SampleQuery:
        return service.SampleQuery(
            split=self.split, label=self.label, predicted=self.predicted, order=self.order,
            flagged=True if self.flagged else None, **kwargs
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
        return out

    def url(self, path: str, **extra: str) -> str:
        return f"{path}?{urlencode({**self.params(), **extra})}"


@dataclass
class FilterQuery:
    """The queue's filters as the pages' links carry them (empty: the default)."""

    order: str | None = None
    split: str | None = None
    label: str | None = None
    predicted: str | None = None
    flagged: str | None = None


def _filters(
    session: Session,
    ds: Dataset,
    order: str | None,
    split: str | None,
    label: str | None,
    predicted: str | None,
    flagged: str | None = None,
) -> tuple[Filters, int | None, str | None]:
    """Filters from request values, with defaults, the latest run, and a note when one was dropped."""
    run_id = service.latest_run_id(session, ds.id)
    note = None
    split_value = split or Split.train.value
    if split_value not in SPLIT_CHOICES:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"split must be one of {', '.join(SPLIT_CHOICES)}")
    chosen_split = None if split_value == "all" else Split(split_value)
    if not order:
        # Loss needs a label, so an unlabelled pool is ranked by the model's own doubt. Labelled
        # samples go by the review priority (the flagged set, lowest self-confidence first, then
        # the combined score), which bought the most test accuracy per relabel in
        # bench/results/label_errors.md; runs from before it fall back to combined, then loss.
        if run_id is None:
            order = "id"
        elif chosen_split is Split.unlabelled:
            order = "confusion_margin"
        else:
            order = service.default_order(session, run_id)
    if order not in service.ORDERS:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"order must be one of {', '.join(service.ORDERS)}")
    predicted = predicted or None
    only_flagged = bool(flagged)
    if run_id is None and (order in service.SCORES or predicted or only_flagged):
        note = "No finished run yet, so there are no scores or predictions: samples come in import order."
        order, predicted, only_flagged = "id", None, False
    return Filters(order, chosen_split, label or None, predicted, only_flagged), run_id, note


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
            undo=[t for t in undo.split() if _undo_step(t)][-UNDO_DEPTH:],
        )

    def fields(self) -> dict[str, str]:
        return {
            "cursor": self.cursor or "",
            "back": ",".join(map(str, self.back[-TRAIL_DEPTH:])),
            "fwd": ",".join(map(str, self.fwd[-TRAIL_DEPTH:])),
            "sample": "" if self.sample is None else str(self.sample),
            "undo": " ".join(self.undo[-UNDO_DEPTH:]),
        }


def _ids(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip().isdigit() and in_range(int(v))]


def _undo_token(s: Sample, event, was_reviewed: bool) -> str | None:
    """How to undo a change: revert its event, or un-review a keep (None: nothing to undo)."""
    if event is not None:
        return f"e{event.id}v{s.version}"
    return None if was_reviewed else f"k{s.id}v{s.version}"


def _undo(session: Session, user: User, ds: Dataset, token: str) -> Sample:
    kind, ref, version = _UNDO.match(token).groups()
    if kind == "e":
        return service.undo_change(session, user, ds, event_id=int(ref), version=int(version))
    return service.undo_change(session, user, ds, sample_id=int(ref), version=int(version))


def _undo_sample_id(session: Session, ds: Dataset, token: str) -> int:
    """The sample an undo step changes; 404 when the step is not one of this dataset's."""
    kind, ref, _ = _UNDO.match(token).groups()
    if kind == "e":
        event = service.get_event(session, int(ref))
        dataset_id, sample_id = event.dataset_id, event.sample_id
    else:
        sample_id = int(ref)
        dataset_id = service.get_sample(session, sample_id).dataset_id
    if dataset_id != ds.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"undo step {token!r} is not one of dataset {ds.id}'s")
    return sample_id


# --- the queue ---------------------------------------------------------------------------


@router.get("/datasets/{dataset_id}/review")
def review_page(
    request: Request,
    dataset_id: PathId,
    session: SessionDep,
    user: CurrentUser,
    q: Annotated[FilterQuery, Depends()],
) -> Response:
    """The review queue: the first unreviewed sample under the filters, large, with its actions."""
    ds = get_dataset(session, dataset_id)
    f, run_id, note = _filters(session, ds, q.order, q.split, q.label, q.predicted, q.flagged)
    return _queue(request, session, user, ds, f, run_id, QueueState(), notice=note)


@router.post("/datasets/{dataset_id}/review")
def review_action(
    request: Request,
    dataset_id: PathId,
    session: SessionDep,
    user: CurrentUser,
    action: FormStr = "",
    to: Annotated[str, Form(alias="set")] = "",
    choice: FormStr = "",
    current: FormId = None,
    version: FormVersion = None,
    seen_label: FormStr = "",
    order: FormStr = "",
    split: FormStr = "",
    label: FormStr = "",
    predicted: FormStr = "",
    flagged: FormStr = "",
    cursor: FormStr = "",
    back: FormStr = "",
    fwd: FormStr = "",
    sample: FormId = None,
    undo: FormStr = "",
) -> Response:
    """One queue action: keep, accept the prediction, set a class, skip, move, or undo.

    Each change is saved at once with the version the page showed; the panel comes back
    with the next sample. A conflict (the sample changed meanwhile) comes back as 409 with
    the other change and a choice, and nothing is overwritten.
    """
    ds = get_dataset(session, dataset_id)
    f, run_id, _ = _filters(session, ds, order, split, label, predicted, flagged)
    st = QueueState.parse(cursor, back, fwd, sample, undo)
    if action == "choice":
        if not choice:
            return _queue(request, session, user, ds, f, run_id, st, notice="Choose a class in the list first.")
        to = choice
    if to:
        action = "set"

    if action == "undo":
        return _undo_last(request, session, user, ds, f, run_id, st)
    if action in ("prev", "next", "skip"):
        if current is None:
            return _queue(request, session, user, ds, f, run_id, st)
        return _move(request, session, user, ds, f, run_id, st, current, action)
    if action not in ("keep", "accept", "set"):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown review action {action!r}")
    if current is None or version is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "current and version are required")

    s = service.get_sample(session, current)
    if s.dataset_id != ds.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"sample {current} not found in dataset {ds.id}")
    if action == "keep":
        if not seen_label:
            return _queue(request, session, user, ds, f, run_id, st, notice="This sample has no label to keep: choose a class.")
        # Keep what the annotator saw: if it changed meanwhile the version check catches it.
        change, mine = SampleUpdate(reviewed=True), seen_label
    elif action == "accept":
        detail = service.sample_detail(session, s, run_id)
        if detail.prediction is None:
            return _queue(request, session, user, ds, f, run_id, st, notice="This sample has no prediction to accept.")
        change, mine = SampleUpdate(label=detail.prediction.label), detail.prediction.label
    else:
        change, mine = SampleUpdate(label=to), to

    was_reviewed = s.reviewed
    try:
        s, event = service.change_sample(session, s.id, version, change, user, source="annotator")
    except service.VersionConflict as conflict:
        return _conflict(request, session, user, ds, f, run_id, st, conflict.current, mine)
    commit_now(session)
    token = _undo_token(s, event, was_reviewed)
    if token:
        st.undo.append(token)
    _step_forward(st, s.id)
    return _queue(request, session, user, ds, f, run_id, st)


def _step_forward(st: QueueState, left: int) -> None:
    """Leave sample `left` behind: it joins the trail, and the view moves to the next one."""
    st.back.append(left)
    st.sample = st.fwd.pop() if st.fwd else None


def _move(request, session, user, ds, f, run_id, st: QueueState, current: int, action: str) -> Response:
    head = service.queue_head(session, ds, f.query(cursor=st.cursor, reviewed=False))
    at_head = st.sample is None or (head.sample is not None and head.sample.id == st.sample)
    if action == "prev":
        if not st.back:
            return _queue(request, session, user, ds, f, run_id, st, notice="This is the first sample of this session.")
        if not at_head:
            st.fwd.append(current)
        st.sample = st.back.pop()
        return _queue(request, session, user, ds, f, run_id, st)
    if at_head:
        # Skip (or next at the head): the cursor moves past it, so it stays in the queue for later.
        if head.sample is not None and head.sample.id == current:
            st.cursor = head.cursor_after
        st.back.append(current)
        st.sample = None
        return _queue(request, session, user, ds, f, run_id, st)
    _step_forward(st, current)
    return _queue(request, session, user, ds, f, run_id, st)


def _undo_last(request, session, user, ds, f, run_id, st: QueueState) -> Response:
    if not st.undo:
        return _queue(request, session, user, ds, f, run_id, st, notice="Nothing to undo.")
    token = st.undo.pop()
    sample_id = _undo_sample_id(session, ds, token)
    notice = None
    try:
        s = _undo(session, user, ds, token)
        commit_now(session)
        notice = _undone(s)
    except (service.VersionConflict, service.EventSuperseded) as exc:
        s = exc.current
        notice = "Could not undo: this sample has changed since. " + _latest_change(session, s)
    # Show the sample again, whether the undo went through or not.
    if sample_id in st.back:
        del st.back[len(st.back) - 1 - st.back[::-1].index(sample_id)]
    if st.sample is not None and st.sample != sample_id:
        st.fwd.append(st.sample)
    st.sample = sample_id
    return _queue(request, session, user, ds, f, run_id, st, notice=notice)


def _undone(s: Sample) -> str:
    label = s.label if s.label is not None else "unlabelled"
    return f"Undone: sample #{s.id} is back to {label} and in the queue again."


def _latest_change(session: Session, s: Sample) -> str:
    history = service.sample_history(session, s.id)
    if not history:
        return f"It is now {s.label or 'unlabelled'} (version {s.version})."
    e = history[0]
    who = e.user or e.source
    return f"Latest: {who} set {e.old_label or 'unlabelled'} → {e.new_label or 'unlabelled'} at {_when(e.created_at)}."


def _when(value) -> str:
    return templates.env.filters["when"](value)


def _conflict(request, session, user, ds, f, run_id, st: QueueState, current: Sample, mine: str) -> Response:
    """409: someone changed the sample meanwhile. Show their change; offer keep mine or take theirs."""
    detail = service.sample_detail(session, current, run_id)
    theirs = detail.history[0] if detail.history else None
    conflict = {"mine": mine, "theirs": theirs, "current": detail}
    head = service.queue_head(session, ds, f.query(cursor=st.cursor, reviewed=False))
    if head.sample is None or head.sample.id != current.id:
        st.sample = current.id
    return _queue(request, session, user, ds, f, run_id, st, conflict=conflict, status_code=409)


def _queue(
    request: Request,
    session: Session,
    user: User,
    ds: Dataset,
    f: Filters,
    run_id: int | None,
    st: QueueState,
    *,
    notice: str | None = None,
    conflict: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    head = service.queue_head(session, ds, f.query(cursor=st.cursor, reviewed=False))
    current = head.sample
    if st.sample is not None:
        if head.sample is not None and head.sample.id == st.sample:
            st.sample = None
        else:
            revisit = session.get(Sample, st.sample)
            if revisit is not None and revisit.dataset_id == ds.id:
                current = revisit
            else:
                st.sample = None
    detail = service.sample_detail(session, current, run_id) if current is not None else None
    reviewed, total = service.review_progress(session, ds, f.query())
    upcoming = head.upcoming if st.sample is None else head.sample
    context = {
        **_base(user, ds, "review"),
        "f": f,
        "run_id": run_id,
        "orders": ORDER_CHOICES,
        "splits": SPLIT_CHOICES,
        "state": st.fields(),
        "can_undo": bool(st.undo),
        "can_prev": bool(st.back),
        "revisit": st.sample is not None,
        "skipped": st.cursor is not None,
        "restart_url": f.url(f"/datasets/{ds.id}/review"),
        "sample": detail,
        "image": _image(request, current) if current is not None else None,
        "upcoming_image": _image(request, upcoming) if upcoming is not None and upcoming is not current else None,
        "probs": _probs(detail),
        "class_keys": class_keys(ds.classes),
        "more_classes": len(ds.classes) > len(CLASS_KEYS),
        "short_classes": all(len(c) <= 3 for c in ds.classes),
        "reviewed": reviewed,
        "total": total,
        "notice": notice,
        "conflict": conflict,
    }
    return render(request, "review.html", context, block="review_panel", status_code=status_code)


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


def _base(user: User, ds: Dataset, view: str) -> dict[str, Any]:
    return {"user": user, "nav": "datasets", "ds": ds, "view": view, "label_name": _label_name}


def _label_name(label: str | None) -> str:
    return label if label is not None else "unlabelled"


def _probs(detail: SampleRead | None) -> list[tuple[str, float]]:
    if detail is None or detail.prediction is None:
        return []
    return sorted(detail.prediction.probs.items(), key=lambda kv: -kv[1])


def _image(request: Request, s: Sample) -> dict[str, Any] | None:
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


# --- grid mode ---------------------------------------------------------------------------


@router.get("/datasets/{dataset_id}/review/grid")
def grid_page(
    request: Request,
    dataset_id: PathId,
    session: SessionDep,
    user: CurrentUser,
    q: Annotated[FilterQuery, Depends()],
    cursor: str | None = None,
) -> Response:
    """A page of unreviewed samples under the filters, to select and relabel together."""
    ds = get_dataset(session, dataset_id)
    f, run_id, note = _filters(session, ds, q.order, q.split, q.label, q.predicted, q.flagged)
    return _grid(request, session, user, ds, f, run_id, cursor, notice=note)


@router.post("/datasets/{dataset_id}/review/grid")
def grid_action(
    request: Request,
    dataset_id: PathId,
    session: SessionDep,
    user: CurrentUser,
    action: FormStr = "",
    ids: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies defaults
    set_label: FormStr = "",
    undo: FormStr = "",
    order: FormStr = "",
    split: FormStr = "",
    label: FormStr = "",
    predicted: FormStr = "",
    flagged: FormStr = "",
    cursor: FormStr = "",
) -> Response:
    """Accept the predictions of, or set one class on, the selected samples; or undo that."""
    ds = get_dataset(session, dataset_id)
    f, run_id, _ = _filters(session, ds, order, split, label, predicted, flagged)
    if action == "undo":
        return _grid_undo(request, session, user, ds, f, run_id, cursor, undo.split())
    if action not in ("accept", "set"):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown grid action {action!r}")
    items = []
    for value in ids:
        sid, _, ver = value.partition(":")
        if not (sid.isdigit() and ver.isdigit() and in_range(int(sid)) and in_range(int(ver))):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"bad selection {value!r}: want id:version")
        items.append((int(sid), int(ver)))
    if not items:
        return _grid(request, session, user, ds, f, run_id, cursor, notice="Select some samples first.")
    if action == "set":
        if not set_label:
            return _grid(request, session, user, ds, f, run_id, cursor, notice="Choose the class to set.")
        was_reviewed = _reviewed_flags(session, ds, [i for i, _ in items])
        result = service.bulk_relabel(session, ds, items, user, label=set_label)
    else:
        was_reviewed = _reviewed_flags(session, ds, [i for i, _ in items])
        result = service.bulk_relabel(session, ds, items, user, accept_predicted=True, run_id=run_id)
    commit_now(session)
    tokens = [f"e{e.id}v{s.version}" for s, e in result.changed]
    tokens += [f"k{s.id}v{s.version}" for s in result.kept if not was_reviewed.get(s.id)]
    summary = {
        "action": "accept" if action == "accept" else "set",
        "label": set_label,
        "changed": [{"id": s.id, "old": e.old_label, "new": e.new_label} for s, e in result.changed],
        "kept": [s.id for s in result.kept],
        "conflicts": [_conflict_line(session, s) for s in result.conflicts],
        "skipped": [{"id": i, "why": why} for i, why in result.skipped],
        "undo": " ".join(tokens),
    }
    return _grid(request, session, user, ds, f, run_id, cursor, summary=summary)


def _reviewed_flags(session: Session, ds: Dataset, ids: list[int]) -> dict[int, bool]:
    query = select(Sample.id, Sample.reviewed).where(Sample.id.in_(ids), Sample.dataset_id == ds.id)
    return dict(session.execute(query).all())


def _conflict_line(session: Session, s: Sample) -> dict[str, Any]:
    history = service.sample_history(session, s.id)
    theirs = history[0] if history else None
    return {"id": s.id, "label": s.label, "version": s.version, "theirs": theirs}


def _grid_undo(request, session, user, ds, f, run_id, cursor, tokens: list[str]) -> Response:
    undone, failed = [], []
    for token in tokens:
        if not _undo_step(token):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"bad undo step {token!r}")
        try:
            undone.append(_undo(session, user, ds, token).id)
        except (service.VersionConflict, service.EventSuperseded) as exc:
            failed.append(_conflict_line(session, exc.current))
    summary = {"action": "undo", "undone": undone, "conflicts": failed, "skipped": [], "undo": ""}
    return _grid(request, session, user, ds, f, run_id, cursor or None, summary=summary)


def _grid(
    request: Request,
    session: Session,
    user: User,
    ds: Dataset,
    f: Filters,
    run_id: int | None,
    cursor: str | None,
    *,
    notice: str | None = None,
    summary: dict[str, Any] | None = None,
) -> Response:
    items, next_cursor, _ = service.list_samples(
        session, ds, f.query(cursor=cursor or None, reviewed=False, limit=GRID_PAGE)
    )
    reviewed, total = service.review_progress(session, ds, f.query())
    rows = {s.id: s for s in _samples(session, [i.id for i in items])}
    tiles = [
        {"s": item, "image": _image(request, rows[item.id]) if item.image_url else None}
        for item in items
    ]
    context = {
        **_base(user, ds, "grid"),
        "f": f,
        "run_id": run_id,
        "orders": ORDER_CHOICES,
        "splits": SPLIT_CHOICES,
        "tiles": tiles,
        "cursor": cursor or "",
        "next_url": f.url(f"/datasets/{ds.id}/review/grid", cursor=next_cursor) if next_cursor else None,
        "first_url": f.url(f"/datasets/{ds.id}/review/grid") if cursor else None,
        "reviewed": reviewed,
        "total": total,
        "notice": notice,
        "summary": summary,
    }
    return render(request, "review.html", context, block="grid_panel")


def _samples(session: Session, ids: list[int]) -> list[Sample]:
    return list(session.scalars(select(Sample).where(Sample.id.in_(ids)))) if ids else []


# --- history -----------------------------------------------------------------------------


@router.get("/samples/{sample_id}/history")
def sample_history_page(request: Request, sample_id: PathId, session: SessionDep, user: CurrentUser) -> Response:
    """Who changed this sample's label and split, and when; each change can be reverted."""
    return _sample_history(request, session, user, service.get_sample(session, sample_id))


@router.post("/samples/{sample_id}/history/revert")
def revert_from_sample_history(
    request: Request,
    sample_id: PathId,
    session: SessionDep,
    user: CurrentUser,
    event_id: RequiredFormId,
    version: RequiredFormVersion,
    force: FormStr = "",
) -> Response:
    s = service.get_sample(session, sample_id)
    event = service.get_event(session, event_id)
    if event.sample_id != s.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"label event {event_id} is not one of sample {sample_id}'s")
    outcome = _revert(session, user, event_id, version, force == "true")
    s = service.get_sample(session, sample_id)
    return _sample_history(request, session, user, s, outcome=outcome, status_code=outcome["status"])


def _revert(session: Session, user: User, event_id: int, version: int, force: bool) -> dict[str, Any]:
    """Revert through revert_event; the outcome is a message and, when refused, what to do next."""
    try:
        s, _ = service.revert_event(session, event_id, user, version, force=force, source="annotator", reason="revert")
        commit_now(session)
    except service.EventSuperseded as exc:
        return {
            "status": 409,
            "kind": "superseded",
            "event_id": event_id,
            "version": exc.current.version,
            "sample_id": exc.current.id,
            "message": f"Sample #{exc.current.id} has changed since event #{event_id}: reverting it also undoes the later changes.",
        }
    except service.VersionConflict as exc:
        return {
            "status": 409,
            "kind": "moved",
            "event_id": event_id,
            "sample_id": exc.current.id,
            "message": f"Sample #{exc.current.id} changed while you were looking; here is its history now. "
            + _latest_change(session, exc.current),
        }
    label = s.label if s.label is not None else "unlabelled"
    return {"status": 200, "kind": "done", "event_id": event_id, "sample_id": s.id,
            "message": f"Reverted event #{event_id}: sample #{s.id} is {label} ({s.split}) again."}


def _sample_history(
    request: Request, session: Session, user: User, s: Sample, *, outcome: dict | None = None, status_code: int = 200
) -> Response:
    ds = session.get(Dataset, s.dataset_id)
    detail = service.sample_detail(session, s)
    context = {
        **_base(user, ds, "history"),
        "page": "sample",
        "sample": detail,
        "image": _image(request, s),
        "events": detail.history or [],
        "outcome": outcome,
    }
    return render(request, "history.html", context, block="sample_history_panel", status_code=status_code)


@router.get("/datasets/{dataset_id}/history")
def dataset_history_page(
    request: Request,
    dataset_id: PathId,
    session: SessionDep,
    user: CurrentUser,
    who: Annotated[str | None, Query(alias="user")] = None,
    source: str | None = None,
    before: QueryId = None,
) -> Response:
    """The dataset's latest label events, newest first, by user and source."""
    ds = get_dataset(session, dataset_id)
    return _dataset_history(request, session, user, ds, who or None, source or None, before)


@router.post("/datasets/{dataset_id}/history/revert")
def revert_from_dataset_history(
    request: Request,
    dataset_id: PathId,
    session: SessionDep,
    user: CurrentUser,
    event_id: RequiredFormId,
    version: RequiredFormVersion,
    force: FormStr = "",
    who: Annotated[str, Form(alias="user")] = "",
    source: FormStr = "",
    before: FormId = None,
) -> Response:
    ds = get_dataset(session, dataset_id)
    if service.get_event(session, event_id).dataset_id != ds.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"label event {event_id} not found in dataset {ds.id}")
    outcome = _revert(session, user, event_id, version, force == "true")
    return _dataset_history(
        request, session, user, ds, who or None, source or None, before, outcome=outcome, status_code=outcome["status"]
    )


def _dataset_history(
    request: Request,
    session: Session,
    user: User,
    ds: Dataset,
    who: str | None,
    source: str | None,
    before: int | None,
    *,
    outcome: dict | None = None,
    status_code: int = 200,
) -> Response:
    events, next_before = service.dataset_events(
        session, ds, username=who, source=source, before=before, limit=HISTORY_PAGE
    )
    params = {k: v for k, v in (("user", who), ("source", source)) if v}
    base = f"/datasets/{ds.id}/history"
    context = {
        **_base(user, ds, "history"),
        "page": "dataset",
        "events": events,
        "who": who or "",
        "source": source or "",
        "before": before,
        "users": service.event_users(session, ds),
        "sources": SOURCES,
        "next_url": f"{base}?{urlencode({**params, 'before': next_before})}" if next_before else None,
        "first_url": f"{base}?{urlencode(params)}" if before else None,
        "outcome": outcome,
    }
    return render(request, "history.html", context, block="dataset_history_panel", status_code=status_code)
