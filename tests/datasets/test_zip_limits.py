"""ZIP bombs: refused from the ZIP's directory before anything is inflated, with flat memory.

The memory test imports each hostile ZIP in a fresh process (tests/datasets/memory_probe.py)
and reads the kernel's peak-RSS mark, so that nothing the test process itself allocated
hides or inflates the figure.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from app.config import Settings
from app.datasets import importers
from app.datasets.importers import archives
from app.datasets.storage import BlobStore
from tests.builders import make_dataset
from tests.datasets import bombs
from tests.datasets.bombs import GiB, MiB
from tests.datasets.helpers import error_at, png, samples, upload, zip_bytes

ROOT = Path(__file__).resolve().parents[2]
RED, GREEN = png((255, 0, 0)), png((0, 255, 0))
# How far above its idle RSS a refused import may take the process.
MEMORY_BUDGET = 200 * 1000 * 1000


def _hostile_zips(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (ZIP file, the entry its refusal must name)."""
    gib = bombs.zeros(GiB)
    labels = bombs.csv_lines(b"image,label\n", b"a.png,cat\n", 600 * 1000 * 1000)
    gib_zip = bombs.write_zip([bombs.stored("cat/1.png", RED), bombs.deflated_entry("dog/huge.png", gib)])
    cases = {
        # 1 GiB of zeros in about 1 MB.
        "gib_image": (gib_zip, "dog/huge.png"),
        # A 600 MB labels file in under 1 MB.
        "labels_600mb": (bombs.write_zip([bombs.deflated_entry("labels.csv", labels), bombs.stored("a.png", RED)]), "labels.csv"),
        # Declares 500 MB compressed and uncompressed (no ratio at all), in a ZIP of 1 MB.
        "declares_more_than_the_zip_holds": (
            bombs.write_zip([bombs.deflated_entry("labels.csv", labels, size=500 * MiB, compress_size=500 * MiB)]),
            "labels.csv",
        ),
        # Declares 1 MiB but inflates to 1 GiB.
        "declares_less_than_it_inflates": (
            bombs.write_zip([bombs.stored("cat/1.png", RED), bombs.deflated_entry("dog/2.png", gib, size=MiB)]),
            "dog/2.png",
        ),
        # The 1 GiB bomb, stored as an image of an outer ZIP: never unpacked further.
        "nested_zip": (bombs.write_zip([bombs.stored("cat/1.png", RED), bombs.stored("dog/2.png", gib_zip)]), "dog/2.png"),
    }
    out = {}
    for name, (data, entry) in cases.items():
        path = tmp_path / f"{name}.zip"
        path.write_bytes(data)
        out[name] = (path, entry)
    return out


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="reads peak memory from Linux /proc")
def test_zip_bombs_are_refused_with_flat_memory(tmp_path):
    cases = _hostile_zips(tmp_path)
    for path, _ in cases.values():
        assert path.stat().st_size < 2 * MiB
    proc = subprocess.run(
        [sys.executable, "-m", "tests.datasets.memory_probe", str(tmp_path), *(str(p) for p, _ in cases.values())],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    reports = {Path(r["file"]).stem: r for r in map(json.loads, proc.stdout.splitlines())}
    assert set(reports) == set(cases)
    for name, (_, entry) in cases.items():
        r = reports[name]
        grew = r["peak"] - r["idle"]
        print(f"{name}: idle {r['idle'] / 1e6:.0f} MB, peak {r['peak'] / 1e6:.0f} MB (+{grew / 1e6:.0f} MB), {r['seconds']:.2f} s")
        assert "exception" not in r, f"{name}: {r['exception']}"
        assert grew < MEMORY_BUDGET, f"{name}: peak RSS {grew / 1e6:.0f} MB above idle"
        assert "refused" in r, name
        assert any(e["row"] == entry for e in r["refused"]["errors"]), (name, r["refused"])

    # Refused from the ZIP's directory: not one entry opened.
    for name in ("gib_image", "labels_600mb", "declares_more_than_the_zip_holds"):
        assert reports[name]["opened"] == [], name
    assert "67108864 (CURATE_MAX_ZIP_ENTRY_BYTES)" in error_at(reports["gib_image"]["refused"], "dog/huge.png", "size")
    assert "(CURATE_MAX_ZIP_LABELS_BYTES)" in error_at(reports["labels_600mb"]["refused"], "labels.csv", "size")
    assert "more than the ZIP holds" in error_at(reports["declares_more_than_the_zip_holds"]["refused"], "labels.csv", "size")
    assert "CRC" in error_at(reports["declares_less_than_it_inflates"]["refused"], "dog/2.png", "image")
    assert error_at(reports["nested_zip"]["refused"], "dog/2.png", "image") == (
        "unreadable image: not an image, or in a format that cannot be read"
    )


def test_compression_ratio_limit_spares_small_entries(client, db, engineer, settings):
    ds = make_dataset(db, "image", classes=[])
    squeezed = bombs.zeros(2 * MiB)  # about 1000 to 1
    data = bombs.write_zip([
        bombs.stored("cat/1.png", RED),
        bombs.deflated_entry("dog/zeros.png", squeezed),
        bombs.deflated_entry("dog/small.png", bombs.deflated((bytes(1000), 1))),  # 1000 to 1 too, but tiny
    ])
    r = upload(client, ds.id, "z.zip", data, engineer.headers)
    assert r.status_code == 422
    body = r.json()
    assert [e["row"] for e in body["errors"]] == ["dog/zeros.png"]
    message = error_at(body, "dog/zeros.png", "size")
    assert "(2097152 bytes in" in message and "the limit is 200 to 1 (CURATE_MAX_ZIP_COMPRESSION_RATIO)" in message

    settings.max_zip_compression_ratio = 10_000
    r = upload(client, ds.id, "z.zip", data, engineer.headers)
    assert r.status_code == 422  # now read, and judged as images
    assert "unreadable image" in error_at(r.json(), "dog/zeros.png", "image")
    assert "unreadable image" in error_at(r.json(), "dog/small.png", "image")


def test_entry_and_labels_limits_are_settings(client, db, engineer, settings):
    settings.max_zip_entry_bytes = small = max(len(RED), len(GREEN))
    settings.max_zip_labels_bytes = 20
    ds = make_dataset(db, "image", classes=[])
    r = upload(client, ds.id, "a.zip", zip_bytes({"cat/1.png": RED, "dog/2.png": png(size=(40, 40))}), engineer.headers)
    assert r.status_code == 422
    assert f"may hold at most {small} (CURATE_MAX_ZIP_ENTRY_BYTES)" in error_at(r.json(), "dog/2.png", "size")
    labels = b"image,label\ncat/1.png,cat\n"
    r = upload(client, ds.id, "b.zip", zip_bytes({"labels.csv": labels, "cat/1.png": RED}), engineer.headers)
    assert r.status_code == 422
    assert f"{len(labels)} bytes uncompressed; a labels file may hold at most 20 (CURATE_MAX_ZIP_LABELS_BYTES)" in (
        error_at(r.json(), "labels.csv", "size")
    )
    settings.max_zip_labels_bytes = 1000
    r = upload(client, ds.id, "b.zip", zip_bytes({"labels.csv": labels + b"dog/2.png,dog\n", "cat/1.png": RED, "dog/2.png": GREEN}), engineer.headers)
    assert r.status_code == 201, r.text


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("CURATE_MAX_ZIP_ENTRY_BYTES", "1000")
    monkeypatch.setenv("CURATE_MAX_ZIP_LABELS_BYTES", "2000")
    monkeypatch.setenv("CURATE_MAX_ZIP_COMPRESSION_RATIO", "30")
    s = Settings(_env_file=None)
    assert (s.max_zip_entry_bytes, s.max_zip_labels_bytes, s.max_zip_compression_ratio) == (1000, 2000, 30)
    monkeypatch.delenv("CURATE_MAX_ZIP_ENTRY_BYTES")
    monkeypatch.delenv("CURATE_MAX_ZIP_LABELS_BYTES")
    monkeypatch.delenv("CURATE_MAX_ZIP_COMPRESSION_RATIO")
    defaults = Settings(_env_file=None)
    assert (defaults.max_zip_entry_bytes, defaults.max_zip_labels_bytes, defaults.max_zip_compression_ratio) == (
        64 * MiB, 512 * MiB, 200,
    )


def test_bytes_past_the_limit_are_not_read_even_if_the_directory_allowed_them(tmp_path):
    data = bytes(range(256)) * 40
    path = tmp_path / "a.zip"
    path.write_bytes(zip_bytes({"a.png": data}))
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("a.png")
        whole = importers.ZipEntry(info, "a.png", len(data), "CURATE_MAX_ZIP_ENTRY_BYTES")
        assert b"".join(importers.entry_chunks(zf, whole)) == data
        short = importers.ZipEntry(info, "a.png", len(data) - 1, "CURATE_MAX_ZIP_ENTRY_BYTES")
        with pytest.raises(importers.EntryTooLarge, match=f"more than {len(data) - 1} bytes"):
            b"".join(importers.entry_chunks(zf, short))


@pytest.mark.parametrize(
    ("method", "words"),
    [(zipfile.ZIP_BZIP2, "compressed with bzip2; only stored and deflate"), (zipfile.ZIP_LZMA, "compressed with LZMA")],
)
def test_compression_that_zipfile_cannot_bound_is_refused(client, db, engineer, settings, method, words):
    ds = make_dataset(db, "image", classes=[])
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("cat/1.png", RED)
        zf.writestr("dog/2.png", GREEN, compress_type=method)
    r = upload(client, ds.id, "m.zip", out.getvalue(), engineer.headers)
    assert r.status_code == 422, r.text
    assert words in error_at(r.json(), "dog/2.png", "entry")
    assert samples(db, ds.id) == []


def test_corrupt_deflate_data_is_named(client, db, engineer):
    ds = make_dataset(db, "image", classes=[])
    broken = bombs.Deflated(b"\xff" * 64, 1000, 0)
    data = bombs.write_zip([bombs.stored("cat/1.png", RED), bombs.deflated_entry("dog/2.png", broken)])
    r = upload(client, ds.id, "c.zip", data, engineer.headers)
    assert r.status_code == 422, r.text
    assert "corrupt ZIP entry" in error_at(r.json(), "dog/2.png", "image")


def test_images_are_stored_whole_through_the_stream(client, db, engineer, settings, monkeypatch):
    monkeypatch.setattr(archives, "ENTRY_CHUNK_BYTES", 1000)
    monkeypatch.setattr(archives, "IMAGE_SPOOL_BYTES", 2000)
    big = png(size=(300, 300))
    noisy = os.urandom(30_000)
    out = io.BytesIO()
    Image.frombytes("L", (200, 150), noisy).save(out, "PNG")
    noisy_png = out.getvalue()
    ds = make_dataset(db, "image", classes=[])
    r = upload(client, ds.id, "s.zip", zip_bytes({"cat/1.png": big, "dog/2.png": noisy_png}), engineer.headers)
    assert r.status_code == 201, r.text
    store = BlobStore(settings.blob_dir)
    got = {s.image_path: store.get(s.image_blob) for s in samples(db, ds.id)}
    assert got == {"cat/1.png": big, "dog/2.png": noisy_png}
    assert not [p for p in settings.blob_dir.iterdir() if p.name.startswith(".tmp-")]
