"""An import from start to end: read the file, check every row, then write it all or nothing;
and the `curate import` command's summary of what happened."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import IO

import pyarrow as pa
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.datasets.importers.archives import ZipImport, check_images, read_zip, store_images
from app.datasets.importers.readers import file_format, read_table
from app.datasets.importers.validation import (
    BASE_COLUMNS, CONTENT_COLUMN, Errors, ImportFailed, ImportResult, prepare,
)
from app.datasets.importers.writing import write_import
from app.datasets.storage import BlobStore
from app.db import is_sqlite
from app.models import Dataset, User

ON_CONFLICT = ("error", "update")
IMPORT_LOCK_NAMESPACE = 0x43524954  # first key of the imports' advisory locks


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
    fmt = _check_format(ds, filename, errors)
    errors.raise_if_any(filename)

    zip_import: ZipImport | None = None
    if fmt == "zip":
        zip_import = read_zip(fh, errors, settings, ds.multilabel)
        if zip_import is None:
            errors.raise_if_any(filename)
        table = zip_import.table
    else:
        content = CONTENT_COLUMN.get(ds.task)
        # Export-only columns hold text; reading them as text spares the typed read a retry.
        columns = (*BASE_COLUMNS, *([content] if content else []), "label_source", "image_path", "predicted")
        table = read_table(fh, fmt, errors, columns, multiline=ds.task == "text",
                           list_columns=("label",) if ds.multilabel else ())
        errors.raise_if_any(filename)
    problem = _row_count_problem(table, zip_import is not None, settings)
    if problem:
        errors.add(None, "file", problem)
        errors.raise_if_any(filename)

    lock_dataset_imports(session, ds.id)
    session.refresh(ds)
    prepared = prepare(session, ds, table, errors, on_conflict, result)
    if zip_import is not None and prepared is not None:
        check_images(session, ds, zip_import, prepared, errors, settings, result)
    errors.raise_if_any(filename)
    assert prepared is not None

    if zip_import is not None:
        store_images(zip_import, prepared, BlobStore(settings.blob_dir))
    write_import(session, ds, prepared, user, result)
    return result


def _check_format(ds: Dataset, filename: str, errors: Errors) -> str | None:
    """The file's format by its name, checked against what the dataset's task imports."""
    fmt = file_format(filename or "")
    if fmt is None:
        errors.add(None, "file", f"unsupported file type {filename!r}; use .csv, .jsonl, .parquet or .zip")
    elif (fmt == "zip") != (ds.task == "image"):
        wanted = "a ZIP of images" if ds.task == "image" else "CSV, JSONL or Parquet, not a ZIP"
        errors.add(None, "file", f"a {ds.task} dataset imports {wanted}")
    return fmt


def _row_count_problem(table: pa.Table, is_zip: bool, settings: Settings) -> str | None:
    """Why the file's number of rows is refused: none, or more than CURATE_MAX_IMPORT_ROWS."""
    if table.num_rows == 0:
        return "the file holds no images" if is_zip else "the file holds no rows"
    if table.num_rows > settings.max_import_rows:
        return f"the file holds {table.num_rows} rows; the limit is {settings.max_import_rows} (CURATE_MAX_IMPORT_ROWS)"
    return None


def lock_dataset_imports(session: Session, dataset_id: int) -> None:
    """Serialise imports into one dataset, so that two cannot both pass the id checks.

    A transaction-scoped advisory lock on Postgres rather than FOR UPDATE on the dataset row:
    a locked row makes each of COPY's foreign-key checks slower, and would hold up every
    relabel of the dataset until the import commits. On SQLite nothing is locked here: the
    file is checked and its rows staged with no lock held, and `write_import` re-checks what
    the checks relied on once it holds the database's write lock.
    """
    conn = session.connection()
    if not is_sqlite(conn):
        conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :id)"), {"ns": IMPORT_LOCK_NAMESPACE, "id": dataset_id})


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
    """What an import did, as the lines `curate import` prints."""
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
    """An import's failure as `curate import` prints it: the detail, then each row error."""
    if not isinstance(exc, ImportFailed):
        return str(exc)
    lines = [exc.detail]
    for e in exc.errors:
        where = "file" if e["row"] is None else f"row {e['row']}"
        lines.append(f"  {where}, {e['field']}: {e['message']}")
    if exc.more:
        lines.append(f"  ... and {exc.more} more")
    return "\n".join(lines)
