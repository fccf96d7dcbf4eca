"""Grid mode of the review queue: a page of unreviewed samples to select and relabel together.

Bulk actions go through the same bulk_relabel as the REST bulk route (a multi-label dataset's
add and remove tag through bulk_tag), item by item with the version each tile showed; undo
takes back a whole action through undo_change.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.deps import CurrentUser
from app.db import SessionDep
from app.deps import DatasetDep
from app.errors import Invalid
from app.ids import in_range
from app.labels import queue, service
from app.models import Dataset, Sample, User
from app.web.review_common import (
    ORDER_CHOICES,
    SPLIT_CHOICES,
    FilterFields,
    Filters,
    apply_undo,
    base_context,
    conflict_line,
    image_info,
    is_undo_step,
    progress_url,
    resolve_filters,
)
from app.web.templating import render

router = APIRouter(include_in_schema=False)

GRID_PAGE = 48


class GridForm(FilterFields):
    """What grid mode posts: the action, the selected tiles as id:version, and the filters."""

    action: str = ""
    ids: list[str] = Field(default_factory=list)
    set_label: str = ""
    tag: str = Field(default="", description="a multi-label dataset's tag to add to or remove from the selection")
    undo: str = ""
    cursor: str = ""

    def items(self) -> list[tuple[int, int]]:
        """The selection as (sample id, version shown) pairs; 422 for a malformed one."""
        items = []
        for value in self.ids:
            sid, _, ver = value.partition(":")
            if not (sid.isdigit() and ver.isdigit() and in_range(int(sid)) and in_range(int(ver))):
                raise Invalid(f"bad selection {value!r}: want id:version", errors=[{"field": "ids", "message": "want id:version"}])
            items.append((int(sid), int(ver)))
        return items


@router.get("/datasets/{dataset_id}/review/grid")
def grid_page(
    request: Request,
    ds: DatasetDep,
    session: SessionDep,
    user: CurrentUser,
    q: Annotated[FilterFields, Depends()],
    cursor: str | None = None,
) -> Response:
    """A page of unreviewed samples under the filters, to select and relabel together."""
    f, run_id, note = resolve_filters(session, ds, q, user)
    return _grid(request, session, user, ds, f, run_id, cursor, notice=note)


@router.post("/datasets/{dataset_id}/review/grid")
def grid_action(
    request: Request, ds: DatasetDep, session: SessionDep, user: CurrentUser, form: Annotated[GridForm, Form()]
) -> Response:
    """Accept the predictions of, or set one class on, the selected samples (on a multi-label
    dataset, also add or remove one tag); or undo that."""
    f, run_id, _ = resolve_filters(session, ds, form, user)
    cursor = form.cursor
    if form.action == "undo":
        return _grid_undo(request, session, user, ds, f, run_id, cursor, form.undo.split())
    if form.action not in ("accept", "set", "add_tag", "remove_tag"):
        raise Invalid(f"unknown grid action {form.action!r}",
                      errors=[{"field": "action", "message": "expected accept, set, add_tag, remove_tag or undo"}])
    items = form.items()
    if not items:
        return _grid(request, session, user, ds, f, run_id, cursor, notice="Select some samples first.")
    if form.action == "set" and not form.set_label:
        return _grid(request, session, user, ds, f, run_id, cursor, notice="Choose the class to set.")
    if form.action in ("add_tag", "remove_tag") and not form.tag:
        return _grid(request, session, user, ds, f, run_id, cursor, notice="Choose the tag first.")
    was_reviewed = _reviewed_flags(session, ds, [i for i, _ in items])
    if form.action == "add_tag":
        result = service.bulk_tag(session, ds, items, user, add=form.tag)
    elif form.action == "remove_tag":
        result = service.bulk_tag(session, ds, items, user, remove=form.tag)
    elif form.action == "set":
        result = service.bulk_relabel(session, ds, items, user, label=form.set_label)
    else:
        result = service.bulk_relabel(session, ds, items, user, accept_predicted=True, run_id=run_id)
    session.commit()
    tokens = [f"e{e.id}v{s.version}" for s, e in result.changed]
    tokens += [f"k{s.id}v{s.version}" for s in result.kept if not was_reviewed.get(s.id)]
    summary = {
        "action": form.action,
        "label": form.set_label,
        "tag": form.tag,
        "changed": [{"id": s.id, "old": e.old_label, "new": e.new_label} for s, e in result.changed],
        "kept": [s.id for s in result.kept],
        "conflicts": [conflict_line(session, c.current) for c in result.conflicts],
        "skipped": [{"id": i, "why": why} for i, why in result.skipped],
        "undo": " ".join(tokens),
    }
    return _grid(request, session, user, ds, f, run_id, cursor, summary=summary)


def _reviewed_flags(session: Session, ds: Dataset, ids: list[int]) -> dict[int, bool]:
    query = select(Sample.id, Sample.reviewed).where(Sample.id.in_(ids), Sample.dataset_id == ds.id)
    return dict(session.execute(query).all())


def _grid_undo(request, session, user, ds, f, run_id, cursor, tokens: list[str]) -> Response:
    undone, failed = [], []
    for token in tokens:
        if not is_undo_step(token):
            raise Invalid(f"bad undo step {token!r}", errors=[{"field": "undo", "message": "want e<id>v<version> or k<id>v<version>"}])
        try:
            undone.append(apply_undo(session, user, ds, token).id)
        except service.VersionConflict as exc:
            failed.append(conflict_line(session, exc.current))
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
    seconds = request.app.state.settings.claim_seconds
    if f.overlap > 1:
        # Answers are given one sample at a time, blind; a bulk action would set labels outright.
        items, next_cursor = [], None
        notice = notice or f"This queue gathers {f.overlap} answers per sample: answer them one by one in the queue."
    else:
        items, next_cursor = queue.claimed_page(
            session, ds, f.query(cursor=cursor or None, reviewed=False, limit=GRID_PAGE), user, seconds
        )
    ids = [i.id for i in items]
    rows = {s.id: s for s in session.scalars(select(Sample).where(Sample.id.in_(ids)))} if ids else {}
    tiles = [{"s": item, "image": image_info(request, rows[item.id]) if item.image_url else None} for item in items]
    context = {
        **base_context(user, ds, "grid"),
        "f": f,
        "run_id": run_id,
        "orders": ORDER_CHOICES,
        "splits": SPLIT_CHOICES,
        "tiles": tiles,
        "cursor": cursor or "",
        "next_url": f.url(f"/datasets/{ds.id}/review/grid", cursor=next_cursor) if next_cursor else None,
        "first_url": f.url(f"/datasets/{ds.id}/review/grid") if cursor else None,
        "progress_url": progress_url(ds, f),
        "notice": notice,
        "summary": summary,
        "renew_every": max(1, seconds // 3),
        "held": queue.held_by_others(session, ds, f.query(), user) if not items and f.overlap == 1 else 0,
        "multilabel": bool(ds.multilabel),
    }
    return render(request, "review.html", context, block="grid_panel")
