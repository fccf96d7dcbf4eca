"""Read an uploaded CSV, JSON Lines or Parquet file into an Arrow table, naming what is unreadable.

A problem that stops the whole file (not UTF-8, not CSV, a row with the wrong number of
columns) is recorded in `Errors` with the row and column where it can be found, and the
reader returns None. A Curate CSV export (it has a label_source column) is read as one
whose values may span lines and has its spreadsheet escape taken off (`unescape_export`).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from app.datasets.importers.validation import MISSING, Errors, short

FILE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".zip": "zip"}
# Arrow reads CSV and JSON in blocks of this size; a row must fit in one.
CSV_BLOCK_BYTES = 8 << 20
# The CSV escape of a Curate export (see exporters), and the columns whose cells it escapes.
EXPORT_ESCAPE = "'"
ESCAPED_COLUMNS = ("id", "external_id", "label", "text", "image_path", "predicted", "suggested_label", "consensus_label")


def file_format(filename: str) -> str | None:
    """The format a file name's suffix says (csv, jsonl, parquet or zip); None for any other."""
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


def _read_header(fh: IO[bytes], errors: Errors) -> list[str] | None:
    """The CSV header's column names; None, with the reason recorded, when it cannot be read."""
    fh.seek(0)
    try:
        return _csv_header(fh)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        if _not_utf8(exc):
            _report_bad_utf8_csv(fh, errors, exc)
        elif "Empty CSV" in str(exc):
            errors.add(None, "file", "the file is empty")
        else:
            errors.add(None, "file", f"not a readable CSV file: {exc}")
        return None


def read_csv(fh: IO[bytes], errors: Errors, string_columns: Iterable[str], multiline: bool = False) -> pa.Table | None:
    """A CSV file as an Arrow table: string_columns as text, every other column as float64.

    A feature column with a value that is not a number fails the fast typed read; the file
    is then read again as text so that every bad cell can be named by row. A Curate export
    (it has a label_source column) is unescaped (unescape_export), and read as one whose
    values may span lines, as an export's ids and labels may.
    """
    header = _read_header(fh, errors)
    if header is None:
        return None
    export = "label_source" in header
    multiline = multiline or export
    strings = set(string_columns)
    bad_rows: list[tuple[int | None, str]] = []

    def on_bad_row(row) -> str:
        bad_rows.append((row.number, f"expected {row.expected_columns} columns, found {row.actual_columns}: {short(row.text)}"))
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


def read_jsonl(fh: IO[bytes], errors: Errors, list_columns: Iterable[str] = ()) -> pa.Table | None:
    """A JSON Lines file as an Arrow table; one JSON object per line.

    list_columns (a multi-label dataset's label) hold JSON arrays of strings or null: a
    string or any other value there is an error on its row, and the column stays a list.
    """
    list_columns = tuple(list_columns)
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
        return _check_lists(table, list_columns, errors)
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
            if key in list_columns and not _is_list(value):
                errors.add(n, key, _not_a_list(value))
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
    return pa.table({k: pa.array(v, pa.list_(pa.string())) if k in list_columns else _python_column(v)
                     for k, v in columns.items()})


def _is_list(value) -> bool:
    """Whether a JSON value is a list column's: null, or an array of strings."""
    return value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _not_a_list(value) -> str:
    if isinstance(value, str):
        return f"a multi-label dataset takes a JSON array of class names, not a string ({short(value)})"
    return f"a multi-label dataset takes a JSON array of class names, not {short(json.dumps(value))}"


def _check_lists(table: pa.Table, list_columns: tuple[str, ...], errors: Errors) -> pa.Table | None:
    """A typed JSON Lines table whose list_columns are lists of strings; None, with an error on
    every row that holds something else, when one is not."""
    before = errors.total
    for name in list_columns:
        if name not in table.column_names:
            continue
        t = table.column(name).type
        if pa.types.is_null(t) or (pa.types.is_list(t) and (pa.types.is_string(t.value_type) or pa.types.is_null(t.value_type))):
            continue
        col = table.column(name)
        for i in np.flatnonzero(pc.is_valid(col).to_numpy(zero_copy_only=False)):
            errors.add(int(i), name, _not_a_list(col[int(i)].as_py()))
    return None if errors.total > before else table


def _python_column(values: list) -> pa.Array:
    """Arrow array from JSON values: numbers stay numbers when they all are, else text."""
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {int, float}:
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values], pa.string())


def read_parquet(fh: IO[bytes], errors: Errors) -> pa.Table | None:
    """A Parquet file as an Arrow table, as its schema types it."""
    fh.seek(0)
    try:
        return pq.read_table(fh)
    except (pa.ArrowException, OSError) as exc:
        errors.add(None, "file", f"not a readable Parquet file: {exc}")
        return None


def read_table(
    fh: IO[bytes], fmt: str, errors: Errors, string_columns: Iterable[str], multiline: bool = False,
    list_columns: Iterable[str] = (),
) -> pa.Table | None:
    """A csv, jsonl or parquet file (fmt) as an Arrow table; None, with the errors recorded, if unreadable.

    list_columns: the columns a JSON Lines file must give as arrays of strings (read_jsonl).
    """
    if fmt == "csv":
        return read_csv(fh, errors, string_columns, multiline)
    if fmt == "jsonl":
        return read_jsonl(fh, errors, list_columns)
    return read_parquet(fh, errors)
