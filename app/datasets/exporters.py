"""Export a dataset as CSV, JSONL or Parquet, streamed in chunks with flat memory.

The columns, and the SELECT that computes them, are app.datasets.export_columns'; how
each format is written, and the CSV formula escape, app.datasets.export_encoding's.

Every export reads in a read-only session of its own (not the request's) and never holds
more than a chunk. On Postgres the SELECT runs inside COPY ... TO STDOUT, read on a second
thread: a CSV export is written by Postgres itself and passes straight through, JSONL and
Parquet are built from the same stream parsed by Arrow. On SQLite rows come in chunks from
a streamed cursor (yield_per). Feature names are data, never SQL: the SELECT names its
columns by position and takes the names as bound parameters, and the CSV header is written
here, not by Postgres.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.datasets.export_columns import (
    DEFAULT_CHUNK_ROWS, RESERVED, ExportPlan, dataset_features, describe, export_statement, sql_columns, url_root,
)
from app.datasets.export_encoding import ESCAPED_STARTS, csv_chunk, encode, escape_name
from app.datasets.tagsets import lists_from_strings
from app.db import is_sqlite, session_factory
from app.errors import Conflict, Invalid, NotFound
from app.models import Dataset, Snapshot
from app.runs.service import latest_run_id

# What other modules use of the export, here in one place (the column and encoding modules
# behind it are its parts).
__all__ = [
    "CHUNK_ROWS", "COPY_BLOCK_BYTES", "FORMATS", "MEDIA_TYPES", "ExportPlan", "describe", "escape_name",
    "export_chunks", "export_path", "plan_export", "write_export",
]

FORMATS = ("csv", "jsonl", "parquet")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
# Rows per chunk read from SQLite; plan_export reads it when it plans, so a test can lower it.
CHUNK_ROWS = DEFAULT_CHUNK_ROWS
# Postgres exports arrive through COPY in blocks of about this many bytes.
COPY_BLOCK_BYTES = 4 << 20


def plan_export(
    session: Session, ds: Dataset, split: str | None = None, snapshot_id: int | None = None, root_path: str = ""
) -> ExportPlan:
    """Check the snapshot (NotFound when unknown or another dataset's) and fix the run to read.

    root_path: the path the app is served under (the request's ASGI root_path), which the url
    column's paths start with. Conflict when a feature is named like an export column.
    """
    if snapshot_id is not None:
        snap = session.get(Snapshot, snapshot_id)
        if snap is None or snap.dataset_id != ds.id:
            raise NotFound(f"snapshot {snapshot_id} not found in dataset {ds.id}")
    features = tuple(dataset_features(ds, session)) if ds.task == "tabular" else ()
    clash = tuple(f for f in features if f in RESERVED)
    if clash:
        raise Conflict(f"feature names {list(clash)} clash with export columns")
    classes = list(ds.classes or [])
    risky = not classes or any(c[:1] in ESCAPED_STARTS for c in classes)
    run_id = latest_run_id(session, ds.id)
    return ExportPlan(ds.id, ds.task, features, split, snapshot_id, run_id, chunk_rows=CHUNK_ROWS, risky_labels=risky,
                      url_root=url_root(root_path), multilabel=ds.multilabel)


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


def _finish(plan: ExportPlan, raw: pa.Table, json_features: bool) -> pa.Table:
    """The SELECT's columns as the export's: on SQLite (json_features), the features' JSON
    column spread out into one column per feature."""
    arrays = raw.columns
    if json_features and plan.task == "tabular":
        at = raw.column_names.index("features")
        feats = _features_table(raw.column(at).combine_chunks(), plan.features)
        arrays = [*arrays[:at], *feats.columns, *arrays[at + 1:]]
    return pa.Table.from_arrays(arrays, schema=plan.schema)


def _tables_from_rows(conn, plan: ExportPlan) -> Iterator[pa.Table]:
    """SQLite: chunks of rows from a streamed cursor (yield_per), as Arrow tables."""
    columns = sql_columns(plan, postgres=False)
    result = conn.execute(export_statement(plan, postgres=False).execution_options(yield_per=plan.chunk_rows))
    for rows in result.partitions():
        cols = list(zip(*rows, strict=True))
        raw = pa.Table.from_arrays([pa.array(col, typ) for (_, typ), col in zip(columns, cols, strict=True)],
                                   names=[name for name, _ in columns])
        yield _finish(plan, raw, json_features=True)


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
    columns = sql_columns(plan, postgres=True)
    convert = pacsv.ConvertOptions(
        column_types=dict(columns), strings_can_be_null=True, quoted_strings_can_be_null=False, null_values=[""]
    )
    read = pacsv.ReadOptions(column_names=[c for c, _ in columns], block_size=COPY_BLOCK_BYTES * 2)
    parse = pacsv.ParseOptions(newlines_in_values=plan.task == "text")
    for block in _copy_blocks(conn.connection.driver_connection, *_copy_sql(conn, plan, False), COPY_BLOCK_BYTES):
        raw = pacsv.read_csv(pa.BufferReader(block), read_options=read, parse_options=parse, convert_options=convert)
        yield _finish(plan, raw, json_features=False)


def _for_file(tables: Iterator[pa.Table], plan: ExportPlan, fmt: str) -> Iterator[pa.Table]:
    """The tables as the file in fmt has them: a multi-label dataset's canonical "a|b" labels
    as lists of classes in JSONL and Parquet (CSV keeps the text)."""
    if not plan.label_lists(fmt):
        yield from tables
        return
    schema = plan.file_schema(fmt)
    at = schema.get_field_index("label")
    for table in tables:
        yield table.set_column(at, schema.field(at), lists_from_strings(table.column(at)))


def export_chunks(engine: Engine, plan: ExportPlan, fmt: str) -> Iterator[bytes]:
    """The export file in chunks, read in a read-only session of its own (not the request's)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    with session_factory(engine, readonly=True)() as session:
        conn = session.connection()
        if is_sqlite(conn):
            yield from encode(_for_file(_tables_from_rows(conn, plan), plan, fmt), plan.file_schema(fmt), fmt)
        elif fmt == "csv":
            # Postgres writes the rows itself, formula escaping included, and the bytes pass
            # through; the header is written here, escaped the same way.
            yield csv_chunk(plan.schema.empty_table(), header=True)
            yield from _copy_blocks(conn.connection.driver_connection, *_copy_sql(conn, plan, True), COPY_BLOCK_BYTES)
        else:
            yield from encode(_for_file(_tables_from_copy(conn, plan), plan, fmt), plan.file_schema(fmt), fmt)


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
