"""The review queue: one sample at a time, keyboard first.

Routes stay thin: the queue's actions go through the same service as the REST PATCH
(change_sample with the version the page showed), undo through undo_change. A request
builds one `ReviewView` (the dataset, its filters and run, where the annotator is) and every
action is a method of it that ends in the panel the page swaps in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from pydantic import Field
from sqlalchemy.orm import Session

from app.auth.deps import CurrentUser
from app.db import SessionDep
from app.deps import DatasetDep
from app.errors import Conflict, Invalid, NotFound
from app.ids import MAX_ID
from app.labels import annotations, claims, queries, queue, service
from app.labels.queue import QueueHead
from app.labels.schemas import SampleUpdate
from app.models import Dataset, Sample, Split, User
from app.web import review_tags
from app.web.issues import outlier_note, twins
from app.web.review_common import (
    CLASS_KEYS,
    ORDER_CHOICES,
    SPLIT_CHOICES,
    FilterFields,
    Filters,
    QueueState,
    apply_undo,
    base_context,
    class_keys,
    image_info,
    latest_change,
    probs,
    progress_url,
    resolve_filters,
    undo_sample_id,
    undo_token,
)
from app.web.templating import render

router = APIRouter(include_in_schema=False)

MOVES = ("prev", "next", "skip")
CHANGES = ("keep", "accept", "set", "save", "mine")  # save, mine: a multi-label queue's tag set
EXCLUDE = "exclude"  # remove from training: the sample moves to the excluded split
FormRowId = Annotated[int | None, Field(ge=1, le=MAX_ID)]


class QueueForm(FilterFields):
    """Everything the queue's panel posts: the action, the sample it was about and the
    version shown, the filters, and the queue's state (see QueueState)."""

    action: str = ""
    to: str = Field(default="", alias="set", description="the class a set action gives")
    choice: str = ""
    current: FormRowId = None
    version: FormRowId = None
    seen_label: str = ""
    cursor: str = ""
    back: str = ""
    fwd: str = ""
    sample: FormRowId = None
    undo: str = ""
    shown_at: float = Field(default=0.0, ge=0, le=1e11, description="when the page showed the sample (epoch seconds)")
    tags: list[str] = Field(default_factory=list, max_length=1000, description="a multi-label queue's pending tag set")
    mine: str = Field(default="", max_length=200, description="the tag set a conflict's keep mine saves")

    def state(self) -> QueueState:
        return QueueState.parse(self.cursor, self.back, self.fwd, self.sample, self.undo)


@dataclass
class ReviewView:
    """One request's view of a dataset's queue; each action ends in `panel()`."""

    request: Request
    session: Session
    user: User
    ds: Dataset
    f: Filters
    run_id: int | None
    st: QueueState = field(default_factory=QueueState)
    _head: tuple[tuple, QueueHead] | None = None

    def head(self) -> QueueHead:
        """The first unreviewed sample from the cursor on that no one else holds, claimed for
        this annotator with the one after it; handed out once per cursor and write."""
        key = (self.st.cursor, tuple(self.st.back))
        if self._head is None or self._head[0] != key:
            query = self.f.query(cursor=self.st.cursor, reviewed=False)
            seconds = claim_seconds(self.request)
            leave_out = tuple(self.st.back)
            self._head = (key, queue.claimed_head(self.session, self.ds, query, self.user, seconds, leave_out))
        return self._head[1]

    def committed(self) -> None:
        """Commit a change and forget the head read before it."""
        self.session.commit()
        self._head = None

    # --- actions ---------------------------------------------------------------------

    def change(self, form: QueueForm, action: str, to: str) -> Response:
        if form.current is None or form.version is None:
            raise Invalid("current and version are required", errors=[{"field": "current", "message": "required"}])
        s = self.session.get(Sample, form.current)
        if s is None or s.dataset_id != self.ds.id:
            raise NotFound(f"sample {form.current} not found in dataset {self.ds.id}")
        seconds = max(0.0, time.time() - form.shown_at) if form.shown_at else None
        if self.ds.multilabel:
            if self.f.overlap > 1:
                return self.panel(notice="Second opinions take one class: answer tag sets in a plain queue.")
            return self.save_tags(s, form, action, seconds)
        if self.f.overlap > 1:
            return self.answer(s, action, to, form.seen_label, seconds)
        if action == "keep":
            if not form.seen_label:
                return self.panel(notice="This sample has no label to keep: choose a class.")
            # Keep what the annotator saw: if it changed meanwhile the version check catches it.
            change, mine = SampleUpdate(reviewed=True), form.seen_label
        elif action == "accept":
            detail = queries.sample_detail(self.session, s, self.run_id)
            if detail.prediction is None:
                return self.panel(notice="This sample has no prediction to accept.")
            change, mine = SampleUpdate(label=detail.prediction.label), detail.prediction.label
        else:
            change, mine = SampleUpdate(label=to), to
        return self.write(s, form.version, change, mine, seconds)

    def write(self, s: Sample, version: int, change: SampleUpdate, mine: str, seconds: float | None) -> Response:
        """Save one change with the version shown; a conflict shows theirs, nothing overwritten."""
        was_reviewed = s.reviewed
        try:
            s, event = service.change_sample(self.session, s.id, version, change, self.user, source="annotator",
                                             seconds=seconds)
        except service.VersionConflict as conflict:
            return self.conflict(conflict.current, mine)
        self.committed()
        token = undo_token(s, event, was_reviewed)
        if token:
            self.st.undo.append(token)
        self.st.step_forward(s.id)
        return self.panel()

    def save_tags(self, s: Sample, form: QueueForm, action: str, seconds: float | None) -> Response:
        """A multi-label queue's change: the pending set (Enter), the model's set (P), or a set
        as text ("a|b": `set`, or a conflict's keep mine); each the whole set, as PATCH takes it."""
        if action == "accept":
            proposed = review_tags.model_set(queries.sample_detail(self.session, s, self.run_id))
            if proposed is None:
                return self.panel(notice="This sample has no prediction to accept.")
            change, mine = SampleUpdate(label=proposed), proposed
        elif action == "mine":
            change, mine = SampleUpdate(label=form.mine), form.mine
        elif action == "set":
            change, mine = SampleUpdate(label=form.to), form.to
        else:  # save (Enter) or keep: the pending set the checkboxes hold
            change, mine = review_tags.save_change(form.tags)
        return self.write(s, form.version, change, mine, seconds)

    def exclude(self, form: QueueForm) -> Response:
        """Remove the sample from training: it moves to the excluded split (audited; U undoes it)."""
        if form.current is None or form.version is None:
            raise Invalid("current and version are required", errors=[{"field": "current", "message": "required"}])
        s = self.session.get(Sample, form.current)
        if s is None or s.dataset_id != self.ds.id:
            raise NotFound(f"sample {form.current} not found in dataset {self.ds.id}")
        if self.f.overlap > 1:
            return self.panel(notice="This queue gathers blind answers: remove samples from training in a plain queue.")
        was_reviewed = s.reviewed
        change = SampleUpdate(split=Split.excluded, reason="removed from training")
        try:
            s, event = service.change_sample(self.session, s.id, form.version, change, self.user, source="annotator")
        except service.VersionConflict as conflict:
            return self.conflict(conflict.current, "", excluding=True)
        self.committed()
        token = undo_token(s, event, was_reviewed)
        if token:
            self.st.undo.append(token)
        self.st.step_forward(s.id)
        return self.panel(notice=f"Sample #{s.id} removed from training (now excluded). U undoes it.")

    def answer(self, s: Sample, action: str, to: str, seen_label: str, seconds: float | None) -> Response:
        """A second-opinion queue (overlap k > 1): keep the answer, leave the sample as it is
        until it has k answers; the k-th decides (docs/annotations.md)."""
        if action == "keep":
            label = seen_label
        elif action == "accept":
            detail = queries.sample_detail(self.session, s, self.run_id)
            label = detail.prediction.label if detail.prediction is not None else ""
        else:
            label = to
        if not label:
            return self.panel(notice="Choose a class for this sample.")
        try:
            done = annotations.annotate(self.session, self.ds, s.id, self.user, label, self.f.overlap, seconds)
        except Conflict:
            self.st.step_forward(s.id)
            return self.panel(notice=f"Sample #{s.id} was decided meanwhile; your answer was not needed.")
        self.committed()
        self.st.undo.append(f"a{s.id}v{done.sample.version}")
        self.st.step_forward(s.id)
        return self.panel(notice=f"Answer kept for sample #{s.id} ({done.answers} of {self.f.overlap}).")

    def move(self, current: int | None, action: str) -> Response:
        if current is None:
            return self.panel()
        st = self.st
        head = self.head()
        at_head = st.sample is None or (head.sample is not None and head.sample.id == st.sample)
        if action == "prev":
            if not st.back:
                return self.panel(notice="This is the first sample of this session.")
            if not at_head:
                st.fwd.append(current)
            st.sample = st.back.pop()
        elif at_head:
            # Skip (or next at the head): the cursor moves past it, so it stays in the queue for later.
            if head.sample is not None and head.sample.id == current:
                st.cursor = head.cursor_after
            st.back.append(current)
            st.sample = None
        else:
            st.step_forward(current)
        return self.panel()

    def undo_last(self) -> Response:
        st = self.st
        if not st.undo:
            return self.panel(notice="Nothing to undo.")
        token = st.undo.pop()
        sample_id = undo_sample_id(self.session, self.ds, token)
        try:
            s = apply_undo(self.session, self.user, self.ds, token)
            self.committed()
            label = s.label if s.label is not None else "unlabelled"
            notice = f"Undone: sample #{s.id} is back to {label} and in the queue again."
        except service.VersionConflict as exc:
            notice = "Could not undo: this sample has changed since. " + latest_change(self.session, exc.current)
        # Show the sample again, whether the undo went through or not.
        if sample_id in st.back:
            del st.back[len(st.back) - 1 - st.back[::-1].index(sample_id)]
        if st.sample is not None and st.sample != sample_id:
            st.fwd.append(st.sample)
        st.sample = sample_id
        return self.panel(notice=notice)

    def conflict(self, current: Sample, mine: str, excluding: bool = False) -> Response:
        """409: someone changed the sample meanwhile. Show their change; offer keep mine (or
        remove it from training after all) or take theirs."""
        detail = queries.sample_detail(self.session, current, self.run_id)
        theirs = detail.history[0] if detail.history else None
        head = self.head()
        if head.sample is None or head.sample.id != current.id:
            self.st.sample = current.id
        return self.panel(conflict={"mine": mine, "theirs": theirs, "current": detail, "exclude": excluding},
                          status_code=409)

    # --- the panel ---------------------------------------------------------------------

    def panel(self, *, notice: str | None = None, conflict: dict[str, Any] | None = None, status_code: int = 200) -> Response:
        st, head = self.st, self.head()
        current = head.sample
        if st.sample is not None:
            if head.sample is not None and head.sample.id == st.sample:
                st.sample = None
            else:
                revisit = self.session.get(Sample, st.sample)
                if revisit is not None and revisit.dataset_id == self.ds.id:
                    current = revisit
                else:
                    st.sample = None
        detail = queries.sample_detail(self.session, current, self.run_id) if current is not None else None
        upcoming = head.upcoming if st.sample is None else head.sample
        classes = self.ds.classes
        context = {
            **base_context(self.user, self.ds, "review"),
            "f": self.f,
            "run_id": self.run_id,
            "orders": ORDER_CHOICES,
            "splits": SPLIT_CHOICES,
            "state": st.fields(),
            "can_undo": bool(st.undo),
            "can_prev": bool(st.back),
            "revisit": st.sample is not None,
            "skipped": st.cursor is not None,
            "restart_url": self.f.url(f"/datasets/{self.ds.id}/review"),
            "sample": detail,
            "image": image_info(self.request, current) if current is not None else None,
            "upcoming_image": image_info(self.request, upcoming) if upcoming is not None and upcoming is not current else None,
            "probs": probs(detail),
            "twins": twins(self.session, detail, current.content_hash) if current is not None else None,
            "outlier": outlier_note(self.session, detail),
            "can_exclude": detail is not None and detail.split != Split.excluded and self.f.overlap == 1,
            "class_keys": class_keys(classes),
            "multilabel": bool(self.ds.multilabel),
            **(review_tags.panel_context(classes, class_keys(classes), detail) if self.ds.multilabel else {}),
            "set_name": review_tags.set_name,
            "more_classes": len(classes) > len(CLASS_KEYS),
            "short_classes": all(len(c) <= 3 for c in classes),
            "progress_url": progress_url(self.ds, self.f),
            "notice": notice,
            "conflict": conflict,
            "renew_every": renew_every(self.request),
            "shown_at": f"{time.time():.3f}",
            "blind": self.f.overlap > 1,
            "held": queue.held_by_others(self.session, self.ds, self.f.query(), self.user) if current is None else 0,
        }
        return render(self.request, "review.html", context, block="review_panel", status_code=status_code)


def claim_seconds(request: Request) -> int:
    return request.app.state.settings.claim_seconds


def renew_every(request: Request) -> int:
    """Seconds between an open queue page's claim renewals: a third of a claim's time, so a
    late or lost renewal or two still finds the claims alive."""
    return max(1, claim_seconds(request) // 3)


@router.post("/datasets/{dataset_id}/review/claims", status_code=204)
def renew_claims(request: Request, ds: DatasetDep, session: SessionDep, user: CurrentUser) -> Response:
    """Keep this annotator's claimed samples in the dataset theirs while the queue page is open."""
    claims.renew(session, ds.id, user.id, claim_seconds(request))
    return Response(status_code=204)


@router.get("/datasets/{dataset_id}/review/progress")
def review_progress(
    request: Request, user: CurrentUser, ds: DatasetDep, session: SessionDep, q: Annotated[FilterFields, Depends()]
) -> Response:
    """How many of the samples under the filters are reviewed. The queue pages load it once
    they show, so that counting (a scan of every sample under the filters) never holds up
    the next sample."""
    f, _, _ = resolve_filters(session, ds, q, user)
    reviewed, total = queue.review_progress(session, ds, f.query())
    return render(request, "_progress.html", {"reviewed": reviewed, "total": total})


@router.get("/datasets/{dataset_id}/review")
def review_page(
    request: Request, ds: DatasetDep, session: SessionDep, user: CurrentUser, q: Annotated[FilterFields, Depends()]
) -> Response:
    """The review queue: the first unreviewed sample under the filters, large, with its actions."""
    f, run_id, note = resolve_filters(session, ds, q, user)
    return ReviewView(request, session, user, ds, f, run_id).panel(notice=note)


@router.post("/datasets/{dataset_id}/review")
def review_action(
    request: Request, ds: DatasetDep, session: SessionDep, user: CurrentUser, form: Annotated[QueueForm, Form()]
) -> Response:
    """One queue action: keep, accept the prediction, set a class, remove from training, skip,
    move, or undo.

    Each change is saved at once with the version the page showed; the panel comes back
    with the next sample. A conflict (the sample changed meanwhile) comes back as 409 with
    the other change and a choice, and nothing is overwritten.
    """
    f, run_id, _ = resolve_filters(session, ds, form, user)
    view = ReviewView(request, session, user, ds, f, run_id, form.state())
    action, to = form.action, form.to
    if action == "choice":
        if not form.choice:
            return view.panel(notice="Choose a class in the list first.")
        to = form.choice
    if to:
        action = "set"
    if action == "undo":
        return view.undo_last()
    if action in MOVES:
        return view.move(form.current, action)
    if action in CHANGES:
        return view.change(form, action, to)
    if action == EXCLUDE:
        return view.exclude(form)
    raise Invalid(f"unknown review action {action!r}", errors=[{"field": "action", "message": f"expected one of {', '.join(('undo', *MOVES, *CHANGES, EXCLUDE))}"}])
