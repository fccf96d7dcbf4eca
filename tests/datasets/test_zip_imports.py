"""Importing a ZIP of images: both layouts, split folders, unsafe entries, bombs, duplicates."""

from __future__ import annotations

import hashlib
import io
import stat
import zipfile

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.formparsers import MultiPartParser

from app.datasets import importers
from app.datasets.storage import BlobStore
from tests.builders import make_dataset
from tests.datasets.helpers import csv_bytes, dataset, error_at, jsonl_bytes, png, samples, upload, zip_bytes

RED, GREEN, BLUE, GREY, BLACK = png((255, 0, 0)), png((0, 255, 0)), png((0, 0, 255)), png((9, 9, 9)), png((0, 0, 0))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_files(settings) -> list:
    return [p for p in settings.blob_dir.rglob("*") if p.is_file()] if settings.blob_dir.exists() else []


def test_class_folders_with_split_folders(client, db, engineer, settings):
    ds = make_dataset(db, "image", classes=[])
    data = zip_bytes({
        "cat/1.png": RED,
        "dog/2.png": GREEN,
        "valid/cat/3.png": BLUE,
        "test/dog/4.png": GREY,
        "unlabelled/5.png": BLACK,
        "__MACOSX/._1.png": b"junk",
        ".DS_Store": b"junk",
    })
    r = upload(client, ds.id, "pets.zip", data, engineer.headers)
    assert r.status_code == 201, r.text
    assert (r.json()["imported"], r.json()["duplicates"]) == (5, [])
    got = {s.image_path: s for s in samples(db, ds.id)}
    assert {p: (s.split, s.label) for p, s in got.items()} == {
        "cat/1.png": ("train", "cat"),
        "dog/2.png": ("train", "dog"),
        "valid/cat/3.png": ("valid", "cat"),
        "test/dog/4.png": ("test", "dog"),
        "unlabelled/5.png": ("unlabelled", None),
    }
    assert got["cat/1.png"].image_blob == sha(RED)
    store = BlobStore(settings.blob_dir)
    assert store.get(sha(BLUE)) == BLUE
    assert len(blob_files(settings)) == 5
    assert dataset(db, ds.id).classes == ["cat", "dog"]


def test_a_folder_zipped_whole_is_read_from_inside(client, db, engineer):
    ds = make_dataset(db, "image", classes=[])
    data = zip_bytes({"pets/": b"", "pets/train/cat/1.png": RED, "pets/valid/dog/2.png": GREEN})
    r = upload(client, ds.id, "pets.zip", data, engineer.headers)
    assert r.status_code == 201, r.text
    assert sorted((s.image_path, s.split, s.label) for s in samples(db, ds.id)) == [
        ("train/cat/1.png", "train", "cat"), ("valid/dog/2.png", "valid", "dog"),
    ]


def test_labels_file_layout(client, db, engineer):
    ds = make_dataset(db, "image", classes=["cat", "dog"])
    labels = csv_bytes("id,image,label,split", "p1,img/a.png,cat,", "p2,./img/b.png,dog,test", "p3,img/c.png,,")
    data = zip_bytes({"labels.csv": labels, "img/a.png": RED, "img/b.png": GREEN, "img/c.png": BLUE, "img/unused.png": GREY})
    r = upload(client, ds.id, "set.zip", data, engineer.headers)
    assert r.status_code == 201, r.text
    assert [(s.external_id, s.image_path, s.split, s.label, s.image_blob) for s in samples(db, ds.id)] == [
        ("p1", "img/a.png", "train", "cat", sha(RED)),
        ("p2", "img/b.png", "test", "dog", sha(GREEN)),
        ("p3", "img/c.png", "unlabelled", None, sha(BLUE)),
    ]


def test_labels_jsonl_errors_name_the_row(client, db, engineer, settings):
    ds = make_dataset(db, "image", classes=["cat", "dog"])
    labels = jsonl_bytes([{"image": "a.png", "label": "cat"}, {"image": "missing.png", "label": "dog"},
                          {"image": "b.png", "label": "cow"}, {"image": "c.png", "label": "dog"}])
    data = zip_bytes({"labels.jsonl": labels, "a.png": RED, "b.png": GREEN, "c.png": b"not an image"})
    r = upload(client, ds.id, "set.zip", data, engineer.headers)
    assert r.status_code == 422
    body = r.json()
    assert "not a file in the ZIP" in error_at(body, 2, "image")
    assert "not one of the dataset's classes" in error_at(body, 3, "label")
    assert "unreadable image" in error_at(body, 4, "image")
    assert samples(db, ds.id) == [] and blob_files(settings) == []


def test_folder_layout_errors_name_the_entry(client, db, engineer, settings):
    ds = make_dataset(db, "image", classes=[])
    data = zip_bytes({"cat/1.png": RED, "dog/2.png": b"\x89PNG broken", "loose.png": GREEN, "unlabelled/cat/3.png": BLUE})
    r = upload(client, ds.id, "pets.zip", data, engineer.headers)
    assert r.status_code == 422
    body = r.json()
    assert "unreadable image" in error_at(body, "dog/2.png", "image")
    assert "expected class/file" in error_at(body, "loose.png", "path")
    assert "take no class folder" in error_at(body, "unlabelled/cat/3.png", "split")
    assert samples(db, ds.id) == [] and blob_files(settings) == [] and dataset(db, ds.id).classes == []


def _zip_with(name: str, data: bytes, attr: int | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("cat/1.png", RED)
        zf.writestr("dog/1.png", GREEN)
        info = zipfile.ZipInfo(name)
        if attr is not None:
            info.external_attr = attr
        zf.writestr(info, data)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "attr", "words"),
    [
        ("../../evil.png", None, "'..' is not allowed"),
        ("cat/../../evil.png", None, "'..' is not allowed"),
        ("/tmp/evil.png", None, "absolute paths"),
        ("C:/evil.png", None, "absolute paths"),
        ("cat/link.png", (stat.S_IFLNK | 0o777) << 16, "symbolic links"),
    ],
)
def test_unsafe_entries_are_refused(client, db, engineer, settings, tmp_path, name, attr, words):
    ds = make_dataset(db, "image", classes=[])
    r = upload(client, ds.id, "evil.zip", _zip_with(name, b"/etc/passwd" if attr else BLUE, attr), engineer.headers)
    assert r.status_code == 422, r.text
    assert words in error_at(r.json(), name, "path")
    assert samples(db, ds.id) == [] and blob_files(settings) == []
    assert not list(tmp_path.rglob("evil.png"))


def test_decompression_bomb_is_refused_before_decoding(client, db, engineer, settings, monkeypatch):
    ds = make_dataset(db, "image", classes=[])
    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, "PNG")  # 144 Mpx in a few kilobytes
    decoded = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda im: decoded.append(im.size) or real_load(im))
    r = upload(client, ds.id, "bomb.zip", zip_bytes({"cat/1.png": RED, "dog/bomb.png": bomb.getvalue()}), engineer.headers)
    assert r.status_code == 422
    assert "too large" in error_at(r.json(), "dog/bomb.png", "image")
    assert (12_000, 12_000) not in decoded
    assert samples(db, ds.id) == [] and blob_files(settings) == []


def test_pixel_limit_is_a_setting(client, db, engineer, settings):
    settings.max_image_pixels = 10 * 10
    ds = make_dataset(db, "image", classes=[])
    data = zip_bytes({"cat/1.png": png(size=(10, 10)), "dog/2.png": png(size=(11, 10))})
    r = upload(client, ds.id, "p.zip", data, engineer.headers)
    assert r.status_code == 422
    assert "11x10 = 110 pixels; the limit is 100" in error_at(r.json(), "dog/2.png", "image")


def test_total_uncompressed_size_limit(client, db, engineer, settings):
    settings.max_zip_uncompressed_bytes = 1000
    ds = make_dataset(db, "image", classes=[])
    data = zip_bytes({"cat/1.png": RED, "dog/2.png": GREEN, "dog/pad.png": b"\0" * 2000})
    r = upload(client, ds.id, "big.zip", data, engineer.headers)
    assert r.status_code == 422
    assert "the limit is 1000" in error_at(r.json(), None, "file")


def test_not_a_zip(client, db, engineer):
    ds = make_dataset(db, "image", classes=[])
    r = upload(client, ds.id, "x.zip", b"definitely not a zip", engineer.headers)
    assert r.status_code == 422
    assert "not a readable ZIP" in error_at(r.json(), None, "file")


def test_duplicate_images_are_reported_not_refused(client, db, engineer, settings):
    ds = make_dataset(db, "image", classes=[])
    r = upload(client, ds.id, "a.zip", zip_bytes({"cat/1.png": RED, "dog/1.png": GREEN, "dog/2.png": RED}), engineer.headers)
    assert r.status_code == 201, r.text
    assert r.json()["duplicates"] == [
        {"row": "dog/2.png", "path": "dog/2.png", "sha256": sha(RED), "duplicate_of": {"row": "cat/1.png", "path": "cat/1.png"}},
    ]
    first = {s.image_path: s.id for s in samples(db, ds.id)}

    r = upload(client, ds.id, "b.zip", zip_bytes({"cat/9.png": GREEN, "dog/9.png": BLUE}), engineer.headers)
    assert r.status_code == 201, r.text
    (dup,) = r.json()["duplicates"]
    assert dup["row"] == "cat/9.png" and dup["sha256"] == sha(GREEN)
    assert dup["duplicate_of"] == {"sample_id": first["dog/1.png"], "external_id": None, "path": "dog/1.png"}
    assert len(samples(db, ds.id)) == 5
    assert len(blob_files(settings)) == 3  # one blob per distinct content


def test_upload_over_the_limit_is_refused_before_parsing(settings, engine, db, engineer, monkeypatch):
    from app.main import create_app

    calls = []
    monkeypatch.setattr(importers, "import_file", lambda *a, **k: calls.append("import") or importers.ImportResult())
    real_parse = MultiPartParser.parse

    async def parse(self):
        calls.append("parse")
        return await real_parse(self)

    monkeypatch.setattr(MultiPartParser, "parse", parse)
    small = settings.model_copy(update={"max_upload_bytes": 2000})
    ds = make_dataset(db, "image", classes=[])
    body = zip_bytes({"cat/1.png": png(size=(64, 64)), "dog/pad.png": bytes(range(256)) * 40})
    with TestClient(create_app(small)) as client:
        r = upload(client, ds.id, "big.zip", body, engineer.headers)
        assert r.status_code == 413
        assert "CURATE_MAX_UPLOAD_BYTES" in r.json()["detail"]
    assert calls == []
    # The same request under the default limit is parsed and reaches the importer.
    with TestClient(create_app(settings)) as client:
        upload(client, ds.id, "big.zip", body, engineer.headers)
    assert calls == ["parse", "import"]
    assert samples(db, ds.id) == []
