"""Content keys: one hash per sample of what the model sees, so that exact duplicates group by
an index lookup, within a split and across splits (docs/database.md, Duplicates).

- image: the blob's SHA-256 (the image's bytes; the blob store already names blobs by it);
- text: BLAKE2b-128 of the text normalised as a reader would compare it: Unicode NFKC, case
  folded, every run of white space one space, trimmed ("Hello  World\\n" = "hello world");
- tabular: BLAKE2b-128 of the feature vector in the dataset's feature order as little-endian
  float64 (missing = NaN, -0.0 = 0.0), so 1, 1.0 and "1.00" in a file are the same value.

Keys are computed at import and, for rows from before keys existed, by migration 0013 with
the same functions; a key never changes (a relabel or a split move keeps the content).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

KEY_BYTES = 16
_SPACE = re.compile(r"\s+")


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=KEY_BYTES).hexdigest()


def normalise_text(text: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_key(text: str | None) -> str | None:
    return None if text is None else _digest(normalise_text(text).encode("utf-8"))


def text_keys(texts: pa.Array | pa.ChunkedArray | Iterable[str | None]) -> pa.Array:
    values = texts.to_pylist() if isinstance(texts, pa.Array | pa.ChunkedArray) else list(texts)
    return pa.array([text_key(t) for t in values], pa.string())


def feature_matrix(names: Sequence[str], columns: dict[str, Any]) -> np.ndarray:
    """(n, f) float64 in feature order from Arrow columns or value lists (null = NaN)."""
    cols = []
    for name in names:
        col = columns[name]
        if isinstance(col, pa.Array | pa.ChunkedArray):
            col = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        cols.append(np.asarray(col, dtype=np.float64))
    M = np.column_stack(cols) if cols else np.empty((0, 0))
    M = M + 0.0  # -0.0 -> 0.0
    M[np.isnan(M)] = np.nan  # one NaN bit pattern
    return np.ascontiguousarray(M.astype("<f8", copy=False))


def feature_keys(names: Sequence[str], columns: dict[str, Any]) -> pa.Array:
    M = feature_matrix(names, columns)
    return pa.array([_digest(row.tobytes()) for row in M], pa.string())


def stored_feature_key(names: Sequence[str], features: dict | str | None) -> str | None:
    """The key of a feature column as stored (JSON object, or its text); None without features."""
    if features is None or not names:
        return None
    if isinstance(features, str):
        features = json.loads(features)
    values = {n: [features.get(n)] for n in names}
    values = {n: [np.nan if v[0] is None else v[0]] for n, v in values.items()}
    return feature_keys(names, values)[0].as_py()


def image_key(blob: str | None) -> str | None:
    return blob


def sample_key(task: str, feature_names: Sequence[str], text: str | None, features: Any, image_blob: str | None) -> str | None:
    """One stored sample's key, as the import would have computed it."""
    if task == "image":
        return image_key(image_blob)
    if task == "text":
        return text_key(text)
    return stored_feature_key(feature_names, features)
