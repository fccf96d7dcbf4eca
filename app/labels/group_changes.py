"""One decision about a duplicate group (app.datasets.duplicates): keep one member and move
the others out of training, remove a split's copies, or give every labelled member one class.

Each member goes through change_sample (app.labels.service): the conditional UPDATE on the
version the page showed, with its label event, so every step is audited and revertible from
the history. A group is decided as a whole: the members and versions the page showed are
checked first, and any member that moved on meanwhile raises VersionConflict (GroupChanged
when members joined or left); the caller rolls the transaction back, so a group is changed
entirely or not at all and nothing anyone else did is overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.errors import Conflict, Invalid
from app.labels.schemas import SampleUpdate
from app.labels.service import VersionConflict, change_sample
from app.models import Dataset, LabelEvent, LabelSource, Sample, Split, User

SOURCE = LabelSource.annotator.value
# The splits a copy can be removed from (excluded is where removed copies go).
REMOVABLE = (Split.train, Split.valid, Split.test, Split.unlabelled)


class GroupChanged(Conflict):
    """The group's members are not the ones the page showed (a sample joined or left it)."""

    def __init__(self, shown: set[int], now: set[int]) -> None:
        joined, left = sorted(now - shown), sorted(shown - now)
        parts = []
        if joined:
            parts.append("joined: " + ", ".join(f"#{i}" for i in joined))
        if left:
            parts.append("left: " + ", ".join(f"#{i}" for i in left))
        super().__init__("the group changed since it was shown (" + "; ".join(parts) + ")")
        self.joined, self.left = joined, left


@dataclass
class GroupResult:
    """What a group decision wrote: the changes (each with its label event) and the members
    it left as they were."""

    changed: list[tuple[Sample, LabelEvent]] = field(default_factory=list)
    unchanged: list[Sample] = field(default_factory=list)

    def undo_steps(self) -> list[str]:
        """The review queue's undo steps (app.web.review_common) that take the decision back."""
        return [f"e{e.id}v{s.version}" for s, e in self.changed]


def check_seen(members: list[Sample], seen: dict[int, int]) -> None:
    """Refuse a decision made on a stale view of the group: GroupChanged when the members
    differ from those shown, VersionConflict for the first member whose version moved on."""
    now = {s.id for s in members}
    if now != set(seen):
        raise GroupChanged(set(seen), now)
    for s in members:
        if s.version != seen[s.id]:
            raise VersionConflict(s, seen[s.id])


def _exclude(session, members: list[Sample], seen: dict[int, int], targets: set[int], user: User | None,
             reason: str) -> GroupResult:
    result = GroupResult()
    for s in members:
        if s.id not in targets or s.split == Split.excluded:
            result.unchanged.append(s)
            continue
        s, event = change_sample(session, s.id, seen[s.id], SampleUpdate(split=Split.excluded, reason=reason), user,
                                 SOURCE, describe=False)
        result.changed.append((s, event))
    return result


def keep_one(session, members: list[Sample], seen: dict[int, int], keep: int, user: User | None) -> GroupResult:
    """Keep member `keep` as it is; every other member moves to the excluded split."""
    check_seen(members, seen)
    if keep not in seen:
        raise _invalid("keep", f"sample {keep} is not a member of this group")
    others = {s.id for s in members if s.id != keep}
    return _exclude(session, members, seen, others, user, f"duplicate group: kept #{keep}")


def remove_from_split(session, members: list[Sample], seen: dict[int, int], split: Split, user: User | None,
                      keep: int | None = None) -> GroupResult:
    """Move the members in `split` to excluded, except the kept one: `keep` when given, else,
    when every member still in use is in that split, the lowest id (a group never loses its
    last copy by this action; keep_one says which copy stays)."""
    check_seen(members, seen)
    if split not in REMOVABLE:
        raise _invalid("split", f"expected one of {', '.join(s.value for s in REMOVABLE)}")
    if keep is not None and keep not in seen:
        raise _invalid("keep", f"sample {keep} is not a member of this group")
    in_split = [s for s in members if s.split == split]
    in_use = [s for s in members if s.split != Split.excluded]
    if keep is None and in_split and len(in_split) == len(in_use):
        keep = min(s.id for s in in_split)
    targets = {s.id for s in in_split if s.id != keep}
    return _exclude(session, members, seen, targets, user, f"duplicate group: removed from {split.value}")


def relabel(session, ds: Dataset, members: list[Sample], seen: dict[int, int], label: str,
            user: User | None) -> GroupResult:
    """Give every labelled member `label` (reviewed, as a person's label is)."""
    if label not in ds.classes:
        raise _invalid("label", f"expected one of {ds.classes}")
    check_seen(members, seen)
    result = GroupResult()
    for s in members:
        if s.label is None:
            result.unchanged.append(s)
            continue
        s, event = change_sample(session, s.id, seen[s.id],
                                 SampleUpdate(label=label, reason="duplicate group relabelled"), user, SOURCE,
                                 describe=False)
        if event is None:
            result.unchanged.append(s)
        else:
            result.changed.append((s, event))
    return result


def _invalid(name: str, message: str) -> Invalid:
    return Invalid(f"{name}: {message}", errors=[{"field": name, "message": message}])
