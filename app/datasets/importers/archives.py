"""ZIP imports: judge the archive from its central directory, stream its entries under their
size limits, check and hash every image, and store the images once the whole file is valid.

Unsafe paths, encrypted entries, compression other than stored or deflate, and entries over
their size limit (CURATE_MAX_ZIP_ENTRY_BYTES for an image, CURATE_MAX_ZIP_LABELS_BYTES for
the labels file) or compressed more than CURATE_MAX_ZIP_COMPRESSION_RATIO to 1 are refused
before anything is inflated, and the bytes actually inflated are counted against the same
limits. No entry is extracted under its own name or held whole in memory twice.
"""

from __future__ import annotations

import hashlib
import stat
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

import numpy as np
import pyarrow as pa
from PIL import Image, UnidentifiedImageError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.datasets.importers.readers import file_format, read_table
from app.datasets.importers.validation import SPLITS, Errors, ImportResult, Prepared
from app.datasets.storage import BlobStore
from app.models import Dataset, Sample, Split

LABEL_FILES = ("labels.csv", "labels.jsonl", "labels.parquet")
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
# What a broken entry raises while it is inflated.
CORRUPT_ENTRY = (zipfile.BadZipFile, OSError, EOFError, zlib.error)


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
        except CORRUPT_ENTRY as exc:
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
@dataclass
class ZipImport:
    zf: zipfile.ZipFile
    table: pa.Table
    row_names: list[str] | None
    entries: dict[str, ZipEntry]


def read_zip(fh: IO[bytes], errors: Errors, settings: Settings, multilabel: bool = False) -> ZipImport | None:
    """An image ZIP's rows and entries; None, with the errors recorded, when it is refused.
    multilabel: the dataset's samples take tag sets, which only a labels file can give."""
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError) as exc:
        errors.add(None, "file", f"not a readable ZIP file: {exc}")
        return None
    entries = zip_entries(zf, errors, settings)
    if errors:
        return None
    return read_zip_layout(zf, entries, errors, multilabel)


def read_zip_layout(
    zf: zipfile.ZipFile, entries: list[ZipEntry], errors: Errors, multilabel: bool = False
) -> ZipImport | None:
    """The rows of an image ZIP: from its labels file, or from its class (and split) folders
    (not for a multi-label dataset: a folder gives an image one class)."""
    by_path = {e.path: e for e in entries}
    for name in LABEL_FILES:
        if name in by_path:
            table = _read_labels_file(zf, by_path[name], errors, ("label",) if multilabel else ())
            return None if table is None else ZipImport(zf, table, None, by_path)
    if multilabel:
        errors.add(None, "file", f"a multi-label dataset imports a ZIP with a labels file at its root "
                                 f"({', '.join(LABEL_FILES)}) whose label column holds each image's classes; "
                                 "class folders give an image one class")
        return None
    paths, labels, splits = [], [], []
    for e in entries:
        label, split = _folder_label(e.path.split("/"), len(paths), errors)
        paths.append(e.path)
        labels.append(label)
        splits.append(split)
    errors.row_names = paths
    table = pa.table({"image": pa.array(paths, pa.string()), "label": labels, "split": splits})
    return ZipImport(zf, table, paths, by_path)


def _read_labels_file(
    zf: zipfile.ZipFile, entry: ZipEntry, errors: Errors, list_columns: tuple[str, ...] = ()
) -> pa.Table | None:
    """The ZIP's labels file as a table, inflated to a temporary file (not into memory) that Arrow reads."""
    with tempfile.TemporaryFile() as spool:
        try:
            for chunk in entry_chunks(zf, entry):
                spool.write(chunk)
        except EntryTooLarge as exc:
            errors.add(None, "size", str(exc), name=entry.info.filename)
            return None
        except CORRUPT_ENTRY as exc:
            errors.add(None, "file", f"corrupt ZIP entry: {exc}", name=entry.info.filename)
            return None
        spool.seek(0)
        return read_table(spool, file_format(entry.path), errors, ("id", "label", "split", "image"),
                          list_columns=list_columns)


def _folder_label(parts: list[str], row: int, errors: Errors) -> tuple[str, str]:
    """(label, split) of the image at row from its folders: class/file, split/class/file or unlabelled/file."""
    if len(parts) == 3 and parts[0] in SPLITS:
        split, label = parts[0], parts[1]
        if split == Split.unlabelled.value:
            errors.add(row, "split", f"files under unlabelled/ take no class folder ({label!r})")
            label = ""
        return label, split
    if len(parts) == 2 and parts[0] == Split.unlabelled.value:
        return "", parts[0]
    if len(parts) == 2:
        return parts[0], ""
    errors.add(row, "path", "expected class/file, split/class/file or unlabelled/file (split: train, valid, test)")
    return "", ""


def check_images(
    session: Session, ds: Dataset, zi: ZipImport, prepared: Prepared, errors: Errors, settings: Settings,
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
            check = checked[path] = check_image(zi.zf, entry, settings.max_image_pixels)
        if check.error:
            errors.add(i, "image", check.error if zi.row_names else f"{path}: {check.error}")
        shas.append(check.sha256)
        paths[i] = path
    prepared.images = shas
    prepared.image_paths = pa.array(paths, pa.string())
    if not errors:
        result.duplicates = _duplicates(session, ds, prepared, paths, errors)


def _duplicates(session: Session, ds: Dataset, prepared: Prepared, paths: list[str], errors: Errors) -> list[dict]:
    """The new rows whose image has the content of an earlier row's, or of a sample's already in the dataset."""
    shas = prepared.images
    new = np.ones(prepared.n, dtype=bool)
    new[prepared.existing_pos] = False
    found: list[dict] = []
    first_row: dict[str, int] = {}
    for i in np.flatnonzero(new):
        sha = shas[i]
        if sha in first_row:
            j = first_row[sha]
            found.append({"row": errors.row(int(i)), "path": paths[i], "sha256": sha,
                          "duplicate_of": {"row": errors.row(j), "path": paths[j]}})
        else:
            first_row[sha] = int(i)
    known = _samples_with_blobs(session, ds.id, list(first_row))
    for sha, i in first_row.items():
        if sha in known:
            sample_id, ext, path = known[sha]
            found.append({"row": errors.row(i), "path": paths[i], "sha256": sha,
                          "duplicate_of": {"sample_id": sample_id, "external_id": ext, "path": path}})
    found.sort(key=lambda d: str(d["row"]))
    return found


def _samples_with_blobs(session: Session, dataset_id: int, shas: list[str]) -> dict[str, tuple]:
    """sha256 -> (sample id, external id, image path) of the dataset's first sample with that image."""
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


def store_images(zi: ZipImport, prepared: Prepared, store: BlobStore) -> None:
    """Second pass over the ZIP, once everything is valid: put each image in the blob store."""
    done: set[str] = set()
    for path, sha in zip(prepared.image_paths.to_pylist(), prepared.images, strict=True):
        if sha in done or store.exists(sha):
            done.add(sha)
            continue
        try:
            store.put_chunks(entry_chunks(zi.zf, zi.entries[path]), expected=sha)
        except ValueError:
            raise RuntimeError(f"{path} changed while it was imported") from None
        done.add(sha)
