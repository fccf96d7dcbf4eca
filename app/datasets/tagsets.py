"""Multi-label tag sets: parse, check and write the classes of a sample of a multi-label dataset.

A multi-label sample's tag set is stored in the sample's one label column, in canonical
form: its tags in the dataset's class order, each once, joined by "|"; the empty set ("none
of the classes") is the empty string, and None still means unlabelled. So the label
indexes, the triggers that mirror a sample's label onto its predictions, snapshots and label
events all work on tag sets unchanged, and two equal sets are always the same string.

`parse` takes a list of class names or a "|"-joined string (a REST body, one cell) and
returns the canonical string, or raises `TagSetError` naming the class it does not know and
the expected ones; `to_list` and `to_string` go between the two forms. `parse_column` does
the same to a whole Arrow column of an import, and `lists_from_strings` turns canonical
strings back into list<string> for an export.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SEPARATOR = "|"
MAX_LENGTH = 200  # the label columns are VARCHAR(200): a canonical set must fit


class TagSetError(ValueError):
    """A tag set that cannot be stored: an unknown class, a blank tag, a value of another type."""


def class_name_problems(classes: Iterable[str]) -> list[str]:
    """Why these class names cannot be a multi-label dataset's: one message per name holding "|"."""
    return [f"class name {c!r} contains {SEPARATOR!r}, which separates the classes of a multi-label sample"
            for c in classes if SEPARATOR in c]


def _unknown(tag: str, classes: Sequence[str]) -> str:
    return f"unknown class {tag!r}; the dataset's classes are {list(classes)}"


def parse(value: Sequence[str] | str | None, classes: Sequence[str]) -> str:
    """The canonical string of a tag set given as a list of class names or a "|"-joined string.

    Tags are trimmed, repeats dropped and the rest put in class order; "" and [] are the
    empty set. Raises TagSetError for None, a tag that is not a string, a blank tag, a class
    the dataset does not have (naming it and the expected ones) or a set too long to store.
    """
    if value is None:
        raise TagSetError("a tag set is a list of class names (the empty list: none of the classes), not null")
    if isinstance(value, str):
        tags = value.split(SEPARATOR) if value.strip() else []
    elif isinstance(value, (list, tuple)):
        tags = list(value)
    else:
        raise TagSetError(f"a tag set is a list of class names, not {type(value).__name__}")
    index = {c: i for i, c in enumerate(classes)}
    chosen: set[int] = set()
    for tag in tags:
        if not isinstance(tag, str):
            raise TagSetError(f"class names are strings, not {tag!r}")
        tag = tag.strip()
        if not tag:
            raise TagSetError(f"a blank class name in {value!r}")
        if tag not in index:
            raise TagSetError(_unknown(tag, classes))
        chosen.add(index[tag])
    out = SEPARATOR.join(classes[i] for i in sorted(chosen))
    if len(out) > MAX_LENGTH:
        raise TagSetError(f"the tag set is {len(out)} characters joined by {SEPARATOR!r}; at most {MAX_LENGTH} fit")
    return out


def to_string(tags: Iterable[str], classes: Sequence[str]) -> str:
    """The canonical string of a list of class names (see parse)."""
    return parse(list(tags), classes)


def to_list(label: str | None) -> list[str] | None:
    """The tags of a canonical string, in class order; [] for the empty set, None for unlabelled."""
    if label is None:
        return None
    return label.split(SEPARATOR) if label else []


def is_canonical(label: str | None, classes: Sequence[str]) -> bool:
    """Whether label is a stored form of a tag set of these classes (None: unlabelled, is one)."""
    if label is None:
        return True
    try:
        return parse(label, classes) == label
    except TagSetError:
        return False


# --------------------------------------------------------------------------- Arrow columns


@dataclass
class ParsedColumn:
    """An import's label column as canonical tag sets."""

    labels: pa.Array  # canonical strings; null where the row gives no label (see blank)
    blank: np.ndarray  # rows whose cell was an empty string: unlabelled or the empty set, by split
    classes: list[str]  # the dataset's classes, or the file's (sorted) when the dataset has none
    problems: dict[int, str] = field(default_factory=dict)  # 0-based row -> its first problem


def _as_lists(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """A label column as list<string> (null where no label) and the mask of blank string cells."""
    n = len(arr)
    t = arr.type
    if pa.types.is_null(t):
        return pa.nulls(n, pa.list_(pa.string())), np.zeros(n, dtype=bool)
    if pa.types.is_dictionary(t):
        arr = pc.cast(arr, t.value_type)
        t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        arr = pc.cast(arr, pa.string())
        blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(arr), ""), True)
        text = pc.if_else(blank, pa.scalar(None, pa.string()), arr)
        return pc.split_pattern(text, SEPARATOR), blank.to_numpy(zero_copy_only=False)
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
        pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type) or pa.types.is_null(t.value_type)
    ):
        return pc.cast(arr, pa.list_(pa.string())), np.zeros(n, dtype=bool)
    raise TagSetError(f"column 'label' has type {t}; a multi-label dataset takes a list of class names, "
                      f"or text with the classes separated by {SEPARATOR!r}")


def parse_column(arr: pa.Array | pa.ChunkedArray, classes: Sequence[str]) -> ParsedColumn:
    """Every row's tag set, canonical, checked against classes (when the dataset has none yet,
    the file's tags sorted become them); problems names each row's first wrong tag. The
    caller checks the sets' length (MAX_LENGTH), as it does every label's.

    Raises TagSetError when the column's type can hold no tag set (numbers, structs).
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    lists, blank = _as_lists(arr)
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(lists)
    problems: dict[int, str] = {}

    def problem(rows: np.ndarray, message) -> None:
        for k in np.flatnonzero(rows):
            problems.setdefault(int(parents[k]), message(int(k)))

    null_tag = ~pc.is_valid(values).to_numpy(zero_copy_only=False)
    problem(null_tag, lambda k: "a class name is null; a tag set is a list of class names")
    values = pc.utf8_trim_whitespace(pc.fill_null(values, ""))
    blank_tag = ~null_tag & pc.equal(values, "").to_numpy(zero_copy_only=False)
    problem(blank_tag, lambda k: "a blank class name in the tag set")
    ok = ~null_tag & ~blank_tag
    classes = list(classes)
    if not classes:
        piped = pc.match_substring(values, SEPARATOR).to_numpy(zero_copy_only=False) & ok
        problem(piped, lambda k: class_name_problems([values[k].as_py()])[0])
        ok &= ~piped
        classes = sorted(set(pc.filter(values, pa.array(ok)).to_pylist()))
    index = pc.fill_null(pc.index_in(values, value_set=pa.array(classes, pa.string())), -1)
    index = index.to_numpy(zero_copy_only=False).astype(np.int64)
    unknown = ok & (index < 0)
    problem(unknown, lambda k: _unknown(values[k].as_py(), classes))
    ok &= ~unknown
    # Canonical order: by row, then by class index, each (row, class) pair once.
    rows, idx = parents[ok].astype(np.int64), index[ok]
    order = np.lexsort((idx, rows))
    rows, idx = rows[order], idx[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (idx[1:] != idx[:-1])
    rows, idx = rows[first], idx[first]
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
    names = pc.take(pa.array(classes, pa.string()), pa.array(idx))
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), names), SEPARATOR)
    labels = pc.if_else(pc.is_valid(lists), joined, pa.scalar(None, pa.string()))
    return ParsedColumn(labels=labels, blank=blank, classes=classes, problems=problems)


def lists_from_strings(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Canonical strings as list<string>: "a|b" -> ["a", "b"], "" -> [], null -> null."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    valid = pc.is_valid(arr)
    text = pc.if_else(pc.equal(pc.fill_null(arr, ""), ""), pa.scalar(None, pa.string()), arr)
    split = pc.split_pattern(text, SEPARATOR)
    lengths = pc.fill_null(pc.list_value_length(split), 0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(arr) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    mask = pc.invert(valid)
    return pa.ListArray.from_arrays(pa.array(offsets), pc.list_flatten(split), type=pa.list_(pa.string()), mask=mask)


def indicator(labels: Iterable, classes: list[str]) -> np.ndarray:
    """(n, k) 0/1 matrix of canonical tag-set strings; an unlabelled row (None, NaN) is all 0."""
    index = {c: j for j, c in enumerate(classes)}
    labels = list(labels)
    out = np.zeros((len(labels), len(classes)), dtype=np.int64)
    for i, label in enumerate(labels):
        # None (unlabelled) may have become NaN on its way through pandas.
        for tag in (to_list(label) if isinstance(label, str) else None) or []:
            out[i, index[tag]] = 1
    return out
