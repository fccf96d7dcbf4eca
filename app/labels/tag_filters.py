"""The class filters of a multi-label dataset's listings: `label=cat` (or `predicted=cat`) means
"the tag set holds cat", checked on the stored canonical string (app.datasets.tagsets) with
LIKE patterns; a value holding the separator is a whole set, matched exactly (docs/rest.md).

`missed=cat` and `extra=cat` select the run's tag errors: the given set holds cat and the
predicted set lacks it (a false negative), or the other way round (a false positive). Both
together are a cell of the swaps matrix (app.evaluation.multilabel.swap_counts): extra=a and
missed=b list the samples counted in its entry [a][b]."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, bindparam, or_

from app.datasets.tagsets import SEPARATOR
from app.errors import Invalid
from app.models import Dataset, Prediction

# The tag-error filters: (name, True when the given set holds the tag and the predicted lacks it).
ERROR_FILTERS = (("missed", True), ("extra", False))


def has_tag(column, values) -> Any:
    """`column` (a canonical tag-set string) holds the tag: values are the four patterns of
    tag_patterns (bind parameters or literals)."""
    exact, first, last, middle = values
    return or_(column == exact, column.like(first, escape="\\"), column.like(last, escape="\\"),
               column.like(middle, escape="\\"))


def tag_error(given, predicted, values, missed: bool) -> Any:
    """The tag is in one set and not the other: missed (given holds it, predicted lacks it) or
    extra (predicted holds it, given lacks it). A null set (unlabelled, no prediction) is
    neither: NOT of a null comparison is null, so such a row never matches."""
    holds, lacks = (given, predicted) if missed else (predicted, given)
    return and_(has_tag(holds, values), ~has_tag(lacks, values))


def error_check(name: str) -> Any:
    """The tag-error filter `name` (missed, extra) on an entry of the predictions' indexes,
    its patterns bound as name0..name3."""
    patterns = [bindparam(f"{name}{i}") for i in range(4)]
    return tag_error(Prediction.sample_label, Prediction.label, patterns, dict(ERROR_FILTERS)[name])


def tag_patterns(tag: str) -> tuple[str, str, str, str]:
    """The set is the tag alone, or starts, ends or has it between separators (LIKE-escaped)."""
    esc = tag.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return tag, f"{esc}|%", f"%|{esc}", f"%|{esc}|%"


def by_tag(ds: Dataset, value: str | None) -> bool:
    """A class filter of a multi-label dataset means "the set holds this class" (a value with
    the separator in it is a whole set, matched exactly)."""
    return bool(ds.multilabel) and value is not None and SEPARATOR not in value


def check_error_filters(ds: Dataset, missed: str | None, extra: str | None) -> None:
    """missed and extra name one class of a multi-label dataset: a 422 otherwise."""
    for name, value in (("missed", missed), ("extra", extra)):
        if value is None:
            continue
        if not ds.multilabel:
            message = "filters a multi-label dataset's tag sets; use label and predicted here"
        elif value not in (ds.classes or []):
            message = f"expected one of the dataset's classes {list(ds.classes or [])}"
        else:
            continue
        raise Invalid(f"{name} {message}", errors=[{"field": name, "message": message}])


def entry_checks(label: str | None, predicted: str | None, missed: str | None,
                 extra: str | None) -> tuple[list[str], dict[str, str]]:
    """A multi-label listing's class filters as checks on each index entry (app.labels.queries
    _CHECKS names them) and their bound values."""
    checks: list[str] = []
    values: dict[str, str] = {}
    for name, value in (("label", label), ("predicted", predicted)):
        if value is None:
            continue
        if SEPARATOR in value:
            checks.append(name)
            values[name] = value
        else:
            checks.append(f"{name}_tag")
            values |= {f"{name}_tag{i}": v for i, v in enumerate(tag_patterns(value))}
    for name, value in (("missed", missed), ("extra", extra)):
        if value is not None:
            checks.append(name)
            values |= {f"{name}{i}": v for i, v in enumerate(tag_patterns(value))}
    return checks, values
