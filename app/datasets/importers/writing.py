"""Write a validated import in one transaction: new samples in bulk, updates, label events.

New rows go in as Arrow batches: COPY on Postgres (encoded on a second thread while the
previous batch is sent), and on SQLite into a temporary stage table of the connection first,
so that only one INSERT ... SELECT runs under the database's write lock. Updates overwrite
only the sample version that was checked; anything that changed meanwhile fails the import
whole with `ImportFailed`.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from app.datasets import content
from app.datasets.importers.validation import Column, ImportFailed, ImportResult, Prepared, short
from app.datasets.service import bump_label_version
from app.db import begin_write, is_sqlite
from app.models import Dataset, Sample, User, utcnow

BATCH_ROWS = 20_000
ANALYZE_AFTER_ROWS = 10_000
# Characters that COPY's text format escapes; the backslash first.
COPY_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
# A float that Arrow wrote as bare digits ("1", "-0"): JSON needs "1.0" to keep it a float.
INTEGER_TEXT = r"^-?[0-9]+$"
SAMPLE_COLUMNS = (
    "dataset_id", "external_id", "split", "text", "features", "image_blob", "image_path", "content_hash",
    "label", "original_label", "reviewed", "version", "created_at", "updated_at",
)
STAGE = "curate_import_stage"


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
        # A multi-label dataset's empty set is "", not unlabelled: its labels carry their nulls.
        label = pick(p.labels) if p.multilabel else _null_if_empty(pick(p.labels))
        feats = keys = null
        blobs = pa.array([p.images[i] for i in rows], pa.string()) if p.images is not None else null
        if p.feature_names:
            cols = {k: pick(v) for k, v in p.features.items()}
            feats = features_json(p.feature_names, cols)
            keys = content.feature_keys(p.feature_names, cols)
        elif p.text is not None:
            keys = content.text_keys(pick(p.text))
        elif p.images is not None:
            keys = blobs
        yield pa.table(
            {
                "dataset_id": pa.repeat(pa.scalar(ds.id, pa.int64()), m),
                "external_id": _null_if_empty(pick(p.ids)),
                "split": pick(p.splits),
                "text": pick(p.text) if p.text is not None else null,
                "features": feats,
                "image_blob": blobs,
                "image_path": pick(p.image_paths) if p.image_paths is not None else null,
                "content_hash": keys,
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
    """On SQLite, take the write lock and check that what `prepare` relied on still holds.

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
            [{"row": None, "field": "id", "message": f"id {short(t)} already exists in this dataset"} for t in taken],
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




class _Change(NamedTuple):
    """An existing sample whose label or split the file changes."""

    sample_id: int
    old_label: str | None
    old_split: str
    new_label: str | None
    new_split: str
    version: int  # the version the checks saw; only that one is overwritten


def write_import(session: Session, ds: Dataset, p: Prepared, user: User | None, result: ImportResult) -> None:
    """Write what `prepare` validated: classes, feature order, new samples, updates, events."""
    changed = _changed_rows(p)
    result.updated = len(changed)
    result.unchanged = len(p.existing_pos) - len(changed)
    now = utcnow()
    stamp = _timestamp(now)
    sqlite = is_sqlite(session.connection())
    if p.n - len(p.existing_pos):
        result.imported = (_insert_sqlite if sqlite else _insert_postgres)(session, ds, p, stamp)
        if result.imported >= ANALYZE_AFTER_ROWS and not sqlite:
            # Fresh statistics at commit, not a minute later from autovacuum: with stale ones
            # the planner sorts a big export on disk instead of reading it in id order.
            session.connection().exec_driver_sql("ANALYZE samples")
    elif sqlite:
        _recheck(session, ds, p, staged=False)
    # The dataset row is written after COPY: a row changed by this transaction slows COPY's
    # foreign-key checks.
    _set_classes_and_features(session, ds, p, result)
    if result.imported or result.updated:
        result.label_version = bump_label_version(session, ds.id)
    if changed:
        _update_samples(session, changed, now)
        _insert_label_events(session, ds, changed, user, result.label_version, stamp)
    session.expire(ds)
    session.flush()


def _changed_rows(p: Prepared) -> list[_Change]:
    """The file's rows whose id exists and whose label or split differs from the sample's."""
    if not len(p.existing_pos):
        return []
    new_labels = pc.take(p.labels, pa.array(p.existing_pos)).to_pylist()
    new_splits = pc.take(p.splits, pa.array(p.existing_pos)).to_pylist()
    changed = []
    for sid, old_l, old_s, version, new_l, new_s in zip(
        p.existing_ids.tolist(), p.existing_labels, p.existing_splits, p.existing_versions, new_labels, new_splits,
        strict=True,
    ):
        new_l = new_l if p.multilabel else new_l or None
        if new_l != old_l or new_s != old_s:
            changed.append(_Change(sid, old_l, old_s, new_l, new_s, version))
    return changed


def _insert_sqlite(session: Session, ds: Dataset, p: Prepared, stamp: str) -> int:
    """Insert the new samples on SQLite; returns their count.

    They are staged in the connection's temp database, which takes no lock: only the one
    INSERT ... SELECT into samples runs under the write lock, after `_recheck`.
    """
    staged = _stage_sqlite(session, _new_sample_batches(ds, p, stamp))
    _recheck(session, ds, p, staged=True)
    conn = session.connection()
    imported = conn.exec_driver_sql(
        f"INSERT INTO main.samples ({', '.join(SAMPLE_COLUMNS)}) "
        f"SELECT {', '.join(SAMPLE_COLUMNS)} FROM temp.{STAGE} ORDER BY rowid"
    ).rowcount
    conn.exec_driver_sql(f"DROP TABLE temp.{STAGE}")
    if imported != staged:
        raise RuntimeError(f"staged {staged} rows but copied {imported}")
    return imported


def _insert_postgres(session: Session, ds: Dataset, p: Prepared, stamp: str) -> int:
    """COPY the new samples into samples on Postgres; returns their count."""
    # Split, timestamps and the features' JSON (numbers, and names json.dumps escaped
    # without backslashes) need no COPY escaping.
    plain = ["split", "created_at", "updated_at"]
    if not any("\\" in json.dumps(n) for n in p.feature_names):
        plain.append("features")
    try:
        return bulk_insert(session, "samples", SAMPLE_COLUMNS, _new_sample_batches(ds, p, stamp), plain)
    except psycopg.errors.UniqueViolation as exc:
        # Imports into one dataset are serialised (lock_dataset_imports); a row that
        # appeared meanwhile came from elsewhere. Refused whole, like any bad row.
        detail = exc.diag.message_detail or str(exc)
        raise ImportFailed(
            "some of this file's ids were added to the dataset while it was imported; nothing was imported",
            [{"row": None, "field": "id", "message": detail}],
        ) from None


def _set_classes_and_features(session: Session, ds: Dataset, p: Prepared, result: ImportResult) -> None:
    """Give a dataset without classes (or, tabular, without a feature order) the file's."""
    changes: dict[str, Any] = {}
    if not ds.classes and result.classes:
        changes["classes"] = result.classes
    if ds.task == "tabular" and not ds.settings.get("features") and p.feature_names:
        changes["settings"] = {**ds.settings, "features": p.feature_names}
    if changes:
        session.execute(update(Dataset).where(Dataset.id == ds.id).values(**changes))


def _update_samples(session: Session, changed: list[_Change], now: datetime) -> None:
    """Set the new labels and splits, in batches of BATCH_ROWS."""
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
            [{"sid": c.sample_id, "seen": c.version, "new_label": c.new_label, "new_split": c.new_split} for c in chunk],
        ).rowcount
        if done != len(chunk):
            raise ImportFailed(
                "samples changed while the file was imported; nothing was imported: import it again",
                [{"row": None, "field": "id", "message": "a sample this file updates was changed meanwhile"}],
            )


def _insert_label_events(
    session: Session, ds: Dataset, changed: list[_Change], user: User | None, label_version: int | None, stamp: str
) -> None:
    """One label event per updated sample, with source "import"."""
    n = len(changed)
    events = pa.table(
        {
            "dataset_id": pa.repeat(pa.scalar(ds.id, pa.int64()), n),
            "sample_id": pa.array([c.sample_id for c in changed], pa.int64()),
            "old_label": pa.array([c.old_label for c in changed], pa.string()),
            "new_label": pa.array([c.new_label for c in changed], pa.string()),
            "old_split": pa.array([c.old_split for c in changed], pa.string()),
            "new_split": pa.array([c.new_split for c in changed], pa.string()),
            "source": pa.repeat(pa.scalar("import"), n),
            "user_id": pa.array([user.id if user else None] * n, pa.int64()),
            "label_version": pa.repeat(pa.scalar(label_version, pa.int64()), n),
            "created_at": pa.repeat(pa.scalar(stamp), n),
        }
    )
    bulk_insert(session, "label_events", tuple(events.column_names), events.to_batches(BATCH_ROWS))
