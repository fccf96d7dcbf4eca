"""Hostile ZIP files for the import limits, built in a second instead of compressing gigabytes.

A deflate stream of a chunk repeated many times is the chunk compressed once, followed by a
full flush (which makes the compressed bytes independent of everything before them), and
those bytes repeated: a 1 GiB entry costs one compression of 1 MiB and a CRC pass.
The ZIP itself is written by hand so that an entry can declare sizes it does not have.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from dataclasses import dataclass
from functools import cache

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Deflated:
    data: bytes  # a raw deflate stream
    size: int  # the bytes it inflates to
    crc: int  # their CRC-32


def _flushed(chunk: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)


@cache
def deflated(*parts: tuple[bytes, int]) -> Deflated:
    """The concatenation of each (chunk, times) as one deflate stream."""
    pieces, size, crc = [], 0, 0
    for chunk, times in parts:
        pieces.append(_flushed(chunk) * times)
        size += len(chunk) * times
        for _ in range(times):
            crc = zlib.crc32(chunk, crc)
    pieces.append(zlib.compressobj(9, zlib.DEFLATED, -15).flush())  # the final, empty block
    return Deflated(b"".join(pieces), size, crc)


def zeros(size: int) -> Deflated:
    """size zero bytes (a multiple of 1 MiB), deflated about 1000 to 1."""
    return deflated((bytes(MiB), size // MiB))


def csv_lines(header: bytes, line: bytes, size: int) -> Deflated:
    """A CSV of header and then line repeated to about size bytes."""
    chunk = line * (MiB // len(line))
    return deflated((header, 1), (chunk, size // len(chunk)))


@dataclass(frozen=True)
class Entry:
    name: str
    data: bytes  # as stored in the archive
    crc: int
    size: int  # the uncompressed size the entry declares
    method: int = zipfile.ZIP_DEFLATED
    compress_size: int | None = None  # the compressed size it declares (default: the real one)


def stored(name: str, data: bytes) -> Entry:
    return Entry(name, data, zlib.crc32(data), len(data), zipfile.ZIP_STORED)


def deflated_entry(name: str, d: Deflated, *, size: int | None = None, compress_size: int | None = None) -> Entry:
    return Entry(name, d.data, d.crc, d.size if size is None else size, compress_size=compress_size)


def write_zip(entries: list[Entry]) -> bytes:
    """A ZIP of the entries exactly as given: local headers, data, central directory."""
    out, central = bytearray(), bytearray()
    for e in entries:
        name = e.name.encode()
        csize = len(e.data) if e.compress_size is None else e.compress_size
        offset = len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, e.method, 0, 0x21, e.crc, csize, e.size, len(name), 0)
        out += name + e.data
        central += struct.pack(
            "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, e.method, 0, 0x21, e.crc, csize, e.size, len(name), 0, 0, 0, 0, 0,
            offset,
        )
        central += name
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(out), 0)
    return bytes(out + central + eocd)
