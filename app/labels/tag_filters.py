"""The class filters of a multi-label dataset's listings: `label=cat` (or `predicted=cat`) means
"the tag set holds cat", checked on the stored canonical string (app.datasets.tagsets) with
LIKE patterns; a value holding the separator is a whole set, matched exactly (docs/rest.md)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_

from app.datasets.tagsets import SEPARATOR
from app.models import Dataset


def has_tag(column, values) -> Any:
    """`column` (a canonical tag-set string) holds the tag: values are the four patterns of
    tag_patterns (bind parameters or literals)."""
    exact, first, last, middle = values
    return or_(column == exact, column.like(first, escape="\\"), column.like(last, escape="\\"),
               column.like(middle, escape="\\"))


def tag_patterns(tag: str) -> tuple[str, str, str, str]:
    """The set is the tag alone, or starts, ends or has it between separators (LIKE-escaped)."""
    esc = tag.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return tag, f"{esc}|%", f"%|{esc}", f"%|{esc}|%"


def by_tag(ds: Dataset, value: str | None) -> bool:
    """A class filter of a multi-label dataset means "the set holds this class" (a value with
    the separator in it is a whole set, matched exactly)."""
    return bool(ds.multilabel) and value is not None and SEPARATOR not in value
