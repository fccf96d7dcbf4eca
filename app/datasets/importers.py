"""Import samples from CSV, JSONL, Parquet or a ZIP of images: validate everything, then write.

An import is all or nothing. The file is parsed into Arrow columns, every rule is checked
on whole columns at once, and only when no row is wrong are the blobs stored and the rows
written in bulk (COPY on Postgres, executemany on SQLite) inside the caller's transaction.

Columns: ``id`` (optional external id), ``label`` (empty: unlabelled), ``split`` (train,
valid, test or unlabelled; default train when labelled, else unlabelled), then ``text``
for a text dataset, ``image`` (a path inside the ZIP) for an image dataset, and every other
column as a numeric feature for a tabular dataset. A file that carries a ``label_source``
column is a Curate export: its label_source, image_path, predicted and score columns are
ignored, so that an export imports again. A CSV export escapes for spreadsheets by putting
"'" before each text cell and header name that starts with a formula character or with
"'" (see exporters); its import takes exactly one leading "'" off each one that has it.

A ZIP of images holds either a labels file at its root (labels.csv, labels.jsonl or
labels.parquet, whose ``image`` column names entries of the ZIP) or one folder per class
(``cat/1.png``), optionally under a split folder (``valid/cat/1.png``); files directly
under ``unlabelled/`` are unlabelled.

A ZIP is judged from its central directory before anything in it is inflated: unsafe
paths, encrypted entries, compression other than stored or deflate, and entries over their
size limit (CURATE_MAX_ZIP_ENTRY_BYTES for an image, CURATE_MAX_ZIP_LABELS_BYTES for the
labels file) or compressed more than CURATE_MAX_ZIP_COMPRESSION_RATIO to 1 are refused, and
the bytes actually inflated are counted against the same limits. Entries are streamed in
chunks: an image is hashed as it is inflated into a spooled temporary file that Pillow
decodes, then streamed again into the blob store once the whole file is valid; the labels
file is inflated to a temporary file that Arrow reads. Nothing is extracted under its own
name, and no entry is ever held whole in memory twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import queue
import re
import stat
import tempfile
import threading
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import IO, Any

import numpy as np
import psycopg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError
from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.datasets.service import bump_label_version
from app.datasets.storage import BlobStore
from app.db import begin_write, is_sqlite
from app.models import Dataset, Sample, Split, User, utcnow

SPLITS = [s.value for s in Split]
BASE_COLUMNS = ("id", "label", "split")
CONTENT_COLUMN = {"text": "text", "image": "image"}
# Columns an export adds; ignored when the file is an export (it has a label_source column).
EXPORT_COLUMNS = (
    "label_source", "image_path", "predicted", "loss", "self_confidence",
    "normalized_margin", "confusion_margin", "entropy",
)
# Cells that mean "missing" in a feature column.
MISSING = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]
FILE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".zip": "zip"}
LABEL_FILES = ("labels.csv", "labels.jsonl", "labels.parquet")
MAX_EXTERNAL_ID = 255
MAX_LABEL = 200
BATCH_ROWS = 20_000
ANALYZE_AFTER_ROWS = 10_000
ON_CONFLICT = ("error", "update")
IMPORT_LOCK_NAMESPACE = 0x43524954  # first key of the imports' advisory locks
# Characters that COPY's text format escapes; the backslash first.
COPY_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
# Arrow reads CSV and JSON in blocks of this size; a row must fit in one.
CSV_BLOCK_BYTES = 8 << 20
# The CSV escape of a Curate export (see exporters), and the columns whose cells it escapes.
EXPORT_ESCAPE = "'"
ESCAPED_COLUMNS = ("id", "label", "text", "image_path", "predicted")
# A float that Arrow wrote as bare digits ("1", "-0"): JSON needs "1.0" to keep it a float.
INTEGER_TEXT = r"^-?[0-9]+$"
# ZIP entries are inflated, hashed and written this many bytes at a time.
ENTRY_CHUNK_BYTES = 1 << 20
# An image entry up to this size is decoded from memory, a larger one from a temporary file.
IMAGE_SPOOL_BYTES = 8 << 20
# Entries up to this size are never refused for how well they compress: a small file of one
# repeated byte shrinks far more than any image, and cannot hurt.
RATIO_FREE_BYTES = 1 << 20
# The compression methods whose inflating zipfile bounds. It inflates bzip2 and LZMA input
# with no limit on the output, so that one small read could expand to gigabytes.
READABLE_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
COMPRESSION_NAMES = {
    zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA", 9: "deflate64", 93: "Zstandard", 95: "XZ", 98: "PPMd",
}


class ImportFailed(Exception):
    """The file was refused; nothing was written. Carries the first errors, by row."""

    def __init__(self, detail: str, errors: list[dict], more: int = 0) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.more = more

    def to_dict(self) -> dict:
        return {"detail": self.detail, "errors": self.errors, "more_errors": self.more}


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


def _short(value: Any, n: int = 60) -> str:
    s = str(value)
    return repr(s if len(s) <= n else s[:n] + "...")


# --------------------------------------------------------------------------- reading files


def file_format(filename: str) -> str | None:
    return FILE_FORMATS.get(PurePosixPath(filename.lower()).suffix)


def _csv_header(fh: IO[bytes]) -> list[str]:
    """The header's column names as Arrow's CSV parser reads them: a quoted name may hold a
    comma, a quote or a newline. Raises what Arrow raises for an empty or non-UTF-8 header."""
    start = fh.tell()
    try:
        reader = pacsv.open_csv(
            fh,
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=lambda row: "skip"),
        )
        return reader.schema.names
    finally:
        fh.seek(start)


def unescape_export(table: pa.Table) -> pa.Table:
    """A Curate CSV export as it was before its cells were escaped for spreadsheets.

    The export puts a "'" before every text cell and header name that starts with a formula
    character (=, +, -, @, tab, carriage return) or with "'" itself, so exactly one leading
    "'" comes off each one that has it; nothing else changes. Only the columns the export
    escapes are touched: features are numbers, and split and label_source never start so.
    """
    names = [n[1:] if n.startswith(EXPORT_ESCAPE) else n for n in table.column_names]
    columns = []
    for name, col in zip(names, table.columns, strict=True):
        if name in ESCAPED_COLUMNS and pa.types.is_string(col.type):
            escaped = pc.starts_with(col, EXPORT_ESCAPE)
            if pc.any(escaped).as_py():
                col = pc.if_else(escaped, pc.utf8_slice_codeunits(col, 1), col)
        columns.append(col)
    return pa.Table.from_arrays(columns, names=names)


def _not_utf8(exc: Exception) -> bool:
    """Whether Arrow refused the file for bytes that are not UTF-8 ("invalid UTF8 data")."""
    return isinstance(exc, UnicodeDecodeError) or "UTF8" in str(exc)


def _bad_bytes(text: str) -> bytes | None:
    """The first run of bytes that were not UTF-8 in text decoded with surrogateescape."""
    m = re.search("[\udc80-\udcff]+", text)
    return m.group().encode("utf-8", "surrogateescape")[:8] if m else None


def _utf8_lines(fh: IO[bytes]) -> Iterator[str]:
    """The file's lines decoded with surrogateescape (each bad byte kept as a lone surrogate).

    Lines are split at b"\\n", a byte that UTF-8 never uses inside a character; one longer
    than Arrow's block (which Arrow could not read anyway) ends the scan.
    """
    fh.seek(0)
    while line := fh.readline(CSV_BLOCK_BYTES):
        yield line.decode("utf-8", "surrogateescape")
        if len(line) == CSV_BLOCK_BYTES and not line.endswith(b"\n"):
            return


def _report_bad_utf8_csv(fh: IO[bytes], errors: Errors, exc: Exception) -> None:
    """Name the row and column of the first bytes that are not UTF-8, read as CSV records."""
    message = "is not valid UTF-8; save the file as UTF-8"
    try:
        header: list[str] = []
        for k, record in enumerate(csv.reader(_utf8_lines(fh))):
            if k == 0:
                header = record
            for j, cell in enumerate(record):
                bad = _bad_bytes(cell)
                if bad is None:
                    continue
                if k == 0:
                    errors.add(None, "header", f"column {j + 1} of the header: {bad!r} {message}")
                else:
                    name = header[j] if j < len(header) else f"column {j + 1}"
                    errors.add(k - 1, name, f"{bad!r} {message}")
                return
    except csv.Error:
        pass  # a row the csv module reads differently from Arrow: say what Arrow said
    errors.add(None, "file", f"not a readable UTF-8 CSV file: {exc}")


def read_csv(fh: IO[bytes], errors: Errors, string_columns: Iterable[str], multiline: bool = False) -> pa.Table | None:
    """A CSV file as an Arrow table: string_columns as text, every other column as float64.

    A feature column with a value that is not a number fails the fast typed read; the file
    is then read again as text so that every bad cell can be named by row. A Curate export
    (it has a label_source column) is unescaped (unescape_export), and read as one whose
    values may span lines, as an export's ids and labels may.
    """
    fh.seek(0)
    try:
        header = _csv_header(fh)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        if _not_utf8(exc):
            _report_bad_utf8_csv(fh, errors, exc)
        elif "Empty CSV" in str(exc):
            errors.add(None, "file", "the file is empty")
        else:
            errors.add(None, "file", f"not a readable CSV file: {exc}")
        return None
    export = "label_source" in header
    multiline = multiline or export
    strings = set(string_columns)
    bad_rows: list[tuple[int | None, str]] = []

    def on_bad_row(row) -> str:
        bad_rows.append((row.number, f"expected {row.expected_columns} columns, found {row.actual_columns}: {_short(row.text)}"))
        return "skip"

    def attempt(all_text: bool, threads: bool = True) -> pa.Table:
        fh.seek(0)
        bad_rows.clear()
        types = {c: pa.string() if all_text or c in strings else pa.float64() for c in header}
        return pacsv.read_csv(
            fh,
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=threads),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_bad_row, newlines_in_values=multiline),
            convert_options=pacsv.ConvertOptions(
                column_types=types, strings_can_be_null=False, null_values=MISSING, quoted_strings_can_be_null=False
            ),
        )

    all_text = False
    try:
        try:
            table = attempt(all_text)
        except pa.ArrowInvalid as exc:
            if "conversion error" not in str(exc):
                raise
            all_text = True
            table = attempt(all_text)
        if bad_rows and any(n is None for n, _ in bad_rows):
            # Arrow knows the line of a bad row only when it reads on one thread.
            attempt(all_text, threads=False)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        if _not_utf8(exc):
            _report_bad_utf8_csv(fh, errors, exc)
        else:
            errors.add(None, "file", f"not a readable CSV file: {exc}")
        return None
    for line, message in bad_rows:
        # Line 1 is the header, so line n holds data row n - 1 (0-based: n - 2).
        errors.add(None if line is None else line - 2, "row", message)
    return unescape_export(table) if export else table


def _report_bad_utf8_jsonl(fh: IO[bytes], errors: Errors) -> None:
    """Name the row, and the key, of the first bytes that are not UTF-8 in a JSON Lines file."""
    n = 0
    for line in _utf8_lines(fh):
        if not line.strip():
            continue
        bad = _bad_bytes(line)
        if bad is not None:
            field_ = "json"
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                field_ = next((k for k, v in obj.items() if _bad_bytes(k) or (isinstance(v, str) and _bad_bytes(v))), "json")
                field_ = field_.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            errors.add(n, field_, f"{bad!r} is not valid UTF-8; save the file as UTF-8")
            return
        n += 1
    errors.add(None, "file", "the file is not valid UTF-8; save it as UTF-8")


def read_jsonl(fh: IO[bytes], errors: Errors) -> pa.Table | None:
    """A JSON Lines file as an Arrow table; one JSON object per line."""
    fh.seek(0)
    try:
        table = pajson.read_json(fh, read_options=pajson.ReadOptions(block_size=CSV_BLOCK_BYTES))
    except pa.ArrowInvalid:
        pass
    else:
        # Arrow's JSON reader passes bytes that are not UTF-8 into names and strings unchecked.
        try:
            table.validate(full=True)  # checks that strings are UTF-8
            _ = table.column_names  # decoding the names raises on bytes that are not UTF-8
        except (pa.ArrowInvalid, UnicodeDecodeError):
            _report_bad_utf8_jsonl(fh, errors)
            return None
        return table
    # Arrow needs one type per column; read line by line to name the bad lines, or to take
    # columns whose values mix numbers and text, which the checks below then judge per cell.
    fh.seek(0)
    columns: dict[str, list] = {}
    n = 0
    before = errors.total
    for line in fh:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except UnicodeDecodeError:
            _report_bad_utf8_jsonl(fh, errors)
            return None
        except ValueError as exc:
            errors.add(n, "json", f"not valid JSON: {exc}")
            n += 1
            continue
        if not isinstance(obj, dict):
            errors.add(n, "json", "each line must be a JSON object")
            n += 1
            continue
        for key, value in obj.items():
            col = columns.get(key)
            if col is None:
                col = columns[key] = [None] * n
            col.append(value)
        n += 1
        for col in columns.values():
            if len(col) < n:
                col.append(None)
    if errors.total > before:
        return None
    return pa.table({k: _python_column(v) for k, v in columns.items()})


def _python_column(values: list) -> pa.Array:
    """Arrow array from JSON values: numbers stay numbers when they all are, else text."""
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {int, float}:
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values], pa.string())


def read_parquet(fh: IO[bytes], errors: Errors) -> pa.Table | None:
    fh.seek(0)
    try:
        return pq.read_table(fh)
    except (pa.ArrowException, OSError) as exc:
        errors.add(None, "file", f"not a readable Parquet file: {exc}")
        return None


def read_table(
    fh: IO[bytes], fmt: str, errors: Errors, string_columns: Iterable[str], multiline: bool = False
) -> pa.Table | None:
    if fmt == "csv":
        return read_csv(fh, errors, string_columns, multiline)
    if fmt == "jsonl":
        return read_jsonl(fh, errors)
    return read_parquet(fh, errors)


# --------------------------------------------------------------------------- columns


Column = pa.Array | pa.ChunkedArray


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
        errors.add_mask(bad, name, lambda i: f"{_short(raw.iat[i])} is not a number")
        values = pa.array(parsed, pa.float64(), from_pandas=True)
    else:
        errors.add(None, name, f"column {name!r} has type {t}; features must be numbers")
        return None
    if pc.any(pc.is_nan(values)).as_py():  # NaN means missing, as an empty cell does
        values = pc.if_else(pc.is_nan(values), pa.scalar(None, pa.float64()), values)
    errors.add_mask(_mask(pc.is_inf(values)), name, lambda i: f"{values[i].as_py()} is not a finite number")
    return values


def _float_strings(values: Column) -> Column:
    """JSON numbers for float64 values: shortest round-trip form, '1.0' not '1', null if missing."""
    s = pc.cast(values, pa.string())
    # Arrow writes 1.0 as "1" (but 2**53 as "9.007199254740992e+15"): only bare digits
    # need ".0" to stay a float for JSON readers.
    integral = pc.match_substring_regex(s, INTEGER_TEXT)
    if pc.any(integral).as_py():
        s = pc.if_else(integral, pc.binary_join_element_wise(s, ".0", ""), s)
    return pc.fill_null(s, "null")


def features_json(names: list[str], columns: dict[str, Column]) -> Column:
    """Rows of features as JSON objects in feature order, built column by column."""
    parts: list = []
    for k, name in enumerate(names):
        parts.append(("{" if k == 0 else ",") + json.dumps(name) + ":")
        parts.append(_float_strings(columns[name]))
    parts.append("}")
    return pc.binary_join_element_wise(*parts, "")


# --------------------------------------------------------------------------- ZIP files


@dataclass
class ZipEntry:
    info: zipfile.ZipInfo
    path: str  # relative to the root the importer works from
    max_bytes: int  # the most it may inflate to: a labels file's limit or an image's
    setting: str  # the setting that raises max_bytes


class EntryTooLarge(Exception):
    """An entry inflated past its limit while it was read."""


@dataclass
class ImageCheck:
    sha256: str | None = None
    error: str | None = None


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute paths are not allowed in the ZIP"
    if ".." in name.split("/"):
        return "'..' is not allowed in ZIP paths"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic links are not allowed in the ZIP"
    return None


def _skipped(parts: list[str]) -> bool:
    """Folders and the clutter that archivers add (__MACOSX, .DS_Store, hidden files)."""
    return any(p.startswith(".") or p == "__MACOSX" or p == "Thumbs.db" for p in parts)


def _entry_limit(path: str, settings: Settings) -> tuple[int, str, str]:
    """(limit, setting, what) for the entry at path: the labels file has a larger limit."""
    if path in LABEL_FILES:
        return settings.max_zip_labels_bytes, "CURATE_MAX_ZIP_LABELS_BYTES", "a labels file"
    return settings.max_zip_entry_bytes, "CURATE_MAX_ZIP_ENTRY_BYTES", "an image"


def _size_problem(zf: zipfile.ZipFile, entry: ZipEntry, what: str, max_ratio: int) -> tuple[str, str] | None:
    """(field, message) when what the ZIP's directory says of an entry rules out reading it."""
    info = entry.info
    if info.flag_bits & 0x1:
        return "entry", "encrypted entries are not supported"
    if info.compress_type not in READABLE_METHODS:
        method = COMPRESSION_NAMES.get(info.compress_type, f"compression method {info.compress_type}")
        return "entry", f"compressed with {method}; only stored and deflate entries are read (what zip tools write by default)"
    if info.header_offset + info.compress_size > zf.start_dir:
        return "size", (
            f"declares {info.compress_size} compressed bytes, more than the ZIP holds before its directory "
            "(a corrupt or forged ZIP)"
        )
    if info.file_size > entry.max_bytes:
        return "size", f"{info.file_size} bytes uncompressed; {what} may hold at most {entry.max_bytes} ({entry.setting})"
    if info.file_size > RATIO_FREE_BYTES and info.file_size > max_ratio * info.compress_size:
        ratio = info.file_size / max(info.compress_size, 1)
        return "size", (
            f"compressed {ratio:.0f} to 1 ({info.file_size} bytes in {info.compress_size}); the limit is "
            f"{max_ratio} to 1 (CURATE_MAX_ZIP_COMPRESSION_RATIO)"
        )
    return None


def zip_entries(zf: zipfile.ZipFile, errors: Errors, settings: Settings) -> list[ZipEntry]:
    """The file entries of a ZIP, refusing unsafe paths, symlinks and oversized contents.

    Everything here comes from the ZIP's central directory: a bomb is refused before a
    single byte of it is inflated. The sizes it declares are checked again as entries are
    read (entry_chunks), since an archive can lie about them.
    """
    infos = zf.infolist()
    total = 0
    files: list[tuple[zipfile.ZipInfo, list[str]]] = []
    for info in infos:
        problem = _entry_problem(info)
        if problem:
            errors.add(None, "path", problem, name=info.filename)
            continue
        total += info.file_size
        parts = [p for p in info.filename.replace("\\", "/").split("/") if p not in ("", ".")]
        if info.is_dir() or not parts or _skipped(parts):
            continue
        files.append((info, parts))
    if total > settings.max_zip_uncompressed_bytes:
        errors.add(
            None, "file",
            f"the ZIP holds {total} bytes uncompressed; the limit is {settings.max_zip_uncompressed_bytes} "
            "(CURATE_MAX_ZIP_UNCOMPRESSED_BYTES)",
        )
    if errors:
        return []
    # A ZIP made from a folder wraps everything in that folder; work from inside it.
    tops = {parts[0] for _, parts in files}
    if len(tops) == 1 and files:
        top = next(iter(tops))
        inner = [parts[1:] for _, parts in files]
        if top not in SPLITS and all(len(p) >= 1 for p in inner) and (
            any(len(p) == 1 and p[0] in LABEL_FILES for p in inner) or all(len(p) >= 3 for p in inner)
        ):
            files = [(info, parts[1:]) for info, parts in files]
    entries = []
    for info, parts in files:
        path = "/".join(parts)
        limit, setting, what = _entry_limit(path, settings)
        entry = ZipEntry(info, path, limit, setting)
        problem = _size_problem(zf, entry, what, settings.max_zip_compression_ratio)
        if problem:
            errors.add(None, problem[0], problem[1], name=info.filename)
        entries.append(entry)
    return [] if errors else entries


def entry_chunks(zf: zipfile.ZipFile, entry: ZipEntry) -> Iterator[bytes]:
    """The bytes of one entry, inflated ENTRY_CHUNK_BYTES at a time.

    zip_entries judged the sizes the archive declares; the bytes that come out are counted
    too, so that the entry's limit holds whatever the archive says. (zipfile itself stops
    at the declared size and then fails the CRC check of an entry that inflates to more.)
    """
    count = 0
    with zf.open(entry.info) as fh:
        while chunk := fh.read(ENTRY_CHUNK_BYTES):
            count += len(chunk)
            if count > entry.max_bytes:
                raise EntryTooLarge(f"inflates to more than {entry.max_bytes} bytes ({entry.setting})")
            yield chunk


def check_image(zf: zipfile.ZipFile, entry: ZipEntry, max_pixels: int) -> ImageCheck:
    """sha256 of an image entry, after checking its size from the header and then decoding it.

    The entry is inflated once, and hashed as it comes, into a spooled file (in memory up
    to IMAGE_SPOOL_BYTES, on disk beyond) that Pillow reads: no image is ever held twice,
    and a large one is not held in memory at all.
    """
    digest = hashlib.sha256()
    with tempfile.SpooledTemporaryFile(IMAGE_SPOOL_BYTES) as spool:
        try:
            for chunk in entry_chunks(zf, entry):
                digest.update(chunk)
                spool.write(chunk)
        except EntryTooLarge as exc:
            return ImageCheck(error=str(exc))
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            return ImageCheck(error=f"corrupt ZIP entry: {exc}")
        spool.seek(0)
        try:
            with warnings.catch_warnings():
                # Between the limit and twice it Pillow only warns; the size check below decides.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(spool) as im:
                    w, h = im.size
                    if w * h > max_pixels:
                        return ImageCheck(error=f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels} (CURATE_MAX_IMAGE_PIXELS)")
                    im.load()
        except Image.DecompressionBombError as exc:
            return ImageCheck(error=f"image is too large: {exc}")
        except UnidentifiedImageError:  # its message names the temporary file, not the entry
            return ImageCheck(error="unreadable image: not an image, or in a format that cannot be read")
        except Exception as exc:  # Pillow raises many kinds for broken files
            return ImageCheck(error=f"unreadable image: {exc}")
    return ImageCheck(sha256=digest.hexdigest())


@dataclass
class ZipImport:
    table: pa.Table
    row_names: list[str] | None
    entries: dict[str, ZipEntry]


def read_zip_layout(zf: zipfile.ZipFile, entries: list[ZipEntry], errors: Errors) -> ZipImport | None:
    """The rows of an image ZIP: from its labels file, or from its class (and split) folders."""
    by_path = {e.path: e for e in entries}
    for name in LABEL_FILES:
        if name in by_path:
            entry = by_path[name]
            # Inflated to a temporary file, not into memory: Arrow reads it from there.
            with tempfile.TemporaryFile() as spool:
                try:
                    for chunk in entry_chunks(zf, entry):
                        spool.write(chunk)
                except EntryTooLarge as exc:
                    errors.add(None, "size", str(exc), name=entry.info.filename)
                    return None
                except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                    errors.add(None, "file", f"corrupt ZIP entry: {exc}", name=entry.info.filename)
                    return None
                spool.seek(0)
                table = read_table(spool, file_format(name), errors, ("id", "label", "split", "image"))
            if table is None:
                return None
            return ZipImport(table, None, by_path)

    paths, labels, splits = [], [], []
    for e in entries:
        parts = e.path.split("/")
        if len(parts) == 3 and parts[0] in SPLITS:
            split, label = parts[0], parts[1]
            if split == Split.unlabelled.value:
                errors.add(len(paths), "split", f"files under unlabelled/ take no class folder ({label!r})")
                label = ""
        elif len(parts) == 2 and parts[0] == Split.unlabelled.value:
            split, label = parts[0], ""
        elif len(parts) == 2:
            split, label = "", parts[0]
        else:
            errors.add(
                len(paths), "path",
                "expected class/file, split/class/file or unlabelled/file (split: train, valid, test)",
            )
            split, label = "", ""
        paths.append(e.path)
        labels.append(label)
        splits.append(split)
    errors.row_names = paths
    table = pa.table({"image": pa.array(paths, pa.string()), "label": labels, "split": splits})
    return ZipImport(table, paths, by_path)


# --------------------------------------------------------------------------- the import


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


def import_file(
    session: Session,
    ds: Dataset,
    fh: IO[bytes],
    filename: str,
    *,
    on_conflict: str = "error",
    settings: Settings | None = None,
    user: User | None = None,
) -> ImportResult:
    """Validate the whole file, then add (or with on_conflict='update', update) samples.

    Raises ImportFailed, having written nothing, when any row is wrong.
    """
    settings = settings or get_settings()
    if on_conflict not in ON_CONFLICT:
        raise ValueError(f"on_conflict must be one of {ON_CONFLICT}")
    errors = Errors(settings.max_import_errors)
    result = ImportResult()
    fmt = file_format(filename or "")
    if fmt is None:
        errors.add(None, "file", f"unsupported file type {filename!r}; use .csv, .jsonl, .parquet or .zip")
    elif (fmt == "zip") != (ds.task == "image"):
        wanted = "a ZIP of images" if ds.task == "image" else "CSV, JSONL or Parquet, not a ZIP"
        errors.add(None, "file", f"a {ds.task} dataset imports {wanted}")
    errors.raise_if_any(filename)

    zf: zipfile.ZipFile | None = None
    zip_import: ZipImport | None = None
    if fmt == "zip":
        try:
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, OSError) as exc:
            errors.add(None, "file", f"not a readable ZIP file: {exc}")
            errors.raise_if_any(filename)
        entries = zip_entries(zf, errors, settings)
        errors.raise_if_any(filename)
        zip_import = read_zip_layout(zf, entries, errors)
        if zip_import is None:
            errors.raise_if_any(filename)
        table = zip_import.table
    else:
        content = CONTENT_COLUMN.get(ds.task)
        # Export-only columns hold text; reading them as text spares the typed read a retry.
        columns = (*BASE_COLUMNS, *([content] if content else []), "label_source", "image_path", "predicted")
        table = read_table(fh, fmt, errors, columns, multiline=ds.task == "text")
        errors.raise_if_any(filename)

    if table.num_rows == 0:
        errors.add(None, "file", "the file holds no images" if zf is not None else "the file holds no rows")
        errors.raise_if_any(filename)
    if table.num_rows > settings.max_import_rows:
        errors.add(None, "file", f"the file holds {table.num_rows} rows; the limit is {settings.max_import_rows} (CURATE_MAX_IMPORT_ROWS)")
        errors.raise_if_any(filename)

    lock_dataset_imports(session, ds.id)
    session.refresh(ds)
    prepared = _prepare(session, ds, table, errors, on_conflict, result)
    if zip_import is not None and prepared is not None:
        _check_images(session, ds, zf, zip_import, prepared, errors, settings, result)
    errors.raise_if_any(filename)
    assert prepared is not None

    if zf is not None:
        _store_images(zf, zip_import, prepared, BlobStore(settings.blob_dir))
    _write(session, ds, prepared, user, result)
    return result


def lock_dataset_imports(session: Session, dataset_id: int) -> None:
    """Serialise imports into one dataset, so that two cannot both pass the id checks.

    A transaction-scoped advisory lock on Postgres rather than FOR UPDATE on the dataset row:
    a locked row makes each of COPY's foreign-key checks slower, and would hold up every
    relabel of the dataset until the import commits. On SQLite nothing is locked here: the
    file is checked and its rows staged with no lock held, and `_write` re-checks what the
    checks relied on once it holds the database's write lock (see `_recheck`).
    """
    conn = session.connection()
    if not is_sqlite(conn):
        conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :id)"), {"ns": IMPORT_LOCK_NAMESPACE, "id": dataset_id})


def _prepare(
    session: Session, ds: Dataset, table: pa.Table, errors: Errors, on_conflict: str, result: ImportResult
) -> Prepared | None:
    """Check every rule on whole columns and record errors by row; None when the columns are unusable."""
    n = table.num_rows
    names = table.column_names
    if len(set(names)) != len(names) or not all(name.strip() for name in names):
        errors.add(None, "columns", f"every column needs a name of its own; found {names}")
        return None

    content = CONTENT_COLUMN.get(ds.task)
    reserved = set(BASE_COLUMNS) | ({content} if content else set())
    is_export = "label_source" in names
    ignored = [c for c in names if c not in reserved and (ds.task != "tabular" or (is_export and c in EXPORT_COLUMNS))]
    result.ignored_columns = ignored
    feature_names = [c for c in names if c not in reserved and c not in ignored] if ds.task == "tabular" else []

    def text_col(name: str, strip: bool = True) -> pa.Array | None:
        if name not in names:
            return pa.array([""] * n, pa.string())
        return _text_column(table.column(name), name, errors, strip)

    ids, labels, splits = text_col("id"), text_col("label"), text_col("split")
    text = text_col("text", strip=False) if ds.task == "text" else None
    image = text_col("image") if ds.task == "image" else None
    if ids is None or labels is None or splits is None or (ds.task == "text" and text is None) or (
        ds.task == "image" and image is None
    ):
        return None

    for name in feature_names:
        if name in EXPORT_COLUMNS:
            errors.add(None, name, f"{name!r} cannot be a feature: exports use that column name")
    known = ds.settings.get("features") if ds.task == "tabular" else None
    if known:
        for name in feature_names:
            if name not in known:
                errors.add(None, name, f"unknown feature column {name!r}; this dataset's features are {known}")
    features: dict[str, Column] = {}
    for name in feature_names:
        values = _feature_column(table.column(name), name, errors)
        if values is not None:
            features[name] = values

    # Split and label.
    splits = pc.utf8_lower(splits)
    bad_split = ~_mask(pc.is_in(splits, pa.array(["", *SPLITS])))
    errors.add_mask(bad_split, "split", lambda i: f"unknown split {_short(splits[i])}; use train, valid, test or unlabelled")
    has_label_col = pc.not_equal(labels, "")
    has_label = _mask(has_label_col)
    splits = pc.if_else(pc.equal(splits, ""), pc.if_else(has_label_col, Split.train.value, Split.unlabelled.value), splits)
    in_unlabelled = _mask(pc.equal(splits, Split.unlabelled.value))
    errors.add_mask(
        has_label & in_unlabelled, "split", lambda i: f"a labelled sample ({_short(labels[i])}) cannot be in the unlabelled split"
    )
    errors.add_mask(~has_label & ~in_unlabelled & ~bad_split, "label", lambda i: f"a sample in split {splits[i]} needs a label")
    errors.add_mask(_mask(pc.greater(pc.utf8_length(labels), MAX_LABEL)), "label", lambda i: f"labels are at most {MAX_LABEL} characters")

    classes = list(ds.classes or [])
    present = sorted(pc.unique(pc.filter(labels, has_label_col)).to_pylist())
    if classes:
        outside = has_label & ~_mask(pc.is_in(labels, pa.array(classes, pa.string())))
        errors.add_mask(outside, "label", lambda i: f"label {_short(labels[i])} is not one of the dataset's classes {classes}")
    elif present:
        if len(present) < 2:
            errors.add(None, "label", f"the first labels of a dataset set its classes, and a classifier needs two; found only {present}")
        classes = present
    result.classes = classes

    # External ids: unique in the file, and new to the dataset unless updating.
    has_id = _mask(pc.not_equal(ids, ""))
    errors.add_mask(_mask(pc.greater(pc.utf8_length(ids), MAX_EXTERNAL_ID)), "id", lambda i: f"ids are at most {MAX_EXTERNAL_ID} characters")
    existing_pos = np.empty(0, dtype=np.int64)
    existing_ids = np.empty(0, dtype=np.int64)
    existing_labels: list = []
    existing_splits: list = []
    existing_versions: list = []
    if has_id.any():
        # Duplicates by dictionary code: every row after the first one with the same id.
        codes = pc.dictionary_encode(ids).combine_chunks() if isinstance(ids, pa.ChunkedArray) else pc.dictionary_encode(ids)
        indices = codes.indices.to_numpy()
        _, first_of_code = np.unique(indices, return_index=True)
        dup = has_id.copy()
        dup[first_of_code] = False
        if dup.any():
            errors.add_mask(
                dup, "id", lambda i: f"duplicate id {_short(ids[i])} (also on row {errors.row(int(first_of_code[indices[i]]))})"
            )
        existing = _existing_ids(session, ds.id)
        if existing:
            match = has_id & _mask(pc.is_in(ids, pa.array(list(existing), pa.string())))
            if on_conflict == "error":
                errors.add_mask(
                    match, "id",
                    lambda i: f"id {_short(ids[i])} already exists in this dataset (import with on_conflict=update to update it)",
                )
            existing_pos = np.flatnonzero(match & ~dup)
            hits = [existing[v] for v in pc.take(ids, pa.array(existing_pos)).to_pylist()]
            existing_ids = np.array([h[0] for h in hits], dtype=np.int64)
            existing_labels = [h[1] for h in hits]
            existing_splits = [h[2] for h in hits]
            existing_versions = [h[3] for h in hits]

    # Content of the rows that create samples.
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
    for name, col in (("id", ids), ("label", labels), ("text", text)):
        if col is not None:
            errors.add_mask(_mask(pc.match_substring(col, "\x00")), name, lambda i: "contains a NUL character")

    feature_order = list(known or feature_names) if ds.task == "tabular" else []
    for name in feature_order:
        if name not in features:  # a later import may leave some features out: missing values
            features[name] = pa.nulls(n, pa.float64())
    return Prepared(
        n=n,
        ids=ids,
        labels=labels,
        splits=splits,
        text=text,
        image_paths=image,
        feature_names=feature_order,
        features=features,
        existing_pos=existing_pos,
        existing_ids=existing_ids,
        existing_labels=existing_labels,
        existing_splits=existing_splits,
        existing_versions=existing_versions,
        classes_seen=list(ds.classes or []),
        features_seen=list(known) if known else None,
    )


def _existing_ids(session: Session, dataset_id: int) -> dict[str, tuple[int, str | None, str, int]]:
    """The dataset's samples that have an external id: external id -> (id, label, split, version)."""
    rows = session.execute(
        select(Sample.external_id, Sample.id, Sample.label, Sample.split, Sample.version).where(
            Sample.dataset_id == dataset_id, Sample.external_id.is_not(None)
        )
    )
    return {ext: (sid, label, split, version) for ext, sid, label, split, version in rows}


def _check_images(
    session: Session,
    ds: Dataset,
    zf: zipfile.ZipFile,
    zi: ZipImport,
    prepared: Prepared,
    errors: Errors,
    settings: Settings,
    result: ImportResult,
) -> None:
    """Decode every referenced image once; record its sha256 and report duplicate content."""
    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    checked: dict[str, ImageCheck] = {}
    shas: list[str | None] = []
    paths = prepared.image_paths.to_pylist()
    for i, raw in enumerate(paths):
        path = str(PurePosixPath(raw)) if raw else ""
        entry = zi.entries.get(path)
        if not raw:
            errors.add(i, "image", "missing image path")
            shas.append(None)
            continue
        if entry is None:
            errors.add(i, "image", f"{raw!r} is not a file in the ZIP")
            shas.append(None)
            continue
        check = checked.get(path)
        if check is None:
            check = checked[path] = check_image(zf, entry, settings.max_image_pixels)
        if check.error:
            errors.add(i, "image", check.error if zi.row_names else f"{path}: {check.error}")
        shas.append(check.sha256)
        paths[i] = path
    prepared.images = shas
    prepared.image_paths = pa.array(paths, pa.string())
    if errors:
        return

    new = np.ones(prepared.n, dtype=bool)
    new[prepared.existing_pos] = False
    first_row: dict[str, int] = {}
    for i in np.flatnonzero(new):
        sha = shas[i]
        if sha in first_row:
            j = first_row[sha]
            result.duplicates.append({"row": errors.row(int(i)), "path": paths[i], "sha256": sha,
                                      "duplicate_of": {"row": errors.row(j), "path": paths[j]}})
        else:
            first_row[sha] = int(i)
    known = _samples_with_blobs(session, ds.id, list(first_row))
    for sha, i in first_row.items():
        if sha in known:
            sample_id, ext, path = known[sha]
            result.duplicates.append({"row": errors.row(i), "path": paths[i], "sha256": sha,
                                      "duplicate_of": {"sample_id": sample_id, "external_id": ext, "path": path}})
    result.duplicates.sort(key=lambda d: str(d["row"]))


def _samples_with_blobs(session: Session, dataset_id: int, shas: list[str]) -> dict[str, tuple]:
    found: dict[str, tuple] = {}
    for k in range(0, len(shas), 500):
        chunk = shas[k : k + 500]
        rows = session.execute(
            select(Sample.image_blob, func.min(Sample.id))
            .where(Sample.dataset_id == dataset_id, Sample.image_blob.in_(chunk))
            .group_by(Sample.image_blob)
        ).all()
        ids = {sid: sha for sha, sid in rows}
        if ids:
            for sid, ext, path in session.execute(
                select(Sample.id, Sample.external_id, Sample.image_path).where(Sample.id.in_(list(ids)))
            ):
                found[ids[sid]] = (sid, ext, path)
    return found


def _store_images(zf: zipfile.ZipFile, zi: ZipImport, prepared: Prepared, store: BlobStore) -> None:
    """Second pass over the ZIP, once everything is valid: put each image in the blob store."""
    done: set[str] = set()
    for path, sha in zip(prepared.image_paths.to_pylist(), prepared.images, strict=True):
        if sha in done or store.exists(sha):
            done.add(sha)
            continue
        try:
            store.put_chunks(entry_chunks(zf, zi.entries[path]), expected=sha)
        except ValueError:
            raise RuntimeError(f"{path} changed while it was imported") from None
        done.add(sha)


# --------------------------------------------------------------------------- writing


SAMPLE_COLUMNS = (
    "dataset_id", "external_id", "split", "text", "features", "image_blob", "image_path",
    "label", "original_label", "reviewed", "version", "created_at", "updated_at",
)


def _timestamp(now: datetime) -> str:
    """A naive-UTC timestamp in the text form both databases read (SQLAlchemy's SQLite form)."""
    return now.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _null_if_empty(arr: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)


def _new_sample_batches(ds: Dataset, p: Prepared, now: str) -> Iterator[pa.Table]:
    """The new samples as Arrow tables of BATCH_ROWS rows, in SAMPLE_COLUMNS order."""
    if len(p.existing_pos):
        keep = np.ones(p.n, dtype=bool)
        keep[p.existing_pos] = False
        positions = np.flatnonzero(keep)
    else:
        positions = np.arange(p.n)
    total = len(positions)
    contiguous = total == p.n
    for start in range(0, total, BATCH_ROWS):
        stop = min(start + BATCH_ROWS, total)
        m = stop - start
        rows = positions[start:stop]
        idx = None if contiguous else pa.array(rows)

        def pick(arr: pa.Array) -> pa.Array:
            return arr.slice(start, m) if idx is None else pc.take(arr, idx)

        null = pa.nulls(m, pa.string())
        label = _null_if_empty(pick(p.labels))
        feats = null
        if p.feature_names:
            cols = {k: pick(v) for k, v in p.features.items()}
            feats = features_json(p.feature_names, cols)
        yield pa.table(
            {
                "dataset_id": pa.repeat(pa.scalar(ds.id, pa.int64()), m),
                "external_id": _null_if_empty(pick(p.ids)),
                "split": pick(p.splits),
                "text": pick(p.text) if p.text is not None else null,
                "features": feats,
                "image_blob": pa.array([p.images[i] for i in rows], pa.string()) if p.images is not None else null,
                "image_path": pick(p.image_paths) if p.image_paths is not None else null,
                "label": label,
                "original_label": label,
                "reviewed": pa.repeat(pa.scalar(False), m),
                "version": pa.repeat(pa.scalar(1, pa.int64()), m),
                "created_at": pa.repeat(pa.scalar(now), m),
                "updated_at": pa.repeat(pa.scalar(now), m),
            }
        )


def copy_text(batch: pa.Table, plain: Iterable[str] = ()) -> memoryview:
    """A batch in COPY's text format (tab-separated, \\N for null), built column by column.

    Columns named in plain are known to hold no backslash, tab or newline and are not scanned.
    """
    cols = []
    plain = set(plain)
    for name, col in zip(batch.column_names, batch.columns, strict=True):
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            col = pc.cast(col, pa.string())
            plain.add(name)
        for char, escaped in () if name in plain else COPY_ESCAPES:
            if pc.any(pc.match_substring(col, char)).as_py():
                col = pc.replace_substring(col, char, escaped)
        cols.append(pc.fill_null(col, "\\N"))
    lines = pc.binary_join_element_wise(*cols, "\t")
    # One buffer of all the lines, each ending in a newline, handed out without a copy.
    lines = pc.binary_join_element_wise(lines, "\n", "")
    whole = pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines)
    return memoryview(pc.binary_join(whole, "")[0].as_buffer())


def bulk_insert(
    session: Session, table: str, columns: tuple[str, ...], batches: Iterable[pa.Table], plain: Iterable[str] = ()
) -> int:
    """Insert Arrow batches in the session's transaction: COPY on Postgres, executemany on SQLite."""
    conn = session.connection()
    count = 0
    if is_sqlite(conn):
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        for batch in batches:
            cols = [batch.column(c).to_pylist() for c in columns]
            conn.exec_driver_sql(sql, list(zip(*cols, strict=True)))
            count += batch.num_rows
        return count
    raw = conn.connection.driver_connection
    encoded = ((b.num_rows, copy_text(b.select(list(columns)), plain)) for b in batches if b.num_rows)
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for rows, data in _ahead(encoded):
            copy.write(data)
            count += rows
    return count


STAGE = "curate_import_stage"


def _stage_sqlite(session: Session, batches: Iterable[pa.Table]) -> int:
    """Put the new rows in a temp table of the session's connection; returns their count.

    SQLite's temp database belongs to the connection, so filling it takes no lock on the
    main database: other requests (relabels, logins, other imports' checks) go on while a
    large file is staged. The caller then copies it into samples in one statement.
    """
    conn = session.connection()
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{STAGE}")
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE {STAGE} AS SELECT {', '.join(SAMPLE_COLUMNS)} FROM main.samples WHERE 0"
    )
    sql = f"INSERT INTO temp.{STAGE} ({', '.join(SAMPLE_COLUMNS)}) VALUES ({', '.join('?' * len(SAMPLE_COLUMNS))})"
    count = 0
    for batch in batches:
        cols = [batch.column(c).to_pylist() for c in SAMPLE_COLUMNS]
        conn.exec_driver_sql(sql, list(zip(*cols, strict=True)))
        count += batch.num_rows
    return count


def _recheck(session: Session, ds: Dataset, p: Prepared, staged: bool) -> None:
    """On SQLite, take the write lock and check that what `_prepare` relied on still holds.

    The file was checked with no lock held, so another import may have set the dataset's
    classes or features, or added one of this file's ids, in between. Both are rare and
    both make this import fail whole, with the reason, rather than write a wrong row.
    """
    begin_write(session)
    classes, settings = session.execute(select(Dataset.classes, Dataset.settings).where(Dataset.id == ds.id)).one()
    features = (settings or {}).get("features") if ds.task == "tabular" else None
    if list(classes or []) != p.classes_seen or (list(features) if features else None) != p.features_seen:
        raise ImportFailed(
            "the dataset's classes or features were set by another import while this file was checked; "
            "nothing was imported: import it again",
            [{"row": None, "field": "file", "message": "the dataset changed while the file was checked"}],
        )
    if not staged:
        return
    conn = session.connection()
    taken = conn.exec_driver_sql(
        f"SELECT t.external_id FROM temp.{STAGE} t JOIN main.samples s "
        "ON s.dataset_id = t.dataset_id AND s.external_id = t.external_id LIMIT 5"
    ).scalars().all()
    if taken:
        raise ImportFailed(
            "another import added some of this file's ids while it was checked; nothing was imported",
            [{"row": None, "field": "id", "message": f"id {_short(t)} already exists in this dataset"} for t in taken],
        )


def _ahead(items: Iterator) -> Iterator:
    """items, each made on a second thread while the previous one is sent.

    Arrow builds the next batch (without the GIL) while the server takes this one; one
    batch waiting at most keeps memory flat when the server is the slower side.
    """
    slot: queue.Queue = queue.Queue(maxsize=1)
    done = object()
    stop = threading.Event()

    def make() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                slot.put(item)
            slot.put(done)
        except BaseException as exc:  # raised again on the sending thread
            slot.put(exc)

    maker = threading.Thread(target=make, name="import-batches", daemon=True)
    maker.start()
    try:
        while (item := slot.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while maker.is_alive():  # let a maker blocked on the full slot finish
            try:
                slot.get(timeout=0.1)
            except queue.Empty:
                pass


def _write(session: Session, ds: Dataset, p: Prepared, user: User | None, result: ImportResult) -> None:
    """Write what _prepare validated: classes, feature order, new samples, updates, events."""
    # Updates: rows whose id exists and whose label or split differs.
    changed: list[tuple[int, Any, Any, Any, Any]] = []
    if len(p.existing_pos):
        new_labels = pc.take(p.labels, pa.array(p.existing_pos)).to_pylist()
        new_splits = pc.take(p.splits, pa.array(p.existing_pos)).to_pylist()
        for sid, old_l, old_s, version, new_l, new_s in zip(
            p.existing_ids.tolist(), p.existing_labels, p.existing_splits, p.existing_versions, new_labels, new_splits,
            strict=True,
        ):
            new_l = new_l or None
            if new_l != old_l or new_s != old_s:
                changed.append((sid, old_l, old_s, new_l, new_s, version))
    result.updated = len(changed)
    result.unchanged = len(p.existing_pos) - len(changed)
    new_count = p.n - len(p.existing_pos)

    now = utcnow()
    stamp = _timestamp(now)
    sqlite = is_sqlite(session.connection())
    if new_count:
        batches = _new_sample_batches(ds, p, stamp)
        if sqlite:
            # Staged in the connection's temp database, which takes no lock: only the one
            # INSERT ... SELECT below runs under the write lock.
            staged = _stage_sqlite(session, batches)
            _recheck(session, ds, p, staged=True)
            conn = session.connection()
            result.imported = conn.exec_driver_sql(
                f"INSERT INTO main.samples ({', '.join(SAMPLE_COLUMNS)}) "
                f"SELECT {', '.join(SAMPLE_COLUMNS)} FROM temp.{STAGE} ORDER BY rowid"
            ).rowcount
            conn.exec_driver_sql(f"DROP TABLE temp.{STAGE}")
            if result.imported != staged:
                raise RuntimeError(f"staged {staged} rows but copied {result.imported}")
        else:
            # Split, timestamps and the features' JSON (numbers, and names json.dumps escaped
            # without backslashes) need no COPY escaping.
            plain = ["split", "created_at", "updated_at"]
            if not any("\\" in json.dumps(n) for n in p.feature_names):
                plain.append("features")
            try:
                result.imported = bulk_insert(session, "samples", SAMPLE_COLUMNS, batches, plain)
            except psycopg.errors.UniqueViolation as exc:
                # Imports into one dataset are serialised (lock_dataset_imports); a row that
                # appeared meanwhile came from elsewhere. Refused whole, like any bad row.
                detail = exc.diag.message_detail or str(exc)
                raise ImportFailed(
                    "some of this file's ids were added to the dataset while it was imported; nothing was imported",
                    [{"row": None, "field": "id", "message": detail}],
                ) from None
    elif sqlite:
        _recheck(session, ds, p, staged=False)
    if new_count:
        if result.imported >= ANALYZE_AFTER_ROWS and not sqlite:
            # Fresh statistics at commit, not a minute later from autovacuum: with stale ones
            # the planner sorts a big export on disk instead of reading it in id order.
            session.connection().exec_driver_sql("ANALYZE samples")
    # The dataset row is written after COPY: a row changed by this transaction slows COPY's
    # foreign-key checks.
    changes: dict[str, Any] = {}
    if not ds.classes and result.classes:
        changes["classes"] = result.classes
    if ds.task == "tabular" and not ds.settings.get("features") and p.feature_names:
        changes["settings"] = {**ds.settings, "features": p.feature_names}
    if changes:
        session.execute(update(Dataset).where(Dataset.id == ds.id).values(**changes))
    if result.imported or result.updated:
        result.label_version = bump_label_version(session, ds.id)
    if changed:
        conn = session.connection()
        table = Sample.__table__
        for k in range(0, len(changed), BATCH_ROWS):
            chunk = changed[k : k + BATCH_ROWS]
            # Only the version that was checked is overwritten: a relabel made while the
            # file was being checked makes the import fail rather than be lost.
            done = conn.execute(
                update(table)
                .where(table.c.id == bindparam("sid"), table.c.version == bindparam("seen"))
                .values(label=bindparam("new_label"), split=bindparam("new_split"), version=table.c.version + 1, updated_at=now),
                [{"sid": sid, "seen": v, "new_label": nl, "new_split": ns} for sid, _, _, nl, ns, v in chunk],
            ).rowcount
            if done != len(chunk):
                raise ImportFailed(
                    "samples changed while the file was imported; nothing was imported: import it again",
                    [{"row": None, "field": "id", "message": "a sample this file updates was changed meanwhile"}],
                )
        events = pa.table(
            {
                "dataset_id": pa.repeat(pa.scalar(ds.id, pa.int64()), len(changed)),
                "sample_id": pa.array([c[0] for c in changed], pa.int64()),
                "old_label": pa.array([c[1] for c in changed], pa.string()),
                "new_label": pa.array([c[3] for c in changed], pa.string()),
                "old_split": pa.array([c[2] for c in changed], pa.string()),
                "new_split": pa.array([c[4] for c in changed], pa.string()),
                "source": pa.repeat(pa.scalar("import"), len(changed)),
                "user_id": pa.array([user.id if user else None] * len(changed), pa.int64()),
                "label_version": pa.repeat(pa.scalar(result.label_version, pa.int64()), len(changed)),
                "created_at": pa.repeat(pa.scalar(stamp), len(changed)),
            }
        )
        bulk_insert(session, "label_events", tuple(events.column_names), events.to_batches(BATCH_ROWS))
    session.expire(ds)
    session.flush()


# --------------------------------------------------------------------------- command line


def import_path(dataset: str, path: str, on_conflict: str, settings: Settings) -> str:
    """`curate import`: import a file into the dataset with that id or name; returns a summary."""
    from app.datasets.service import find_dataset
    from app.db import get_engine, session_scope

    with session_scope(get_engine(settings.resolved_database_url)) as session, open(path, "rb") as fh:
        ds = find_dataset(session, dataset)
        if ds is None:
            raise ValueError(f"no dataset {dataset!r}")
        result = import_file(session, ds, fh, PurePosixPath(path).name, on_conflict=on_conflict, settings=settings)
        name = ds.name
    return describe_result(result, name)


def describe_result(result: ImportResult, dataset_name: str) -> str:
    lines = [
        f"imported {result.imported} samples into {dataset_name!r}"
        + (f", updated {result.updated}" if result.updated else "")
        + (f", {result.unchanged} unchanged" if result.unchanged else "")
        + (f" (label version {result.label_version})" if result.label_version is not None else "")
    ]
    if result.classes:
        lines.append(f"classes: {', '.join(result.classes)}")
    if result.ignored_columns:
        lines.append(f"ignored columns: {', '.join(result.ignored_columns)}")
    for d in result.duplicates:
        of = d["duplicate_of"]
        where = f"sample {of['sample_id']}" if "sample_id" in of else f"row {of['row']}"
        lines.append(f"duplicate image: row {d['row']} has the same content as {where}")
    return "\n".join(lines)


def describe_failure(exc: Exception) -> str:
    if not isinstance(exc, ImportFailed):
        return str(exc)
    lines = [exc.detail]
    for e in exc.errors:
        where = "file" if e["row"] is None else f"row {e['row']}"
        lines.append(f"  {where}, {e['field']}: {e['message']}")
    if exc.more:
        lines.append(f"  ... and {exc.more} more")
    return "\n".join(lines)

