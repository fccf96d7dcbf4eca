"""Tiny datasets of each task, written straight into the test database (and blob store)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session

from app.config import Settings
from app.datasets.storage import BlobStore
from app.models import Dataset, Sample

SPLITS = ("train", "valid", "test", "unlabelled")


def _split_of(i: int, counts: dict[str, int]) -> str:
    edge = 0
    for split in SPLITS:
        edge += counts.get(split, 0)
        if i < edge:
            return split
    raise IndexError(i)


def _dataset(db: Session, task: str, classes: list[str], name: str) -> Dataset:
    ds = Dataset(name=name, task=task, classes=classes, settings={}, label_version=7)
    db.add(ds)
    db.flush()
    return ds


def tabular_dataset(db: Session, counts=None, seed: int = 0, name: str = "tab", flip: float = 0.0) -> tuple[Dataset, list[Sample]]:
    """Three well separated classes in two continuous features, plus a small integer code."""
    counts = counts or {"train": 60, "valid": 15, "test": 15, "unlabelled": 9}
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c"]
    ds = _dataset(db, "tabular", classes, name)
    samples = []
    for i in range(sum(counts.values())):
        c = i % 3
        split = _split_of(i, counts)
        label = classes[c]
        if split == "train" and rng.random() < flip:
            label = classes[(c + 1) % 3]
        features = {
            "x": float(3 * c + rng.normal(0, 0.4)),
            "y": float(-2 * c + rng.normal(0, 0.4)),
            "code": float(c) if i % 5 else None,
        }
        samples.append(
            Sample(dataset_id=ds.id, external_id=f"t{i}", split=split, features=features,
                   label=None if split == "unlabelled" else label, original_label=None if split == "unlabelled" else label)
        )
    db.add_all(samples)
    db.commit()
    return ds, samples


WORDS = {
    "pos": ["great", "lovely", "excellent", "wonderful", "happy", "good"],
    "neg": ["awful", "terrible", "horrible", "sad", "bad", "poor"],
}


def text_dataset(db: Session, counts=None, seed: int = 0, name: str = "txt") -> tuple[Dataset, list[Sample]]:
    """Short sentences whose sentiment word decides the class."""
    counts = counts or {"train": 40, "valid": 10, "test": 8, "unlabelled": 6}
    rng = np.random.default_rng(seed)
    classes = ["neg", "pos"]
    ds = _dataset(db, "text", classes, name)
    samples = []
    for i in range(sum(counts.values())):
        c = classes[i % 2]
        split = _split_of(i, counts)
        words = rng.choice(WORDS[c], size=2)
        text = f"the film was {words[0]} and the music was {words[1]} ."
        samples.append(
            Sample(dataset_id=ds.id, external_id=f"x{i}", split=split, text=text,
                   label=None if split == "unlabelled" else c, original_label=None if split == "unlabelled" else c)
        )
    db.add_all(samples)
    db.commit()
    return ds, samples


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def image_dataset(db: Session, settings: Settings, counts=None, seed: int = 0, name: str = "img") -> tuple[Dataset, list[Sample]]:
    """8x8 grey PNGs: a bright left half, a bright right half, or a bright top half."""
    counts = counts or {"train": 30, "valid": 9, "test": 6, "unlabelled": 6}
    rng = np.random.default_rng(seed)
    classes = ["left", "right", "top"]
    store = BlobStore(settings.blob_dir)
    ds = _dataset(db, "image", classes, name)
    samples = []
    for i in range(sum(counts.values())):
        c = i % 3
        img = rng.integers(0, 60, size=(8, 8))
        if c == 0:
            img[:, :4] += 180
        elif c == 1:
            img[:, 4:] += 180
        else:
            img[:4, :] += 180
        split = _split_of(i, counts)
        label = None if split == "unlabelled" else classes[c]
        samples.append(
            Sample(dataset_id=ds.id, external_id=f"i{i}", split=split, image_blob=store.put(png(img)),
                   image_path=f"{i}.png", label=label, original_label=label)
        )
    db.add_all(samples)
    db.commit()
    return ds, samples
