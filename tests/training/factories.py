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


def _ml_dataset(db: Session, task: str, classes: list[str], name: str) -> Dataset:
    ds = Dataset(name=name, task=task, classes=classes, settings={}, label_version=7, multilabel=True)
    db.add(ds)
    db.flush()
    return ds


def multilabel_tabular_dataset(db: Session, counts=None, seed: int = 0, name: str = "mltab",
                               flips: dict[int, str] | None = None) -> tuple[Dataset, list[Sample]]:
    """Three tags, each decided by one feature: "a" when x > 0, "b" when y > 0, the rarer "c"
    when z > 0.8; the empty set is common. `flips` {sample index: tag} flips that tag of the
    given (not the true) set, planting a label error (its x and y are moved to +-2, far from
    the boundaries)."""
    counts = counts or {"train": 90, "valid": 30, "test": 24, "unlabelled": 8}
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c"]
    ds = _ml_dataset(db, "tabular", classes, name)
    samples = []
    for i in range(sum(counts.values())):
        x, y, z = rng.normal(size=3)
        if flips and i in flips:  # far from the boundary: the model is sure of the true tag
            x, y = (2.0 * np.sign(v) for v in (x, y))
        tags = {"a": x > 0, "b": y > 0, "c": z > 0.8}
        if flips and i in flips:
            tags[flips[i]] = not tags[flips[i]]
        split = _split_of(i, counts)
        label = None if split == "unlabelled" else "|".join(c for c in classes if tags[c])
        samples.append(Sample(dataset_id=ds.id, external_id=f"m{i}", split=split,
                              features={"x": float(x), "y": float(y), "z": float(z)}, label=label, original_label=label))
    db.add_all(samples)
    db.commit()
    return ds, samples


def multilabel_text_dataset(db: Session, counts=None, seed: int = 0, name: str = "mltxt") -> tuple[Dataset, list[Sample]]:
    """Sentences that mention a cat, a dog, both or neither; the tags are the animals named."""
    counts = counts or {"train": 40, "valid": 12, "test": 8, "unlabelled": 4}
    rng = np.random.default_rng(seed)
    classes = ["cat", "dog"]
    ds = _ml_dataset(db, "text", classes, name)
    samples = []
    for i in range(sum(counts.values())):
        tags = [c for c, on in zip(classes, (i % 2 == 0, i % 3 == 0)) if on]
        words = list(tags) + list(rng.choice(["the", "park", "was", "sunny", "today"], size=3))
        rng.shuffle(words)
        split = _split_of(i, counts)
        label = None if split == "unlabelled" else "|".join(tags)
        samples.append(Sample(dataset_id=ds.id, external_id=f"w{i}", split=split, text=" ".join(words) + " .",
                              label=label, original_label=label))
    db.add_all(samples)
    db.commit()
    return ds, samples


def multilabel_image_dataset(db: Session, settings: Settings, counts=None, seed: int = 0,
                             name: str = "mlimg") -> tuple[Dataset, list[Sample]]:
    """8x8 grey PNGs tagged "left" when the left half is bright and "top" when the top half is."""
    counts = counts or {"train": 32, "valid": 8, "test": 8, "unlabelled": 4}
    rng = np.random.default_rng(seed)
    classes = ["left", "top"]
    store = BlobStore(settings.blob_dir)
    ds = _ml_dataset(db, "image", classes, name)
    samples = []
    for i in range(sum(counts.values())):
        left, top = i % 2 == 0, (i // 2) % 2 == 0
        img = rng.integers(0, 60, size=(8, 8))
        if left:
            img[:, :4] += 90
        if top:
            img[:4, :] += 90
        split = _split_of(i, counts)
        label = None if split == "unlabelled" else "|".join(c for c, on in zip(classes, (left, top)) if on)
        samples.append(Sample(dataset_id=ds.id, external_id=f"q{i}", split=split, image_blob=store.put(png(img)),
                              image_path=f"{i}.png", label=label, original_label=label))
    db.add_all(samples)
    db.commit()
    return ds, samples
