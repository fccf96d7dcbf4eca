"""Content-addressed blob store under CURATE_DATA_DIR/blobs (sha256, two-level fan-out)."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

_SHA = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    """Blobs are written once, atomically, and addressed by the sha256 of their bytes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def path(self, digest: str) -> Path:
        if not _SHA.match(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / digest[2:4] / digest

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def put(self, data: bytes) -> str:
        """Store data; returns its sha256. Storing the same bytes twice writes nothing."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def put_chunks(self, chunks: Iterable[bytes], expected: str | None = None) -> str:
        """Store bytes that arrive in chunks, hashing them as they are written; returns their sha256.

        A large blob is never held in memory whole. With expected, bytes whose digest differs
        raise ValueError and nothing is stored.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            hasher = hashlib.sha256()
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    hasher.update(chunk)
                    fh.write(chunk)
            digest = hasher.hexdigest()
            if expected is not None and digest != expected:
                raise ValueError(f"the bytes have sha256 {digest}, not {expected}")
            target = self.path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()
