"""The duplicates view: a dataset's exact or near duplicate groups (app.datasets.duplicates),
a page at a time, each group's members side by side, and one decision per group.

A group's card posts one decision with the members and versions it showed: keep one member
(the others move to the excluded split), remove the copies in one split, or give every
labelled member one class (app.labels.group_changes, through the audited label service).
A group that changed meanwhile comes back as 409 with the change that got there first and
nothing written; a decided group comes back with an undo of the whole decision. Whoever may
relabel in the review queue may decide here.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.deps import CurrentUser
from app.datasets.duplicates import CURSOR, NEAR_CURSOR, Kind, Scope, duplicate_groups
from app.db import SessionDep
from app.deps import DatasetDep
from app.errors import BadRequest, Invalid, NotFound
from app.ids import MAX_ID, QueryId
from app.labels import group_changes
from app.labels.service import VersionConflict
from app.models import Dataset, Prediction, Run, Sample, Split, User
from app.runs.service import latest_run_id
from app.web.deps import is_htmx
from app.web.issues import duplicates_url
from app.web.review_common import apply_undo, base_context, conflict_line, is_undo_step, label_namer
from app.web.templating import render

router = APIRouter(include_in_schema=False)

PAGE = 20  # groups a page
MAX_SHOWN = 12  # members a card shows side by side (the decision covers them all)
MAX_ACT = 200  # members a card may decide at once
SPLIT_ORDER = [s.value for s in group_changes.REMOVABLE]
ACTIONS = ("keep", "remove", "relabel", "undo")


class GroupForm(BaseModel):
    """What a group's card posts: the decision, the group (kind, key, run), the members and
    versions it showed (id:version, comma separated), and the page it sits on."""

    action: str = ""
    kind: Kind = "exact"
    key: str = Field(default="", max_length=64)
    run: int | None = Field(default=None, ge=1, le=MAX_ID)
    members: str = Field(default="", max_length=MAX_ACT * 24)
    keep: int | None = Field(default=None, ge=1, le=MAX_ID)
    split: str = ""
    label: str = ""
    undo: str = Field(default="", max_length=MAX_ACT * 32)
    scope: Scope = "all"
    cursor: str = Field(default="", max_length=64)

    def decision(self) -> str:
        """The pressed button: a member's keep and a split's remove carry only their value."""
        if self.action:
            return self.action
        return "keep" if self.keep is not None else ("remove" if self.split else "")

    def seen(self) -> dict[int, int]:
        """The members the card showed, with their versions; 422 for a malformed one."""
        out = {}
        for value in filter(None, (v.strip() for v in self.members.split(","))):
            sid, _, ver = value.partition(":")
            if not (sid.isdigit() and ver.isdigit() and 0 < int(sid) <= MAX_ID and 0 < int(ver) <= MAX_ID):
                raise Invalid(f"bad member {value!r}: want id:version", errors=[{"field": "members", "message": "want id:version"}])
            out[int(sid)] = int(ver)
        return out


# --- reading groups ------------------------------------------------------------------------


def _run_of(session: Session, ds: Dataset, run_id: int | None) -> int:
    run = session.get(Run, run_id) if run_id is not None else None
    if run is None or run.dataset_id != ds.id:
        raise NotFound(f"run {run_id} not found in dataset {ds.id}")
    return run.id


def group_members(session: Session, ds: Dataset, kind: str, key: str, run_id: int | None) -> list[Sample]:
    """The group's members as they are now, lowest id first."""
    if kind == "exact":
        if not CURSOR.match(key):
            raise BadRequest("key must be a group's content key")
        query = select(Sample).where(Sample.dataset_id == ds.id, Sample.content_hash == key)
    else:
        if not NEAR_CURSOR.match(key):
            raise BadRequest("key must be a near group's id")
        query = (select(Sample).join(Prediction, Prediction.sample_id == Sample.id)
                 .where(Prediction.run_id == _run_of(session, ds, run_id), Prediction.duplicate_group == int(key),
                        Sample.dataset_id == ds.id))
    return list(session.scalars(query.order_by(Sample.id)))


def _predicted(session: Session, run_id: int | None, ids: list[int]) -> dict[int, str]:
    if run_id is None or not ids:
        return {}
    rows = session.execute(select(Prediction.sample_id, Prediction.label)
                           .where(Prediction.run_id == run_id, Prediction.sample_id.in_(ids)))
    return dict(rows.all())


def _split(s: Sample) -> str:
    return s.split.value if isinstance(s.split, Split) else str(s.split)


def card(ds: Dataset, kind: str, key: str, run_id: int | None, members: list[Sample], predicted: dict[int, str],
         **extra: Any) -> dict[str, Any]:
    """One group's card: its members side by side, what is wrong with it, what it can do."""
    in_use = [s for s in members if _split(s) != Split.excluded.value]
    splits = {_split(s) for s in in_use}
    counts = {name: sum(1 for s in in_use if _split(s) == name) for name in SPLIT_ORDER}
    shown = [{
        "s": s, "split": _split(s), "predicted": predicted.get(s.id),
        "image": f"/api/v1/samples/{s.id}/image" if s.image_blob else None,
        "features": list((s.features or {}).items())[:6],
    } for s in members[:MAX_SHOWN]]
    return {
        "kind": kind, "key": key, "run_id": run_id, "dom_id": f"group-{kind}-{key}",
        "members": shown, "more": max(0, len(members) - MAX_SHOWN), "size": len(members),
        "seen": ",".join(f"{s.id}:{s.version}" for s in members),
        "in_use": len(in_use), "resolved": len(in_use) <= 1,
        "leak": "train" in splits and bool(splits & {"valid", "test"}),
        "conflict": len({s.label for s in in_use if s.label is not None}) > 1,
        "removable": [(name, n) for name, n in counts.items() if n] if len(in_use) > 1 else [],
        "actionable": 1 < len(members) <= MAX_ACT,
        "notice": None, "problem": None, "undo": "", **extra,
    }


def _page(request: Request, session: Session, user: User, ds: Dataset, kind: Kind, scope: Scope, cursor: str | None,
          run: int | None, replaced: dict[str, Any] | None = None, status_code: int = 200) -> Response:
    page = duplicate_groups(session, ds, kind=kind, run_id=run, scope=scope, cursor=cursor or None, limit=PAGE)
    run_id = page.run_id if kind == "near" else latest_run_id(session, ds.id)
    ids = [i for g in page.groups for i in g.sample_ids]
    rows = {s.id: s for s in session.scalars(select(Sample).where(Sample.id.in_(ids)))} if ids else {}
    predicted = _predicted(session, run_id, ids)
    cards = []
    for g in page.groups:
        c = card(ds, kind, g.key, page.run_id, [rows[i] for i in g.sample_ids if i in rows], predicted)
        cards.append(replaced if replaced is not None and replaced["dom_id"] == c["dom_id"] else c)
    embedding = None
    if kind == "near" and page.run_id is not None:
        run_row = session.get(Run, page.run_id)
        embedding = bool(((run_row.info or {}).get("data_issues") or {}).get("embedding"))
    context = {
        **base_context(user, ds, "duplicates"),
        "kind": kind, "scope": scope, "cursor": cursor or "", "run_id": page.run_id, "embedding": embedding,
        "cards": cards, "classes": ds.classes,
        "next_url": duplicates_url(ds.id, kind, scope, page.next_cursor) if page.next_cursor else None,
        "first_url": duplicates_url(ds.id, kind, scope) if cursor else None,
        "kind_urls": {k: duplicates_url(ds.id, k, scope) for k in ("exact", "near")},
        "scope_urls": {s: duplicates_url(ds.id, kind, s) for s in ("all", "leak", "conflict")},
    }
    return render(request, "duplicates.html", context, status_code=status_code)


@router.get("/datasets/{dataset_id}/duplicates")
def duplicates_page(
    request: Request,
    user: CurrentUser,
    ds: DatasetDep,
    session: SessionDep,
    kind: Kind = "exact",
    scope: Scope = "all",
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    run: QueryId = None,
) -> Response:
    """A page of duplicate groups, each with its members side by side and its decisions."""
    return _page(request, session, user, ds, kind, scope, cursor, run)


# --- deciding a group -------------------------------------------------------------------------


@router.post("/datasets/{dataset_id}/duplicates")
def group_action(request: Request, user: CurrentUser, ds: DatasetDep, session: SessionDep,
                 form: Annotated[GroupForm, Form()]) -> Response:
    """Keep one member, remove a split's copies, relabel the group, or undo that: saved whole
    or not at all, against the versions the card showed (409 and nothing written when the
    group moved on). HTMX gets the group's card back; a plain form post, the page with it."""
    form.action = form.decision()
    if form.action not in ACTIONS:
        raise Invalid(f"unknown action {form.action!r}", errors=[{"field": "action", "message": f"expected one of {', '.join(ACTIONS)}"}])
    run_id = _run_of(session, ds, form.run) if form.kind == "near" else None
    members = group_members(session, ds, form.kind, form.key, run_id)
    if not members:
        raise NotFound(f"no {form.kind} duplicate group {form.key!r} in dataset {ds.id}")
    status_code, extra = status.HTTP_200_OK, {}
    try:
        extra = _decide(session, ds, user, form, members)
    except (VersionConflict, group_changes.GroupChanged) as exc:
        session.rollback()
        status_code, extra = status.HTTP_409_CONFLICT, {"problem": _problem(session, ds, exc)}
    else:
        session.commit()
    session.expire_all()
    members = group_members(session, ds, form.kind, form.key, run_id)
    shown_run = run_id if form.kind == "near" else latest_run_id(session, ds.id)
    c = card(ds, form.kind, form.key, run_id, members, _predicted(session, shown_run, [s.id for s in members]), **extra)
    if is_htmx(request):
        context = {**base_context(user, ds, "duplicates"), "g": c, "classes": ds.classes, "kind": form.kind,
                   "scope": form.scope, "cursor": form.cursor}
        return render(request, "duplicates.html", context, block="group_card", status_code=status_code)
    # A plain form post gets the page it came from, this card showing what was done.
    return _page(request, session, user, ds, form.kind, form.scope, form.cursor, run_id, c, status_code)


def _decide(session: Session, ds: Dataset, user: User, form: GroupForm, members: list[Sample]) -> dict[str, Any]:
    """Apply the card's decision; the card's notice and undo (VersionConflict, GroupChanged raised)."""
    seen = form.seen()
    if form.action == "undo":
        steps = form.undo.split()
        if not steps or not all(is_undo_step(t) and t.startswith("e") for t in steps):
            raise Invalid("bad undo steps", errors=[{"field": "undo", "message": "want e<id>v<version> ..."}])
        for token in steps:
            apply_undo(session, user, ds, token)
        return {"notice": f"Undone: {len(steps)} change{'s' if len(steps) != 1 else ''} taken back."}
    if len(members) > MAX_ACT:
        return {"notice": f"This group has {len(members)} members, more than {MAX_ACT}: decide it through the REST API."}
    if form.action == "keep":
        if form.keep is None:
            return {"notice": "Choose the member to keep."}
        result = group_changes.keep_one(session, members, seen, form.keep, user)
        what = f"Kept #{form.keep}"
    elif form.action == "remove":
        if form.split not in SPLIT_ORDER:
            return {"notice": "Choose the split to remove the copies from."}
        result = group_changes.remove_from_split(session, members, seen, Split(form.split), user, form.keep)
        what = f"Removed the {form.split} copies"
    else:
        if not form.label:
            return {"notice": "Choose the class to give the group."}
        result = group_changes.relabel(session, ds, members, seen, form.label, user)
        what = f"Relabelled the group {form.label}"
    changed = [s.id for s, _ in result.changed]
    if form.action == "relabel":
        detail = f"{len(changed)} label{'s' if len(changed) != 1 else ''} changed"
    else:
        detail = ", ".join(f"#{i}" for i in changed) + " moved to excluded" if changed else "nothing to move"
    return {"notice": f"{what}: {detail}.", "undo": " ".join(result.undo_steps())}


def _problem(session: Session, ds: Dataset, exc: Exception) -> str:
    if isinstance(exc, VersionConflict):
        label_name = label_namer(ds)
        line = conflict_line(session, exc.current)
        theirs = line["theirs"]
        who = f" ({theirs.user or theirs.source} set it {label_name(theirs.old_label)} → {label_name(theirs.new_label)})" if theirs else ""
        return (f"Sample #{line['id']} changed since this group was shown{who}: it is now "
                f"{label_name(line['label'])} in {_split(exc.current)}. Nothing was changed; here is the group as it is now.")
    return f"This group changed since it was shown: {exc}. Nothing was changed; here is the group as it is now."
