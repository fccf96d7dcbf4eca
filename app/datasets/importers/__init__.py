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

Modules: `readers` (CSV, JSON Lines, Parquet), `archives` (ZIP entries, limits and images),
`validation` (the rules, `Errors` by row, `prepare`), `writing` (the all-or-nothing write)
and `pipeline` (`import_file`, and the command line's import).
"""

from app.datasets.importers.archives import EntryTooLarge, ZipEntry, entry_chunks
from app.datasets.importers.pipeline import describe_failure, describe_result, import_file, import_path
from app.datasets.importers.validation import ImportFailed, ImportResult, Prepared
from app.datasets.importers.writing import INTEGER_TEXT, SAMPLE_COLUMNS, copy_text

__all__ = [
    "INTEGER_TEXT", "SAMPLE_COLUMNS", "EntryTooLarge", "ImportFailed", "ImportResult", "Prepared", "ZipEntry",
    "copy_text", "describe_failure", "describe_result", "entry_chunks", "import_file", "import_path",
]
