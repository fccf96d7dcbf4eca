"""The export's bytes: Arrow tables written as CSV, JSON Lines or Parquet, one chunk at a time.

CSV text cells and header names that a spreadsheet would run as a formula (they start with
=, +, -, @, tab or carriage return) are escaped with a leading "'", and so is every one
that starts with "'" itself. That makes the escape reversible: the importer strips exactly
one leading "'" from the text cells and header names of a Curate CSV export (a CSV with a
label_source column) and gets back what was exported. Numbers and booleans are never
escaped. JSONL and Parquet carry values and names unchanged; Parquet keeps each column's
type (strings stay strings, so a class named "6" is never read back as a number).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.datasets.importers import INTEGER_TEXT

# A cell starting with one of these runs as a formula in spreadsheets (OWASP CSV injection).
FORMULA_CHARS = ("=", "+", "-", "@", "\t", "\r")
# The CSV escape, put before a text cell that starts with a formula character or with the
# escape itself, so that stripping one leading escape from every escaped cell undoes it.
ESCAPE = "'"
ESCAPED_STARTS = (*FORMULA_CHARS, ESCAPE)
ESCAPED_START = r"^[=+\-@\t\r']"
# What json.dumps escapes in a string (with ensure_ascii=False): quote, backslash, controls.
JSON_SPECIAL = r'[\x00-\x1f"\\]'


def escape_formulas(arr: pa.Array) -> pa.Array:
    """Prefix ' to text cells that start like a formula (=, +, -, @, tab, carriage return) or with '."""
    risky = pc.match_substring_regex(arr, ESCAPED_START)
    return pc.if_else(risky, pc.binary_join_element_wise(ESCAPE, arr, ""), arr)


def escape_name(name: str) -> str:
    """A CSV header cell, escaped as text cells are: a feature can be named '=HYPERLINK(...)'."""
    return ESCAPE + name if name[:1] in ESCAPED_STARTS else name


def csv_chunk(table: pa.Table, header: bool) -> bytes:
    """Rows as CSV (booleans as true and false), every text cell formula-escaped."""
    columns = [escape_formulas(c.combine_chunks()) if pa.types.is_string(c.type) else c for c in table.columns]
    names = [escape_name(n) for n in table.column_names] if header else table.column_names
    table = pa.Table.from_arrays(columns, names=names)
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=header))
    return sink.getvalue()


def _json_strings(arr: pa.Array) -> pa.Array:
    """Each string as a JSON literal, as json.dumps(ensure_ascii=False) writes it.

    A string without a quote, backslash or control character only needs its quotes, which
    Arrow adds to the whole column at once; the others are encoded in Python, each distinct
    value once. Ids, labels and urls are nearly always plain, so a million unique ids cost
    no Python call each.
    """
    quoted = pc.binary_join_element_wise('"', arr, '"', "")
    special = pc.fill_null(pc.match_substring_regex(arr, JSON_SPECIAL), False)
    if pc.any(special).as_py():
        enc = pc.dictionary_encode(pc.filter(arr, special))
        values = pa.array([json.dumps(v, ensure_ascii=False) for v in enc.dictionary.to_pylist()], pa.string())
        quoted = pc.replace_with_mask(quoted, special, pc.take(values, enc.indices))
    return pc.fill_null(quoted, "null")


def _json_numbers(arr: pa.Array) -> pa.Array:
    """Each float in its shortest round-trip form (2.0, not 2); null for missing, NaN and infinities."""
    text = pc.cast(arr, pa.string())
    # Bare digits only: Arrow writes 2**53 as "9.007199254740992e+15", already a float.
    integral = pc.match_substring_regex(text, INTEGER_TEXT)
    if pc.any(integral).as_py():
        text = pc.if_else(integral, pc.binary_join_element_wise(text, ".0", ""), text)
    return pc.fill_null(pc.if_else(pc.is_finite(arr), text, pa.scalar(None, pa.string())), "null")


def _json_lists(col: pa.Array) -> pa.Array:
    """Each list of strings as a JSON array (a multi-label dataset's label); null stays null."""
    items = _json_strings(pc.list_flatten(col))
    lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(col) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), items), ",")
    arrays = pc.binary_join_element_wise("[", joined, "]", "")
    return pc.if_else(pc.is_valid(col), arrays, pa.scalar("null", pa.string()))


def _json_values(col: pa.Array) -> pa.Array:
    """One column's cells as JSON literals, by the column's type."""
    if pa.types.is_string(col.type):
        return _json_strings(col)
    if pa.types.is_list(col.type):
        return _json_lists(col)
    if pa.types.is_boolean(col.type):
        return pc.fill_null(pc.if_else(col, "true", "false"), "null")
    if pa.types.is_integer(col.type):
        return pc.fill_null(pc.cast(col, pa.string()), "null")
    return _json_numbers(col)


def jsonl_chunk(table: pa.Table) -> bytes:
    """Rows as JSON objects, one a line, built column by column in Arrow (no Python per row)."""
    if table.num_rows == 0:
        return b""
    parts: list = []
    for k, (name, col) in enumerate(zip(table.column_names, table.columns, strict=True)):
        parts.append(("{" if k == 0 else ",") + json.dumps(name) + ":")
        parts.append(_json_values(col.combine_chunks()))
    parts.append("}\n")
    lines = pc.binary_join_element_wise(*parts, "")
    whole = pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines)
    return pc.binary_join(whole, "")[0].as_buffer().to_pybytes()


class _Drain(io.RawIOBase):
    """A write-only sink whose bytes are taken out after each Parquet row group."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        data = bytes(b)
        self._parts.append(data)
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def encode(tables: Iterator[pa.Table], schema: pa.Schema, fmt: str) -> Iterator[bytes]:
    """The file in fmt from tables of that schema: a Parquet row group per table, or the
    table's CSV (the header with the first) or JSONL; an empty CSV still has its header."""
    if fmt == "parquet":
        sink = _Drain()
        writer = pq.ParquetWriter(sink, schema)
        try:
            for table in tables:
                if table.num_rows:
                    writer.write_table(table, row_group_size=table.num_rows)
                    yield sink.take()
        finally:
            writer.close()
        yield sink.take()
        return
    first = True
    for table in tables:
        data = csv_chunk(table, header=first) if fmt == "csv" else jsonl_chunk(table)
        first = False
        if data:
            yield data
    if first and fmt == "csv":
        yield csv_chunk(schema.empty_table(), header=True)
