"""The review queue on a multi-label dataset: a sample's tags, what the model says of each,
and the tag set an action saves.

In a multi-label queue the class keys toggle tags in a pending set (the panel's checkboxes),
Enter saves the set, P takes the model's set: the flagged set's `suggested_label` when the run
flagged the sample (its given set with the doubtful tags flipped), else the predicted set.
Saving goes through the same change_sample as a single-label relabel, with the whole set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.datasets import tagsets
from app.labels.schemas import SampleRead, SampleUpdate
from app.web.templating import label_text


def model_set(detail: SampleRead | None) -> str | None:
    """The tag set the model proposes for the sample (canonical string), None without a prediction."""
    if detail is None or detail.prediction is None:
        return None
    p = detail.prediction
    return p.suggested_label if p.suggested_label is not None else p.label


def set_name(label: str | None) -> str:
    """A tag set for people: "cat, bird", "(none)" for the empty set, "unlabelled"."""
    return label_text(label, multilabel=True)


@dataclass
class TagRow:
    """One class of the dataset as the panel shows it for the current sample."""

    cls: str
    key: str | None  # the key that toggles it (classes beyond the keys have none)
    given: bool  # in the sample's current set
    model: bool  # in the model's set
    p: float | None  # the model's probability for it (None: not among the stored top classes)

    @property
    def change(self) -> str | None:
        """What the model suggests for this tag: "add", "remove" or nothing."""
        if self.model and not self.given:
            return "add"
        if self.given and not self.model:
            return "remove"
        return None


def tag_rows(classes: list[str], keys: list[tuple[str, str]], detail: SampleRead | None) -> list[TagRow]:
    """Every class, in the dataset's order, with its key, whether the sample and the model
    carry it, and the model's probability."""
    key_of = {cls: key for key, cls in keys}
    given = set(tagsets.to_list(detail.label) or []) if detail is not None else set()
    proposed = model_set(detail)
    modelled = set(tagsets.to_list(proposed) or []) if proposed is not None else given
    probs = detail.prediction.probs if detail is not None and detail.prediction is not None else {}
    return [TagRow(c, key_of.get(c), c in given, c in modelled, probs.get(c)) for c in classes]


def panel_context(classes: list[str], keys: list[tuple[str, str]], detail: SampleRead | None) -> dict[str, Any]:
    """What the review panel shows of a multi-label sample."""
    rows = tag_rows(classes, keys, detail)
    proposed = model_set(detail)
    return {
        "tags": rows,
        "model_set": proposed,
        "model_set_name": set_name(proposed) if proposed is not None else None,
        "adds": [r.cls for r in rows if r.change == "add"] if proposed is not None else [],
        "removes": [r.cls for r in rows if r.change == "remove"] if proposed is not None else [],
    }


def save_change(tags: list[str]) -> tuple[SampleUpdate, str]:
    """The change saving a pending tag set makes, and the set as a canonical-ish string for a
    conflict's "keep mine" (change_sample checks and canonicalises it)."""
    return SampleUpdate(labels=list(tags)), tagsets.SEPARATOR.join(tags)
