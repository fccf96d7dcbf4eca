"""Label changes with optimistic concurrency: relabel, move, keep, undo, revert, bulk.

A change is one conditional UPDATE (``WHERE version = :expected``): on either database
exactly one writer wins per version and the others see zero rows and get a conflict.
Every label or split change writes a label event and moves the dataset's label version on.
Undo, revert and bulk changes go through that same UPDATE, so none of them can overwrite a
change they did not see.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.datasets import tagsets
from app.datasets.service import bump_label_version
from app.deps import get_row, get_sample
from app.errors import Conflict, Invalid, NotFound
from app.labels import records
from app.labels.claims import release_sample
from app.labels.queries import sample_detail
from app.labels.schemas import SampleRead, SampleUpdate
from app.models import Dataset, LabelEvent, LabelSource, Prediction, Sample, Split, User, utcnow
from app.runs.service import latest_run_id

class VersionConflict(Conflict):
    """The sample moved past the version a change was made against: nothing was written.
    The 409 body carries the sample as it is now (`current`), with its history."""

    def __init__(self, current: Sample, expected: int, current_read: SampleRead | None = None) -> None:
        super().__init__(f"sample {current.id} changed: you sent version {expected}, it is now at {current.version}")
        self.current = current
        self.expected = expected
        self.current_read = current_read

    def body(self) -> dict:
        body = super().body()
        if self.current_read is not None:
            body["current"] = self.current_read.model_dump(mode="json")
        return body


class EventSuperseded(VersionConflict):
    """The event to revert is no longer the sample's latest: reverting it would undo later work."""

    def __init__(self, event: LabelEvent, current: Sample, current_read: SampleRead | None = None) -> None:
        super().__init__(current, current.version, current_read)
        self.event = event
        self.detail = f"sample {current.id} has changed since event {event.id}; send force=true to revert it anyway"


def change_sample(
    session: Session,
    sample_id: int,
    expected_version: int,
    change: SampleUpdate,
    user: User | None,
    source: str,
    *,
    describe: bool = True,
    seconds: float | None = None,
) -> tuple[Sample, LabelEvent | None]:
    """Apply change if the sample is still at expected_version (VersionConflict otherwise);
    returns the sample and the label event written (None when label and split stayed).
    describe=False leaves the conflict's `current_read` out (a bulk change reads it later);
    seconds: how long the person spent on the sample, kept with their annotation."""
    s = get_sample(session, sample_id)
    ds = session.get(Dataset, s.dataset_id)
    fields = change.model_fields_set
    new_label = s.label
    new_split = s.split
    if "label" in fields or "labels" in fields:
        new_label = checked_label(ds, change)
    if "split" in fields and change.split is not None:
        new_split = change.split.value
    if new_label is not None and new_split == Split.unlabelled.value:
        if "split" in fields and change.split == Split.unlabelled:
            raise Invalid(
                "a labelled sample cannot be in the unlabelled split",
                errors=[{"field": "split", "message": "a labelled sample cannot be unlabelled"}],
            )
        # An unlabelled sample that gets a label joins train (a dataset setting, on by default).
        if ds.settings.get("unlabelled_joins_train", True):
            new_split = Split.train.value
    if new_label is None and new_split not in (Split.unlabelled.value, Split.excluded.value):
        raise Invalid(
            f"an unlabelled sample cannot move to {new_split}; give it a label",
            errors=[{"field": "split", "message": f"an unlabelled sample cannot be in {new_split}"}],
        )

    reviewed = s.reviewed if change.reviewed is None else change.reviewed
    if "label" in fields or "labels" in fields:
        reviewed = True  # a label chosen by a person is a reviewed label
    return _write(session, s, expected_version, new_label, new_split, reviewed, user, source, change.reason, describe,
                  seconds)


def _write(
    session: Session,
    s: Sample,
    expected_version: int,
    new_label: str | None,
    new_split: str,
    reviewed: bool,
    user: User | None,
    source: str,
    reason: str | None,
    describe: bool = True,
    seconds: float | None = None,
) -> tuple[Sample, LabelEvent | None]:
    """The one conditional UPDATE every change goes through, plus its label event and the
    person's annotation (docs/annotations.md)."""
    was_reviewed = s.reviewed
    label_changed = new_label != s.label or new_split != s.split
    old_label, old_split = s.label, s.split
    now = utcnow()
    result = session.execute(
        update(Sample)
        .where(Sample.id == s.id, Sample.version == expected_version)
        .values(label=new_label, split=new_split, reviewed=reviewed, version=Sample.version + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 0:
        session.expire(s)
        session.refresh(s)
        raise VersionConflict(s, expected_version, sample_detail(session, s) if describe else None)
    if user is not None:
        release_sample(session, s.id, user.id)  # done with it: their queue moves on
        if reviewed and new_label is not None and source in (LabelSource.annotator, LabelSource.api):
            records.record(session, s.dataset_id, s.id, user.id, new_label, seconds)
        elif was_reviewed and not reviewed:
            records.drop(session, s.id, user.id)  # an undo or revert takes their answer back
    event = None
    if label_changed:
        version = bump_label_version(session, s.dataset_id)
        event = LabelEvent(
            dataset_id=s.dataset_id,
            sample_id=s.id,
            old_label=old_label,
            new_label=new_label,
            old_split=old_split,
            new_split=new_split,
            source=source,
            user_id=user.id if user else None,
            reason=reason,
            label_version=version,
            created_at=now,
        )
        session.add(event)
    session.flush()
    session.expire(s)
    session.refresh(s)
    return s, event


# --- undo and revert ----------------------------------------------------------------------


def get_event(session: Session, event_id: int) -> LabelEvent:
    return get_row(session, LabelEvent, event_id, "label event")


def latest_event_id(session: Session, sample_id: int) -> int | None:
    return session.scalar(select(func.max(LabelEvent.id)).where(LabelEvent.sample_id == sample_id))


def revert_event(
    session: Session,
    event_id: int,
    user: User | None,
    expected_version: int | None = None,
    *,
    force: bool = False,
    source: str = "annotator",
    reason: str | None = "undo",
) -> tuple[Sample, LabelEvent | None]:
    """Restore the label and split a sample had before event_id, as a new change.

    Refused with EventSuperseded when a later event exists (unless force), and with
    VersionConflict when the sample is no longer at expected_version (its current version
    when None). The sample goes back to unreviewed: a reverted label deserves another look.
    """
    event = get_event(session, event_id)
    s = get_sample(session, event.sample_id)
    # Read the version before the latest event: a change after this read fails the UPDATE.
    session.refresh(s)
    expected = s.version if expected_version is None else expected_version
    if not force and latest_event_id(session, s.id) != event.id:
        raise EventSuperseded(event, s, sample_detail(session, s))
    ds = session.get(Dataset, s.dataset_id)
    new_label = event.old_label
    if new_label is not None and not _stored_form(ds, new_label):
        raise Invalid(
            f"cannot restore {new_label!r}: it is no longer one of the dataset's classes",
            errors=[{"field": "label", "message": f"expected one of {ds.classes}"}],
        )
    new_split = event.old_split or s.split
    if new_label is None:
        new_split = Split.unlabelled.value
    elif new_split == Split.unlabelled.value:
        new_split = Split.train.value
    return _write(session, s, expected, new_label, new_split, False, user, source, reason)


def unreview(session: Session, sample_id: int, expected_version: int, user: User | None, source: str = "annotator") -> Sample:
    """Undo a 'keep': the sample goes back into the review queue, its label untouched."""
    return change_sample(session, sample_id, expected_version, SampleUpdate(reviewed=False), user, source)[0]


def undo_change(
    session: Session,
    user: User | None,
    ds: Dataset,
    *,
    version: int,
    event_id: int | None = None,
    sample_id: int | None = None,
) -> Sample:
    """Undo one change from dataset ds's review queue or grid, if the sample is still at `version`.

    A label change (event_id) is reverted as a new change with reason "undo"; a keep
    (sample_id, no event) is un-reviewed. An event or sample of another dataset is 404: the
    undo steps come back from the browser, so they are checked like any id in a request.
    Raises VersionConflict or EventSuperseded.
    """
    if event_id is not None:
        if get_event(session, event_id).dataset_id != ds.id:
            raise NotFound(f"label event {event_id} not found in dataset {ds.id}")
        return revert_event(session, event_id, user, version, source="annotator", reason="undo")[0]
    if sample_id is None:
        raise ValueError("undo_change needs an event_id or a sample_id")
    if get_sample(session, sample_id).dataset_id != ds.id:
        raise NotFound(f"sample {sample_id} not found in dataset {ds.id}")
    return unreview(session, sample_id, version, user)


# --- bulk changes -------------------------------------------------------------------------


@dataclass
class BulkResult:
    """What a bulk change did, sample by sample: nothing is overwritten on a conflict."""

    changed: list[tuple[Sample, LabelEvent]]
    kept: list[Sample]
    conflicts: list[VersionConflict]
    skipped: list[tuple[int, str]]


def bulk_relabel(
    session: Session,
    ds: Dataset,
    items: list[tuple[int, int]],
    user: User | None,
    *,
    label: str | None = None,
    accept_predicted: bool = False,
    run_id: int | None = None,
    source: str = "annotator",
) -> BulkResult:
    """Set `label` (or each sample's predicted class) on (sample_id, expected_version) pairs.

    Each sample goes through the same conditional update as a single change; a sample that
    moved on since its version is reported in conflicts and left as it is.
    """
    if accept_predicted == (label is not None):
        raise Invalid("give either a label or accept_predicted", errors=[{"field": "label", "message": "give a label or accept_predicted"}])
    if label is not None:
        label = checked_label(ds, SampleUpdate(label=label))
    ids = [i for i, _ in items]
    owned = set(session.scalars(select(Sample.id).where(Sample.id.in_(ids), Sample.dataset_id == ds.id))) if ids else set()
    predicted: dict[int, str] = {}
    if accept_predicted:
        run_id = run_id if run_id is not None else latest_run_id(session, ds.id)
        if run_id is None:
            raise Conflict(f"dataset {ds.id} has no finished run to take predictions from; train one first")
        if ids:
            predicted = dict(
                session.execute(
                    select(Prediction.sample_id, Prediction.label).where(
                        Prediction.run_id == run_id, Prediction.sample_id.in_(ids)
                    )
                ).all()
            )
    result = BulkResult([], [], [], [])
    for sample_id, version in items:
        if sample_id not in owned:
            result.skipped.append((sample_id, f"sample {sample_id} is not in dataset {ds.id}"))
            continue
        target = label if label is not None else predicted.get(sample_id)
        if target is None:
            result.skipped.append((sample_id, f"sample {sample_id} has no prediction"))
            continue
        try:
            s, event = change_sample(session, sample_id, version, SampleUpdate(label=target), user, source, describe=False)
        except VersionConflict as conflict:
            result.conflicts.append(conflict)
            continue
        if event is None:
            result.kept.append(s)
        else:
            result.changed.append((s, event))
    return result


def bulk_tag(
    session: Session,
    ds: Dataset,
    items: list[tuple[int, int]],
    user: User | None,
    *,
    add: str | None = None,
    remove: str | None = None,
    source: str = "annotator",
) -> BulkResult:
    """Add one tag to, or remove one from, the tag sets of a multi-label dataset's samples,
    given as (sample_id, expected_version) pairs.

    Each sample's new set is its set at that version with the tag added or removed, written
    through the same conditional update as any change (one label event each); a sample that
    moved on is a conflict, left as it is. A set that already has (or lacks) the tag is kept
    and marked reviewed, as a bulk relabel to the same class is; removing from an unlabelled
    sample is skipped.
    """
    if not ds.multilabel:
        raise Invalid(f"dataset {ds.name!r} is single-label: set a class instead of adding or removing tags",
                      errors=[{"field": "tag", "message": "only multi-label datasets take tags"}])
    if (add is None) == (remove is None):
        raise Invalid("give either a tag to add or one to remove", errors=[{"field": "tag", "message": "give add or remove"}])
    tag = add if add is not None else remove
    if tag not in ds.classes:
        raise _not_a_class(ds, tag)
    ids = [i for i, _ in items]
    rows = session.execute(select(Sample.id, Sample.label, Sample.version)
                           .where(Sample.id.in_(ids), Sample.dataset_id == ds.id)).all() if ids else []
    current = {sid: (label, version) for sid, label, version in rows}
    result = BulkResult([], [], [], [])
    for sample_id, version in items:
        if sample_id not in current:
            result.skipped.append((sample_id, f"sample {sample_id} is not in dataset {ds.id}"))
            continue
        # Read at its version now: if that is not the one shown, the conditional update conflicts.
        label = current[sample_id][0]
        tags = set(tagsets.to_list(label) or [])
        if remove is not None and label is None:
            result.skipped.append((sample_id, f"sample {sample_id} is unlabelled: it has no tag to remove"))
            continue
        tags = tags | {tag} if add is not None else tags - {tag}
        try:
            s, event = change_sample(session, sample_id, version, SampleUpdate(labels=sorted(tags)), user, source,
                                     describe=False)
        except VersionConflict as conflict:
            result.conflicts.append(conflict)
            continue
        if event is None:
            result.kept.append(s)
        else:
            result.changed.append((s, event))
    return result


def checked_label(ds: Dataset, change: SampleUpdate) -> str:
    """The label a change sets (`label` or `labels`), checked against the dataset's classes.

    A multi-label dataset takes the whole tag set as a list (`labels`) or as classes joined by
    "|" (`label`), stored canonical (app.datasets.tagsets); a single-label one takes one class
    in `label` and refuses `labels`. Invalid (422) names the field and the classes expected.
    """
    fields = change.model_fields_set
    if not ds.multilabel:
        if "labels" in fields:
            raise Invalid(f"dataset {ds.name!r} is single-label: send one class as label, not a set as labels",
                          errors=[{"field": "labels", "message": "only multi-label datasets take labels"}])
        if change.label is None or change.label not in ds.classes:
            raise _not_a_class(ds, change.label)
        return change.label
    if "labels" in fields and "label" in fields:
        raise Invalid("send the tag set once: labels (a list) or label (classes joined by \"|\"), not both",
                      errors=[{"field": "labels", "message": "give labels or label, not both"}])
    field = "labels" if "labels" in fields else "label"
    try:
        return tagsets.parse(change.labels if field == "labels" else change.label, ds.classes)
    except tagsets.TagSetError as exc:
        raise Invalid(f"{field}: {exc}", errors=[{"field": field, "message": str(exc)}]) from None


def _stored_form(ds: Dataset, label: str) -> bool:
    """Whether label is one the dataset can hold now: a class, or a multi-label dataset's tag set."""
    return tagsets.is_canonical(label, ds.classes) if ds.multilabel else label in ds.classes


def _not_a_class(ds: Dataset, label: str | None) -> Invalid:
    return Invalid(
        f"label must be one of the dataset's classes {ds.classes}, not {label!r}",
        errors=[{"field": "label", "message": f"expected one of {ds.classes}"}],
    )
