"""The rules an imported file must pass, checked on whole columns, and the errors by row.

`Errors` collects every broken rule as (row, field, message) and raises `ImportFailed`
with the first ones in row order; `prepare` turns a parsed table into the `Prepared`
columns the writer needs, or records why it cannot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets import tagsets
from app.errors import Invalid
from app.models import Dataset, Sample, Split

SPLITS = [s.value for s in Split]
# The splits whose samples must have a label: in them a multi-label file's empty cell is the empty set.
LABELLED_SPLITS = [Split.train.value, Split.valid.value, Split.test.value]
# What an import reads of every file; an export's external_id stands in for a missing id.
KEY_COLUMNS = ("id", "label", "split")
CONTENT_COLUMN = {"text": "text", "image": "image"}
# Columns an export adds (docs/rest.md, Exports and versions); ignored when the file is an
# export (it has a label_source column), and no feature may be named like one.
EXPORT_COLUMNS = (
    "sample_id", "external_id", "label_source", "reviewed", "image_path", "run_id", "predicted", "loss",
    "self_confidence", "normalized_margin", "confusion_margin", "entropy", "aum", "combined", "flagged",
    "suggested_label", "priority", "outlier", "duplicate_group", "consensus_label", "consensus_rule", "annotations", "agreement",
)
# The export's columns of text or true/false, beside the content's.
EXPORT_TEXT_COLUMNS = ("external_id", "label_source", "reviewed", "image_path", "url", "predicted", "flagged",
                       "suggested_label", "consensus_label", "consensus_rule")
# The columns a CSV is read with as text, every other one being read as numbers first: the
# key columns and an export's text columns, so that an export imports again in one typed read.
BASE_COLUMNS = (*KEY_COLUMNS, *EXPORT_TEXT_COLUMNS)
# Cells that mean "missing" in a feature column.
MISSING = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]
MAX_EXTERNAL_ID = 255
MAX_LABEL = 200

Column = pa.Array | pa.ChunkedArray


class ImportFailed(Invalid):
    """The file was refused (422); nothing was written. Carries the first errors, by row."""

    def __init__(self, detail: str, errors: list[dict], more: int = 0) -> None:
        super().__init__(detail, errors=errors, more_errors=more)
        self.more = more

    def to_dict(self) -> dict:
        return {"detail": self.detail, "errors": self.errors, "more_errors": self.more}

    def body(self) -> dict:
        # Every item keeps its row and field keys, null or not: clients index into them.
        return self.to_dict()


@dataclass
class ImportResult:
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: list[dict] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    label_version: int | None = None
    classes: list[str] = field(default_factory=list)


class Errors:
    """Collects row errors, counting every one; reports the first ones in row order."""

    def __init__(self, limit: int, row_names: list[str] | None = None) -> None:
        self.limit = max(1, limit)
        self.row_names = row_names
        self.total = 0
        self._items: list[tuple[int, int | None, str | None, str, str]] = []

    def __bool__(self) -> bool:
        return self.total > 0

    def row(self, i: int) -> int | str:
        """The name of 0-based row i: a ZIP entry path, else the 1-based data row."""
        return self.row_names[i] if self.row_names is not None else i + 1

    def add(self, i: int | None, field_: str, message: str, *, name: str | None = None) -> None:
        """An error on 0-based row i (None: the whole file, or the ZIP entry called name)."""
        self.total += 1
        if len(self._items) < self.limit * 20:
            self._items.append((-1 if i is None else i, i, name, field_, message))

    def add_mask(self, mask: np.ndarray, field_: str, message: Callable[[int], str]) -> None:
        """One error for every row where mask is true; message(i) builds the text."""
        idx = np.flatnonzero(mask)
        for i in idx[: self.limit]:
            self.add(int(i), field_, message(int(i)))
        self.total += max(0, len(idx) - self.limit)

    def raise_if_any(self, filename: str) -> None:
        if not self.total:
            return
        items = [
            {"row": name if i is None else self.row(i), "field": f, "message": m}
            for _, i, name, f, m in sorted(self._items, key=lambda x: x[0])[: self.limit]
        ]
        more = self.total - len(items)
        noun = "error" if self.total == 1 else "errors"
        detail = f"{filename}: {self.total} {noun}; nothing was imported"
        if more:
            detail += f" (showing the first {len(items)}; {more} more)"
        raise ImportFailed(detail, items, more)


def short(value: Any, n: int = 60) -> str:
    """value quoted for an error message, cut to n characters."""
    s = str(value)
    return repr(s if len(s) <= n else s[:n] + "...")


# --------------------------------------------------------------------------- columns


def _mask(values: Column) -> np.ndarray:
    """A boolean Arrow column as a numpy mask (null counts as false)."""
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False)


def _text_column(arr: Column, name: str, errors: Errors, strip: bool) -> Column | None:
    """A column as non-null strings ('' for missing), trimmed when strip."""
    t = arr.type
    if pa.types.is_null(t):
        return pa.array([""] * len(arr), pa.string())
    numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t) or numeric):
        errors.add(None, name, f"column {name!r} has type {t}; it must hold text")
        return None
    if t != pa.string():
        arr = pc.cast(arr, pa.string())
    arr = pc.fill_null(arr, "")
    return pc.utf8_trim_whitespace(arr) if strip else arr


def _feature_column(arr: Column, name: str, errors: Errors) -> Column | None:
    """A feature column as float64 (null where missing); names every non-numeric cell."""
    t = arr.type
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.float64())
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        values = pc.cast(arr, pa.float64()) if t != pa.float64() else arr
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        # Only files whose typed read failed come here: judge each cell.
        raw = pd.Series(arr.to_pandas()).fillna("")
        missing = raw.str.strip().isin(MISSING).to_numpy()
        parsed = pd.to_numeric(raw.where(~missing, None), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.isnan(parsed) & ~missing
        errors.add_mask(bad, name, lambda i: f"{short(raw.iat[i])} is not a number")
        values = pa.array(parsed, pa.float64(), from_pandas=True)
    else:
        errors.add(None, name, f"column {name!r} has type {t}; features must be numbers")
        return None
    if pc.any(pc.is_nan(values)).as_py():  # NaN means missing, as an empty cell does
        values = pc.if_else(pc.is_nan(values), pa.scalar(None, pa.float64()), values)
    errors.add_mask(_mask(pc.is_inf(values)), name, lambda i: f"{values[i].as_py()} is not a finite number")
    return values


# --------------------------------------------------------------------------- the rules


@dataclass
class Prepared:
    """A validated file, ready to write."""

    n: int
    ids: Column
    labels: Column
    splits: Column
    text: Column | None = None
    images: list[str | None] | None = None
    image_paths: Column | None = None
    feature_names: list[str] = field(default_factory=list)
    features: dict[str, Column] = field(default_factory=dict)
    existing_pos: np.ndarray | None = None  # file rows whose id exists (positions)
    existing_ids: np.ndarray | None = None  # their sample ids
    existing_labels: list | None = None
    existing_splits: list | None = None
    existing_versions: list | None = None
    # What the checks relied on; the write re-checks them under the write lock.
    classes_seen: list[str] = field(default_factory=list)
    features_seen: list[str] | None = None
    # labels are canonical tag sets, null for unlabelled and "" for the empty set (app.datasets.tagsets)
    multilabel: bool = False


@dataclass
class _Existing:
    """The file's rows whose id the dataset has already, and what those samples hold now."""

    pos: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    labels: list = field(default_factory=list)
    splits: list = field(default_factory=list)
    versions: list = field(default_factory=list)


def prepare(
    session: Session, ds: Dataset, table: pa.Table, errors: Errors, on_conflict: str, result: ImportResult
) -> Prepared | None:
    """Check every rule on whole columns and record errors by row; None when the columns are unusable."""
    n = table.num_rows
    names = table.column_names
    if len(set(names)) != len(names) or not all(name.strip() for name in names):
        errors.add(None, "columns", f"every column needs a name of its own; found {names}")
        return None
    feature_names = _sort_columns(ds, names, result)
    text_columns = _text_columns(ds, table, errors)
    if text_columns is None:
        return None
    ids, labels, splits, text, image = text_columns
    has_label = None
    if ds.multilabel:
        tag_sets = _tag_sets(ds, table, splits, errors)
        if tag_sets is None:
            return None
        labels, result.classes = tag_sets
        has_label = pc.is_valid(labels)
    known = ds.settings.get("features") if ds.task == "tabular" else None
    features = _features(table, feature_names, known, errors)
    splits = _check_splits_and_labels(labels, splits, errors, has_label)
    if not ds.multilabel:
        result.classes = _check_classes(ds, labels, errors)
    existing = _check_ids(session, ds, ids, on_conflict, errors)
    _check_content(ds, names, feature_names, existing.pos, n, text, errors)
    for name, col in (("id", ids), ("label", labels), ("text", text)):
        if col is not None:
            errors.add_mask(_mask(pc.match_substring(col, "\x00")), name, lambda i: "contains a NUL character")

    feature_order = list(known or feature_names) if ds.task == "tabular" else []
    for name in feature_order:
        if name not in features:  # a later import may leave some features out: missing values
            features[name] = pa.nulls(n, pa.float64())
    return Prepared(
        n=n, ids=ids, labels=labels, splits=splits, text=text, image_paths=image,
        feature_names=feature_order, features=features,
        existing_pos=existing.pos, existing_ids=existing.ids, existing_labels=existing.labels,
        existing_splits=existing.splits, existing_versions=existing.versions,
        classes_seen=list(ds.classes or []), features_seen=list(known) if known else None, multilabel=ds.multilabel,
    )


def _id_column(names: list[str]) -> str:
    """The column that holds the ids: id, else an export's external_id (an export that lost its
    id column still matches its samples by their external ids)."""
    return "external_id" if "id" not in names and "external_id" in names else "id"


def _sort_columns(ds: Dataset, names: list[str], result: ImportResult) -> list[str]:
    """Record the columns the import ignores; returns the feature columns (tabular only)."""
    content = CONTENT_COLUMN.get(ds.task)
    reserved = set(KEY_COLUMNS) | {_id_column(names)} | ({content} if content else set())
    is_export = "label_source" in names
    ignored = [c for c in names if c not in reserved and (ds.task != "tabular" or (is_export and c in EXPORT_COLUMNS))]
    result.ignored_columns = ignored
    return [c for c in names if c not in reserved and c not in ignored] if ds.task == "tabular" else []


def _text_columns(ds: Dataset, table: pa.Table, errors: Errors) -> tuple | None:
    """(ids, labels, splits, text, image) as text columns ('' where missing; text and image
    None when the task has none); None when one of them cannot hold text."""
    n = table.num_rows
    names = table.column_names

    def text_col(name: str, strip: bool = True) -> Column | None:
        if name not in names:
            return pa.array([""] * n, pa.string())
        return _text_column(table.column(name), name, errors, strip)

    # A multi-label dataset's label column is read by _tag_sets.
    labels = pa.nulls(n, pa.string()) if ds.multilabel else text_col("label")
    ids, splits = text_col(_id_column(names)), text_col("split")
    text = text_col("text", strip=False) if ds.task == "text" else None
    image = text_col("image") if ds.task == "image" else None
    if ids is None or labels is None or splits is None or (ds.task == "text" and text is None) or (
        ds.task == "image" and image is None
    ):
        return None
    return ids, labels, splits, text, image


def _features(table: pa.Table, feature_names: list[str], known: list[str] | None, errors: Errors) -> dict[str, Column]:
    """The feature columns as float64, after checking their names against the dataset's."""
    for name in feature_names:
        if name in EXPORT_COLUMNS:
            errors.add(None, name, f"{name!r} cannot be a feature: exports use that column name")
    if known:
        for name in feature_names:
            if name not in known:
                errors.add(None, name, f"unknown feature column {name!r}; this dataset's features are {known}")
    features: dict[str, Column] = {}
    for name in feature_names:
        values = _feature_column(table.column(name), name, errors)
        if values is not None:
            features[name] = values
    return features


def _check_splits_and_labels(labels: Column, splits: Column, errors: Errors, has_label_col: Column | None = None) -> Column:
    """Check each row's split against its label; returns the splits with defaults filled in
    (train when labelled, else unlabelled). has_label_col: which rows are labelled (default:
    a label that is not empty; a multi-label dataset's empty set is a label)."""
    splits = pc.utf8_lower(splits)
    bad_split = ~_mask(pc.is_in(splits, pa.array(["", *SPLITS])))
    errors.add_mask(bad_split, "split", lambda i: f"unknown split {short(splits[i])}; use {', '.join(SPLITS)}")
    if has_label_col is None:
        has_label_col = pc.not_equal(labels, "")
    has_label = _mask(has_label_col)
    splits = pc.if_else(pc.equal(splits, ""), pc.if_else(has_label_col, Split.train.value, Split.unlabelled.value), splits)
    in_unlabelled = _mask(pc.equal(splits, Split.unlabelled.value))
    errors.add_mask(
        has_label & in_unlabelled, "split", lambda i: f"a labelled sample ({short(labels[i])}) cannot be in the unlabelled split"
    )
    # An excluded sample may be unlabelled (a pool sample removed as an outlier).
    excluded = _mask(pc.equal(splits, Split.excluded.value))
    errors.add_mask(~has_label & ~in_unlabelled & ~excluded & ~bad_split, "label",
                    lambda i: f"a sample in split {splits[i]} needs a label")
    errors.add_mask(_mask(pc.greater(pc.utf8_length(labels), MAX_LABEL)), "label", lambda i: f"labels are at most {MAX_LABEL} characters")
    return splits


def _check_classes(ds: Dataset, labels: Column, errors: Errors) -> list[str]:
    """The dataset's classes: its own, each label checked against them, or the file's labels
    when it has none yet (a classifier needs two)."""
    has_label_col = pc.not_equal(labels, "")
    classes = list(ds.classes or [])
    present = sorted(pc.unique(pc.filter(labels, has_label_col)).to_pylist())
    if classes:
        outside = _mask(has_label_col) & ~_mask(pc.is_in(labels, pa.array(classes, pa.string())))
        errors.add_mask(outside, "label", lambda i: f"label {short(labels[i])} is not one of the dataset's classes {classes}")
    elif present:
        if len(present) < 2:
            errors.add(None, "label", f"the first labels of a dataset set its classes, and a classifier needs two; found only {present}")
        classes = present
    return classes


def _tag_sets(ds: Dataset, table: pa.Table, splits: Column, errors: Errors) -> tuple[Column, list[str]] | None:
    """A multi-label dataset's label column as canonical tag sets (null: unlabelled) and the
    classes they use; None when the column's type holds no tag sets.

    A list is a tag set ([] the empty set, null unlabelled); text holds the classes joined by
    "|", and an empty cell is the empty set in train, valid and test, unlabelled elsewhere (in
    the unlabelled and excluded splits, or with no split, as in a single-label dataset).
    """
    n = table.num_rows
    if "label" not in table.column_names:
        return pa.nulls(n, pa.string()), list(ds.classes or [])
    try:
        parsed = tagsets.parse_column(table.column("label"), list(ds.classes or []))
    except tagsets.TagSetError as exc:
        errors.add(None, "label", str(exc))
        return None
    for i, message in parsed.problems.items():
        errors.add(i, "label", message)
    empty_set = parsed.blank & _mask(pc.is_in(pc.utf8_lower(splits), pa.array(LABELLED_SPLITS)))
    labels = pc.if_else(pa.array(empty_set), pa.scalar("", pa.string()), parsed.labels)
    if not ds.classes and 0 < len(parsed.classes) < 2:
        errors.add(None, "label", f"the first labels of a dataset set its classes, and a classifier needs two; "
                                  f"found only {parsed.classes}")
    return labels, parsed.classes


def _check_ids(session: Session, ds: Dataset, ids: Column, on_conflict: str, errors: Errors) -> _Existing:
    """External ids: unique in the file, and new to the dataset unless updating. Returns the
    rows whose id exists (the first of each id) and those samples' current state."""
    has_id = _mask(pc.not_equal(ids, ""))
    errors.add_mask(_mask(pc.greater(pc.utf8_length(ids), MAX_EXTERNAL_ID)), "id", lambda i: f"ids are at most {MAX_EXTERNAL_ID} characters")
    if not has_id.any():
        return _Existing()
    # Duplicates by dictionary code: every row after the first one with the same id.
    codes = pc.dictionary_encode(ids).combine_chunks() if isinstance(ids, pa.ChunkedArray) else pc.dictionary_encode(ids)
    indices = codes.indices.to_numpy()
    _, first_of_code = np.unique(indices, return_index=True)
    dup = has_id.copy()
    dup[first_of_code] = False
    if dup.any():
        errors.add_mask(
            dup, "id", lambda i: f"duplicate id {short(ids[i])} (also on row {errors.row(int(first_of_code[indices[i]]))})"
        )
    existing = _existing_ids(session, ds.id)
    if not existing:
        return _Existing()
    match = has_id & _mask(pc.is_in(ids, pa.array(list(existing), pa.string())))
    if on_conflict == "error":
        errors.add_mask(
            match, "id",
            lambda i: f"id {short(ids[i])} already exists in this dataset (import with on_conflict=update to update it)",
        )
    pos = np.flatnonzero(match & ~dup)
    hits = [existing[v] for v in pc.take(ids, pa.array(pos)).to_pylist()]
    return _Existing(
        pos=pos,
        ids=np.array([h[0] for h in hits], dtype=np.int64),
        labels=[h[1] for h in hits],
        splits=[h[2] for h in hits],
        versions=[h[3] for h in hits],
    )


def _check_content(
    ds: Dataset, names: list[str], feature_names: list[str], existing_pos: np.ndarray, n: int,
    text: Column | None, errors: Errors,
) -> None:
    """The content of the rows that create samples: text, features or an image column."""
    new = np.ones(n, dtype=bool)
    new[existing_pos] = False
    if ds.task == "text":
        if "text" not in names and new.any():
            errors.add(None, "text", "the file has no text column; a text dataset needs one")
        else:
            blank = _mask(pc.equal(pc.utf8_trim_whitespace(text), ""))
            errors.add_mask(new & blank, "text", lambda i: "missing text")
    if ds.task == "tabular" and not feature_names and new.any():
        errors.add(None, "features", "the file has no feature columns; a tabular dataset needs at least one")
    if ds.task == "image" and "image" not in names:
        errors.add(None, "image", "the labels file has no image column")


def _existing_ids(session: Session, dataset_id: int) -> dict[str, tuple[int, str | None, str, int]]:
    """The dataset's samples that have an external id: external id -> (id, label, split, version)."""
    rows = session.execute(
        select(Sample.external_id, Sample.id, Sample.label, Sample.split, Sample.version).where(
            Sample.dataset_id == dataset_id, Sample.external_id.is_not(None)
        )
    )
    return {ext: (sid, label, split, version) for ext, sid, label, split, version in rows}
