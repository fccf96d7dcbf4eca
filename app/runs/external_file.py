"""Reading a file of a model's predictions for an external run (app.runs.external).

The file (CSV, JSON Lines or Parquet) has one row per sample: `external_id`, one probability
column per class named exactly as the class, and optionally `embedding` (a list of floats; in
CSV a JSON array in the cell). Every problem is collected by row and field, and the whole file
is refused when there is any (ImportFailed, 422): a run is made from all of it or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import IO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from app.datasets.importers.readers import file_format, read_table
from app.datasets.importers.validation import Errors, ImportFailed, short

# Probabilities may sum to 1 within this much (a file written with float32 or rounded to a
# few digits still passes); they are renormalised exactly after the check.
SUM_TOLERANCE = 1e-3
# A probability may stray below 0 or above 1 by this much (rounding) before it is refused.
RANGE_TOLERANCE = 1e-6
NORMALIZE = ("none", "softmax", "sigmoid")  # sigmoid: logits of a multi-label model, one per tag
MAX_EMBEDDING_DIM = 4096
# All embedding values of a file at most (800 MB as float32).
MAX_EMBEDDING_VALUES = 200_000_000
RESERVED = ("external_id", "embedding")


@dataclass
class PredictionsFile:
    """A checked file: the external ids in file order, their probabilities (n, k) in the
    dataset's class order, and the embeddings (n, d) float32 when the file has them."""

    external_ids: list[str]
    P: np.ndarray
    embedding: np.ndarray | None = None
    ignored_columns: list[str] = field(default_factory=list)


def refused(exc: ImportFailed) -> ImportFailed:
    """The import's error, worded for a run: nothing was created."""
    return ImportFailed(exc.detail.replace("nothing was imported", "no run was created"), exc.errors, exc.more)


def read_predictions(fh: IO[bytes], filename: str, classes: list[str], normalize: str, max_rows: int,
                     max_errors: int, multilabel: bool = False) -> PredictionsFile:
    """Read and check the file; raises ImportFailed naming every bad row (up to max_errors).
    For a multi-label dataset each class column is that tag's own probability (they need not
    sum to 1), or its logit with normalize=sigmoid."""
    errors = Errors(max_errors)
    try:
        if normalize not in NORMALIZE:
            errors.add(None, "normalize", f"unknown normalize {short(normalize)}; use one of {', '.join(NORMALIZE)}")
        elif multilabel and normalize == "softmax":
            errors.add(None, "normalize", "a multi-label dataset's tags are independent: send each tag's probability "
                                          "(normalize=none) or its logit (normalize=sigmoid), not softmax")
        elif not multilabel and normalize == "sigmoid":
            errors.add(None, "normalize", "normalize=sigmoid is for multi-label datasets; for a single-label model's "
                                          "logits send normalize=softmax")
        fmt = file_format(filename or "")
        if fmt not in ("csv", "jsonl", "parquet"):
            errors.add(None, "file", f"unsupported file type {short(filename or '')}; use .csv, .jsonl or .parquet")
        errors.raise_if_any(filename)
        table = read_table(fh, fmt, errors, RESERVED)
        errors.raise_if_any(filename)
        assert table is not None
        names = table.column_names
        if len(set(names)) != len(names):
            dup = sorted({c for c in names if names.count(c) > 1})
            errors.add(None, "file", f"columns appear more than once: {', '.join(map(short, dup))}")
        if "external_id" not in names:
            errors.add(None, "external_id", "the file has no external_id column (the id each sample was imported with)")
        for c in classes:
            if c not in names:
                errors.add(None, c, f"no probability column for class {short(c)}; one column per class, named exactly "
                                    f"as the class ({len(classes)} classes)")
        if table.num_rows == 0:
            errors.add(None, "file", "the file holds no rows")
        elif table.num_rows > max_rows:
            errors.add(None, "file", f"the file holds {table.num_rows} rows; the limit is {max_rows} (CURATE_MAX_IMPORT_ROWS)")
        errors.raise_if_any(filename)
        ids = _external_ids(table.column("external_id"), errors)
        P = _probabilities(table, classes, normalize, errors, multilabel)
        embedding = _embedding(table.column("embedding"), errors) if "embedding" in names else None
        errors.raise_if_any(filename)
    except ImportFailed as exc:
        raise refused(exc) from None
    ignored = [c for c in names if c not in classes and c not in RESERVED]
    return PredictionsFile(ids, P, embedding, ignored)


def _external_ids(col: pa.ChunkedArray, errors: Errors) -> list[str]:
    """The ids as text (a numeric id column reads as numbers in JSON Lines and Parquet)."""
    if pa.types.is_floating(col.type):
        values = col.to_numpy(zero_copy_only=False)
        whole = np.isfinite(values) & (values == np.round(values))
        errors.add_mask(~whole & ~np.isnan(values), "external_id", lambda i: f"{values[i]!r} is not an id")
        ids = [str(int(v)) if ok else "" for v, ok in zip(values.tolist(), whole.tolist())]
    elif pa.types.is_integer(col.type) or pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        ids = pc.cast(col, pa.string()).to_pylist()
        ids = ["" if v is None else v for v in ids]
    else:
        errors.add(None, "external_id", f"external_id holds {col.type} values; expected text or integers")
        return []
    errors.add_mask(np.array([not v for v in ids], dtype=bool), "external_id", lambda i: "missing external_id")
    return ids


def _column_floats(col: pa.ChunkedArray, name: str, errors: Errors) -> np.ndarray:
    """A class column as float64; cells that are not numbers are reported and read as NaN."""
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
        return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        text = col.to_pandas()
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.isnan(values) & text.notna().to_numpy() & (text.fillna("").str.strip() != "").to_numpy()
        errors.add_mask(bad, name, lambda i: f"{short(text.iloc[i])} is not a number")
        return values
    errors.add(None, name, f"column {short(name)} holds {col.type} values; expected numbers")
    return np.full(len(col), np.nan)


def _probabilities(table: pa.Table, classes: list[str], normalize: str, errors: Errors,
                   multilabel: bool = False) -> np.ndarray:
    """(n, k) probabilities in class order: checked as probabilities, or softmaxed (multi-label:
    sigmoided) logits."""
    n = table.num_rows
    P = np.empty((n, len(classes)), dtype=np.float64)
    for j, c in enumerate(classes):
        P[:, j] = _column_floats(table.column(c), c, errors)
    bad_row = np.zeros(n, dtype=bool)
    for j, c in enumerate(classes):
        missing = ~np.isfinite(P[:, j]) & ~bad_row
        errors.add_mask(missing, c, lambda i, j=j: "missing" if np.isnan(P[i, j]) else f"{P[i, j]} is not finite")
        bad_row |= missing
    if normalize == "softmax":
        Z = np.where(bad_row[:, None], 0.0, P)
        Z = Z - Z.max(axis=1, keepdims=True)
        E = np.exp(Z)
        return E / E.sum(axis=1, keepdims=True)
    if normalize == "sigmoid":
        return 1.0 / (1.0 + np.exp(-np.clip(np.where(bad_row[:, None], 0.0, P), -500, 500)))
    logits = "sigmoid" if multilabel else "softmax"
    for j, c in enumerate(classes):
        out = ~bad_row & ((P[:, j] < -RANGE_TOLERANCE) | (P[:, j] > 1 + RANGE_TOLERANCE))
        errors.add_mask(out, c, lambda i, j=j: f"{P[i, j]} is not a probability (0 to 1); for logits send "
                                               f"normalize={logits}")
        bad_row |= out
    if multilabel:
        return np.clip(P, 0.0, 1.0)
    sums = np.where(bad_row, 1.0, P.sum(axis=1))
    off = np.abs(sums - 1.0) > SUM_TOLERANCE
    errors.add_mask(off, "probabilities", lambda i: f"the class probabilities sum to {sums[i]:.6g}, not 1 (within "
                                                    f"{SUM_TOLERANCE}); for logits send normalize=softmax")
    P = np.clip(P, 0.0, None)
    return P / np.where(bad_row | off, 1.0, P.sum(axis=1))[:, None]


def _embedding(col: pa.ChunkedArray, errors: Errors) -> np.ndarray | None:
    """(n, d) float32 from a list column, or from JSON arrays in text cells (CSV), written into
    one preallocated array row by row (never a Python list per value: memory stays n x d x 4
    bytes, bounded by MAX_EMBEDDING_VALUES)."""
    n = len(col)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        lengths = pc.fill_null(pc.list_value_length(col), -1).to_numpy(zero_copy_only=False)
        dim = _common_dim(lengths, errors)
        if dim is None:
            return None
        try:
            flat = pc.cast(col.flatten(), pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            errors.add(None, "embedding", "the embeddings hold values that are not numbers")
            return None
        offsets = np.concatenate([[0], np.cumsum(np.maximum(lengths, 0))])
        out = np.zeros((n, dim), dtype=np.float32)
        ok = lengths == dim
        for i in np.flatnonzero(ok):
            out[i] = flat[offsets[i]:offsets[i + 1]]
        bad = ok & ~np.isfinite(out).all(axis=1)
        errors.add_mask(bad, "embedding", lambda i: "holds NaN or infinite values")
        return out
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        errors.add(None, "embedding", f"embedding holds {col.type} values; expected a list of numbers per row")
        return None
    cells = col.to_pylist()
    dim = None
    for cell in cells:
        try:
            first = json.loads(cell) if cell else None
        except ValueError:
            continue
        if isinstance(first, list) and first:
            dim = len(first)
            break
    if dim is None or dim > MAX_EMBEDDING_DIM or n * dim > MAX_EMBEDDING_VALUES:
        errors.add(None, "embedding", f"embeddings must be JSON lists of 1 to {MAX_EMBEDDING_DIM} numbers "
                                      f"(at most {MAX_EMBEDDING_VALUES} values in all)")
        return None
    out = np.zeros((n, dim), dtype=np.float32)
    for i, cell in enumerate(cells):
        try:
            row = json.loads(cell) if cell else None
        except ValueError:
            errors.add(i, "embedding", f"{short(cell)} is not a JSON list of numbers")
            continue
        if not isinstance(row, list) or len(row) != dim:
            errors.add(i, "embedding", f"{'no list' if not isinstance(row, list) else f'{len(row)} values'}; "
                                       f"every embedding must have {dim}")
            continue
        try:
            v = np.asarray(row, dtype=np.float64)
        except (TypeError, ValueError):
            errors.add(i, "embedding", "holds values that are not numbers")
            continue
        if v.ndim != 1 or not np.isfinite(v).all():
            errors.add(i, "embedding", "holds NaN, infinite or nested values")
            continue
        out[i] = v
    return out


def _common_dim(lengths: np.ndarray, errors: Errors) -> int | None:
    """The embedding size most rows have; rows of another size (or none) are reported."""
    if not len(lengths):
        return None
    sizes, counts = np.unique(lengths[lengths > 0], return_counts=True)
    if not len(sizes):
        errors.add(None, "embedding", "every embedding is empty")
        return None
    dim = int(sizes[np.argmax(counts)])
    if dim > MAX_EMBEDDING_DIM or len(lengths) * dim > MAX_EMBEDDING_VALUES:
        errors.add(None, "embedding", f"embeddings of {dim} values are over the limit ({MAX_EMBEDDING_DIM} per row, "
                                      f"{MAX_EMBEDDING_VALUES} in all)")
        return None
    errors.add_mask(lengths != dim, "embedding",
                    lambda i: f"{'no list' if lengths[i] < 0 else f'{lengths[i]} values'}; every embedding must have {dim}")
    return dim
