"""Export a dataset as CSV, JSONL or Parquet, streamed in chunks with flat memory.

Columns: id (the external id, or the internal id when there is none), split, label,
label_source (original when the label is the imported one, corrected when it changed,
empty for a sample that never had a label), the content (text; image = blob sha256 and
image_path; or one column per feature in the dataset's feature order), then the latest
succeeded run's predicted label and scores (empty until there is a run), then the
annotators' answers (docs/annotations.md): consensus_label (the decided label of several
answers, or the one answer), consensus_rule (annotation, crowdlab, reviewer, or tie while a
reviewer is awaited), annotations (how many answers) and agreement (the share of the answers
that give the consensus, with two or more). The answers' columns are as they are now, also
in a snapshot's export.

Every export reads in a read-only session of its own (not the request's) and never holds
more than a chunk. On Postgres the SELECT runs inside COPY ... TO STDOUT, read on a second
thread: a CSV export is written by Postgres itself and passes straight through, JSONL and
Parquet are built from the same stream parsed by Arrow. On SQLite rows come in chunks from
a streamed cursor (yield_per). Feature names are data, never SQL: the SELECT names its
columns by position and takes the names as bound parameters, and the CSV header is written
here, not by Postgres.

CSV text cells and header names that a spreadsheet would run as a formula (they start with
=, +, -, @, tab or carriage return) are escaped with a leading "'", and so is every one
that starts with "'" itself. That makes the escape reversible: the importer strips exactly
one leading "'" from the text cells and header names of a Curate CSV export (a CSV with a
label_source column) and gets back what was exported. Numbers are never escaped. JSONL and
Parquet carry values and names unchanged.
"""

from __future__ import annotations

import io
import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from sqlalchemy import (
    Engine,
    Float,
    String,
    Text,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    select,
    type_coerce,
)
from sqlalchemy.orm import Session

from app.datasets.importers import INTEGER_TEXT
from app.db import is_sqlite, session_factory
from app.errors import Conflict, Invalid, NotFound
from app.datasets.answer_columns import CONSENSUS_COLUMNS, answer_columns
from app.models import Dataset, Prediction, Sample, Snapshot, SnapshotItem
from app.runs.service import latest_run_id

FORMATS = ("csv", "jsonl", "parquet")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
SCORE_COLUMNS = ("loss", "self_confidence", "normalized_margin", "confusion_margin", "entropy")
CHUNK_ROWS = 50_000
# Postgres exports arrive through COPY in blocks of about this many bytes.
COPY_BLOCK_BYTES = 4 << 20
# A cell starting with one of these runs as a formula in spreadsheets (OWASP CSV injection).
FORMULA_CHARS = ("=", "+", "-", "@", "\t", "\r")
# The CSV escape, put before a text cell that starts with a formula character or with the
# escape itself, so that stripping one leading escape from every escaped cell undoes it.
ESCAPE = "'"
ESCAPED_STARTS = (*FORMULA_CHARS, ESCAPE)
ESCAPED_START = r"^[=+\-@\t\r']"


@dataclass(frozen=True)
class ExportPlan:
    """What to export, resolved in the request's session before streaming starts."""

    dataset_id: int
    task: str
    features: tuple[str, ...] = ()
    split: str | None = None
    snapshot_id: int | None = None
    run_id: int | None = None
    chunk_rows: int = CHUNK_ROWS
    risky_labels: bool = True  # a class name starts like a formula (or the classes are unknown)

    @property
    def columns(self) -> list[str]:
        content = {"text": ["text"], "image": ["image", "image_path"]}.get(self.task, list(self.features))
        return ["id", "split", "label", "label_source", *content, "predicted", *SCORE_COLUMNS,
                *(c for c, _ in CONSENSUS_COLUMNS)]

    @property
    def schema(self) -> pa.Schema:
        floats = set(self.features) | set(SCORE_COLUMNS)
        typed = dict(CONSENSUS_COLUMNS)
        return pa.schema([(c, typed.get(c, pa.float64() if c in floats else pa.string())) for c in self.columns])


def dataset_features(ds: Dataset, session: Session) -> list[str]:
    """The dataset's feature order: as imported, else the keys of its first sample."""
    names = (ds.settings or {}).get("features")
    if names:
        return list(names)
    first = session.scalar(
        select(Sample.features).where(Sample.dataset_id == ds.id, Sample.features.is_not(None)).order_by(Sample.id).limit(1)
    )
    return list(first or {})


def plan_export(session: Session, ds: Dataset, split: str | None = None, snapshot_id: int | None = None) -> ExportPlan:
    """Check the snapshot (NotFound when unknown or another dataset's) and fix the run to read.

    Conflict when a feature is named like an export column.
    """
    if snapshot_id is not None:
        snap = session.get(Snapshot, snapshot_id)
        if snap is None or snap.dataset_id != ds.id:
            raise NotFound(f"snapshot {snapshot_id} not found in dataset {ds.id}")
    features = tuple(dataset_features(ds, session)) if ds.task == "tabular" else ()
    clash = tuple(f for f in features if f in ("id", "split", "label", "label_source", "predicted", *SCORE_COLUMNS,
                                               *(c for c, _ in CONSENSUS_COLUMNS)))
    if clash:
        raise Conflict(f"feature names {list(clash)} clash with export columns")
    classes = list(ds.classes or [])
    risky = not classes or any(c[:1] in ESCAPED_STARTS for c in classes)
    run_id = latest_run_id(session, ds.id)
    return ExportPlan(ds.id, ds.task, features, split, snapshot_id, run_id, chunk_rows=CHUNK_ROWS, risky_labels=risky)


def _escaped(expr):
    """SQL for escape_formulas: a leading quote on text that starts like a formula or with a quote."""
    return case((func.substr(expr, 1, 1).in_(ESCAPED_STARTS), literal(ESCAPE, String) + expr), else_=expr)


def _sql_columns(plan: ExportPlan, postgres: bool) -> list[tuple[str, pa.DataType]]:
    """The columns the SELECT returns, with their Arrow types.

    Postgres hands out each feature as its own column (->>); SQLite hands out the JSON text,
    which Arrow parses a chunk at a time.
    """
    if plan.task == "tabular":
        content = [(f, pa.float64()) for f in plan.features] if postgres else [("features", pa.string())]
    else:
        content = [(c, pa.string()) for c in ({"text": ["text"], "image": ["image", "image_path"]}[plan.task])]
    return [
        *((c, pa.string()) for c in ("id", "split", "label", "label_source")),
        *content,
        ("predicted", pa.string()),
        *((c, pa.float64()) for c in SCORE_COLUMNS),
        *CONSENSUS_COLUMNS,
    ]


def export_statement(plan: ExportPlan, postgres: bool, escape: bool = False):
    """One SELECT for the whole export, in sample id order; escape: formula-escape text in SQL."""
    if plan.snapshot_id is not None:
        split_col, label_col = SnapshotItem.split, SnapshotItem.label
    else:
        split_col, label_col = Sample.split, Sample.label
    label_source = case(
        (and_(label_col.is_(None), Sample.original_label.is_(None)), None),
        (label_col == Sample.original_label, "original"),
        else_="corrected",
    )
    # Only what can hold arbitrary text is escaped: the split, label_source, internal ids and
    # sha256 digests cannot start like a formula or with a quote, and labels only when a
    # class name does.
    maybe = _escaped if escape else (lambda e: e)
    labels = maybe if plan.risky_labels else (lambda e: e)
    text_exprs = [
        func.coalesce(maybe(Sample.external_id), cast(Sample.id, String)), split_col, labels(label_col), label_source
    ]
    if plan.task == "text":
        text_exprs.append(maybe(Sample.text))
        content = []
    elif plan.task == "image":
        text_exprs += [Sample.image_blob, maybe(Sample.image_path)]
        content = []
    elif postgres:
        content = [type_coerce(Sample.features.op("->>")(literal(f, String)), String) for f in plan.features]
    else:
        content = [func.coalesce(cast(Sample.features, Text), "{}")]
    if plan.run_id is not None:
        predicted, scores = Prediction.label, [getattr(Prediction, c) for c in SCORE_COLUMNS]
    else:
        predicted, scores = cast(null(), String), [cast(null(), Float) for _ in SCORE_COLUMNS]
    predicted = labels(predicted)
    consensus, with_answers = answer_columns(plan.dataset_id, labels)
    exprs = [*text_exprs, *content, predicted, *scores, *consensus]
    # Columns are named by position: a feature name is data, and may be anything.
    assert len(exprs) == len(_sql_columns(plan, postgres))
    stmt = select(*(e.label(f"c{k}") for k, e in enumerate(exprs))).where(Sample.dataset_id == plan.dataset_id)
    if plan.snapshot_id is not None:
        stmt = stmt.join(
            SnapshotItem, and_(SnapshotItem.sample_id == Sample.id, SnapshotItem.snapshot_id == plan.snapshot_id)
        )
    if plan.run_id is not None:
        stmt = stmt.outerjoin(Prediction, and_(Prediction.sample_id == Sample.id, Prediction.run_id == plan.run_id))
    stmt = with_answers(stmt)
    if plan.split is not None:
        stmt = stmt.where(split_col == plan.split)
    return stmt.order_by(Sample.id)


def _features_table(texts: pa.Array, names: tuple[str, ...]) -> pa.Table:
    """Parse a column of JSON objects into one float64 column per feature, in Arrow."""
    schema = pa.schema([(n, pa.float64()) for n in names])
    whole = pa.ListArray.from_arrays(pa.array([0, len(texts)], pa.int32()), pc.fill_null(texts, "{}"))
    data = pc.binary_join(whole, "\n")[0].as_buffer()
    return pajson.read_json(
        pa.BufferReader(data),
        read_options=pajson.ReadOptions(block_size=max(1 << 20, data.size + 1)),
        parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
    )


def _finish(plan: ExportPlan, raw: pa.Table) -> pa.Table:
    """The SELECT's columns as the export's: JSON features spread out into their own columns."""
    if "features" in raw.column_names and plan.task == "tabular":
        feats = _features_table(raw.column("features").combine_chunks(), plan.features)
        arrays = [*raw.columns[:4], *feats.columns, *raw.columns[5:]]
    else:
        arrays = raw.columns
    return pa.Table.from_arrays(arrays, schema=plan.schema)


def _tables_from_rows(conn, plan: ExportPlan) -> Iterator[pa.Table]:
    """SQLite: chunks of rows from a streamed cursor (yield_per), as Arrow tables."""
    columns = _sql_columns(plan, postgres=False)
    result = conn.execute(export_statement(plan, postgres=False).execution_options(yield_per=plan.chunk_rows))
    for rows in result.partitions():
        cols = list(zip(*rows, strict=True))
        raw = pa.table({name: pa.array(col, typ) for (name, typ), col in zip(columns, cols, strict=True)})
        yield _finish(plan, raw)


def _copy_blocks(driver_conn, sql: str, params: dict, block_bytes: int) -> Iterator[bytes]:
    """The output of COPY ... TO STDOUT in blocks of whole rows, read on a second thread.

    The reader keeps the server busy while this thread converts the previous block; the
    bounded queue keeps memory flat. Stopping early cancels the query.
    """
    blocks: queue.Queue = queue.Queue(maxsize=3)
    stop = threading.Event()
    done = object()

    def read() -> None:
        try:
            parts: list[bytes] = []
            size = 0
            with driver_conn.cursor() as cur, cur.copy(sql, params) as copy:
                for row in copy:
                    if stop.is_set():
                        # Leaving a COPY early leaves the connection busy: read on until the
                        # cancel below ends it, so the session can roll back.
                        continue
                    parts.append(bytes(row))
                    size += len(row)
                    if size >= block_bytes:
                        blocks.put(b"".join(parts))
                        parts, size = [], 0
            if parts:
                blocks.put(b"".join(parts))
            blocks.put(done)
        except BaseException as exc:  # handed to the consumer, which raises it
            blocks.put(exc)

    reader = threading.Thread(target=read, name="export-copy", daemon=True)
    reader.start()
    try:
        while True:
            item = blocks.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if reader.is_alive():
            stop.set()
            driver_conn.cancel_safe()
            while reader.is_alive():  # unblock a reader waiting on a full queue
                try:
                    blocks.get(timeout=0.1)
                except queue.Empty:
                    pass
            reader.join()


def _copy_sql(conn, plan: ExportPlan, csv_out: bool) -> tuple[str, dict]:
    """COPY (the export's SELECT) TO STDOUT as CSV, and the parameters psycopg binds into it.

    COPY takes no server-side parameters, so psycopg merges them into the statement on the
    client, with its own quoting. Rendering them as literals here instead would leave the
    percent signs that SQLAlchemy doubles for psycopg doubled: a feature named 'pct%s' was
    looked up as 'pct%%s' and exported empty.
    """
    stmt = export_statement(plan, postgres=True, escape=csv_out)
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    return f"COPY ({compiled}) TO STDOUT (FORMAT csv)", dict(compiled.params)


def _tables_from_copy(conn, plan: ExportPlan) -> Iterator[pa.Table]:
    """Postgres: stream the SELECT through COPY ... TO STDOUT and parse it with Arrow's CSV reader."""
    columns = _sql_columns(plan, postgres=True)
    convert = pacsv.ConvertOptions(
        column_types=dict(columns), strings_can_be_null=True, quoted_strings_can_be_null=False, null_values=[""]
    )
    read = pacsv.ReadOptions(column_names=[c for c, _ in columns], block_size=COPY_BLOCK_BYTES * 2)
    parse = pacsv.ParseOptions(newlines_in_values=plan.task == "text")
    for block in _copy_blocks(conn.connection.driver_connection, *_copy_sql(conn, plan, False), COPY_BLOCK_BYTES):
        raw = pacsv.read_csv(pa.BufferReader(block), read_options=read, parse_options=parse, convert_options=convert)
        yield _finish(plan, raw)


# --------------------------------------------------------------------------- formats


def escape_formulas(arr: pa.Array) -> pa.Array:
    """Prefix ' to text cells that start like a formula (=, +, -, @, tab, carriage return) or with '."""
    risky = pc.match_substring_regex(arr, ESCAPED_START)
    return pc.if_else(risky, pc.binary_join_element_wise(ESCAPE, arr, ""), arr)


def escape_name(name: str) -> str:
    """A CSV header cell, escaped as text cells are: a feature can be named '=HYPERLINK(...)'."""
    return ESCAPE + name if name[:1] in ESCAPED_STARTS else name


def csv_chunk(table: pa.Table, header: bool) -> bytes:
    columns = [escape_formulas(c.combine_chunks()) if pa.types.is_string(c.type) else c for c in table.columns]
    names = [escape_name(n) for n in table.column_names] if header else table.column_names
    table = pa.Table.from_arrays(columns, names=names)
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=header))
    return sink.getvalue()


def _json_strings(arr: pa.Array) -> pa.Array:
    """Each string as a JSON literal; each distinct value is encoded once."""
    enc = pc.dictionary_encode(arr)
    values = pa.array([json.dumps(v, ensure_ascii=False) for v in enc.dictionary.to_pylist()], pa.string())
    return pc.fill_null(pc.take(values, enc.indices), "null")


def _json_numbers(arr: pa.Array) -> pa.Array:
    """Each float in its shortest round-trip form (2.0, not 2); null for missing, NaN and infinities."""
    text = pc.cast(arr, pa.string())
    # Bare digits only: Arrow writes 2**53 as "9.007199254740992e+15", already a float.
    integral = pc.match_substring_regex(text, INTEGER_TEXT)
    if pc.any(integral).as_py():
        text = pc.if_else(integral, pc.binary_join_element_wise(text, ".0", ""), text)
    return pc.fill_null(pc.if_else(pc.is_finite(arr), text, pa.scalar(None, pa.string())), "null")


def jsonl_chunk(table: pa.Table) -> bytes:
    if table.num_rows == 0:
        return b""
    parts: list = []
    for k, (name, col) in enumerate(zip(table.column_names, table.columns, strict=True)):
        col = col.combine_chunks()
        parts.append(("{" if k == 0 else ",") + json.dumps(name) + ":")
        if pa.types.is_string(col.type):
            parts.append(_json_strings(col))
        elif pa.types.is_integer(col.type):
            parts.append(pc.fill_null(pc.cast(col, pa.string()), "null"))
        else:
            parts.append(_json_numbers(col))
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


def _encode(tables: Iterator[pa.Table], plan: ExportPlan, fmt: str) -> Iterator[bytes]:
    if fmt == "parquet":
        sink = _Drain()
        writer = pq.ParquetWriter(sink, plan.schema)
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
        yield csv_chunk(plan.schema.empty_table(), header=True)


def export_chunks(engine: Engine, plan: ExportPlan, fmt: str) -> Iterator[bytes]:
    """The export file in chunks, read in a read-only session of its own (not the request's)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    with session_factory(engine, readonly=True)() as session:
        conn = session.connection()
        if is_sqlite(conn):
            yield from _encode(_tables_from_rows(conn, plan), plan, fmt)
        elif fmt == "csv":
            # Postgres writes the rows itself, formula escaping included, and the bytes pass
            # through; the header is written here, escaped the same way.
            yield csv_chunk(plan.schema.empty_table(), header=True)
            yield from _copy_blocks(conn.connection.driver_connection, *_copy_sql(conn, plan, True), COPY_BLOCK_BYTES)
        else:
            yield from _encode(_tables_from_copy(conn, plan), plan, fmt)


def write_export(engine: Engine, plan: ExportPlan, fmt: str, out: IO[bytes]) -> None:
    """Write the whole export to a binary file."""
    for chunk in export_chunks(engine, plan, fmt):
        out.write(chunk)


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(message, errors=[{"field": field, "message": message}])


def export_path(dataset: str, fmt: str, split: str | None, snapshot: int | None, out: str | None, stdout: IO[bytes]) -> None:
    """`curate export`: write the export of the dataset with that id or name to out, or stdout.

    Raises Invalid for a format or split it cannot write, NotFound for an unknown dataset or
    snapshot, and Conflict as plan_export does.
    """
    from app.datasets.service import find_dataset
    from app.db import get_engine, session_scope
    from app.models import Split

    if fmt not in FORMATS:
        raise _invalid("format", f"format must be one of {', '.join(FORMATS)}")
    if split is not None and split not in {s.value for s in Split}:
        raise _invalid("split", f"split must be one of {', '.join(s.value for s in Split)}")
    if out is None and fmt == "parquet":
        raise _invalid("out", "parquet is binary: give --out FILE")
    engine = get_engine()
    with session_scope(engine, readonly=True) as session:
        ds = find_dataset(session, dataset)
        if ds is None:
            raise NotFound(f"no dataset {dataset!r}")
        plan = plan_export(session, ds, split=split, snapshot_id=snapshot)
    if out is None:
        write_export(engine, plan, fmt, stdout)
        stdout.flush()
        return
    with open(out, "wb") as fh:
        write_export(engine, plan, fmt, fh)
