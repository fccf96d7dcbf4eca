"""The multi-label demo dataset: 2x2 mosaics of scikit-learn's handwritten digits, each
tagged with the digits it shows, with tag noise injected into train.

Each mosaic is 16x16 pixels: four quadrants, each an 8x8 digit or left blank (30%), so a
mosaic carries zero to four distinct digits (the empty set is a label like any other).
Train 500, valid 150, test 150, unlabelled 100; no two mosaics are the same four images.
In 12% of train the given set is noisy: half of those miss one digit the mosaic shows, half
carry one extra digit it does not. All of it comes from a fixed seed and offline data, so
`mosaic_records()` tells tests and benchmarks which sets are wrong and how.

`load_multilabel_demo` creates the dataset (`multilabel: true`) and imports the mosaics
through the public import path: an image ZIP with a `labels.jsonl` holding each image's
tags, as `POST /datasets/{id}/import` takes it (docs/rest.md, Multi-label datasets).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from app.config import Settings
from app.datasets.demo import _png
from app.datasets.importers.pipeline import import_file
from app.datasets.schemas import DatasetCreate
from app.datasets.service import create_dataset
from app.models import Dataset

MULTILABEL_DEMO_NAME = "digit-mosaics-demo"
CLASSES = [str(d) for d in range(10)]
SIZES = {"train": 500, "valid": 150, "test": 150, "unlabelled": 100}
BLANK = 0.3  # chance that a quadrant shows no digit
NOISE_FRACTION = 0.12  # of train: half a missing tag, half an extra one


@dataclass(frozen=True)
class MosaicRecord:
    external_id: str
    split: str
    digits: tuple[int, ...]  # the digits images of the four quadrants, -1 for a blank one
    true_tags: tuple[str, ...]  # the digits the mosaic shows, in class order
    tags: tuple[str, ...] | None  # the set as given (noisy for some train ones), None when unlabelled
    noise: str | None  # "missing <d>" or "extra <d>" where the given set is wrong
    png: bytes

    @property
    def noisy(self) -> bool:
        return self.noise is not None


def _mosaic(images: np.ndarray, quadrants: tuple[int, ...]) -> np.ndarray:
    out = np.zeros((16, 16))
    for q, i in enumerate(quadrants):
        if i >= 0:
            r, c = divmod(q, 2)
            out[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] = images[i]
    return out


def mosaic_records(seed: int = 0) -> list[MosaicRecord]:
    """The mosaics, in a fixed order, with their true and given tag sets."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    total = sum(SIZES.values())
    seen: set[tuple[int, ...]] = set()
    picks: list[tuple[int, ...]] = []
    while len(picks) < total:
        quadrants = tuple(int(i) if rng.random() >= BLANK else -1 for i in rng.integers(0, len(digits.target), 4))
        if quadrants in seen:
            continue
        seen.add(quadrants)
        picks.append(quadrants)
    records: list[MosaicRecord] = []
    start = 0
    for split, size in SIZES.items():
        n_noisy = int(round(NOISE_FRACTION * size)) if split == "train" else 0
        noisy = rng.choice(size, n_noisy, replace=False).tolist() if n_noisy else []
        kinds = {j: ("missing" if k % 2 == 0 else "extra") for k, j in enumerate(noisy)}
        for j, quadrants in enumerate(picks[start:start + size]):
            true = tuple(CLASSES[d] for d in sorted({int(digits.target[i]) for i in quadrants if i >= 0}))
            given: tuple[str, ...] | None = None if split == "unlabelled" else true
            noise = None
            kind = kinds.get(j)
            if kind == "missing" and not true:
                kind = "extra"  # nothing to leave out of the empty set
            if kind == "extra" and len(true) == len(CLASSES):
                kind = "missing"
            if kind == "missing":
                gone = str(rng.choice(list(true)))
                given, noise = tuple(t for t in true if t != gone), f"missing {gone}"
            elif kind == "extra":
                added = str(rng.choice([c for c in CLASSES if c not in true]))
                given, noise = tuple(c for c in CLASSES if c in true or c == added), f"extra {added}"
            records.append(MosaicRecord(f"mosaic-{start + j:04d}", split, quadrants, true, given, noise,
                                        _png(_mosaic(digits.images, quadrants))))
        start += size
    return records


def mosaic_zip(records: list[MosaicRecord]) -> bytes:
    """The mosaics as the image ZIP a multi-label import takes: PNGs and a labels.jsonl."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        lines = []
        for r in records:
            path = f"{r.split}/{r.external_id}.png"
            zf.writestr(path, r.png)
            lines.append(json.dumps({"id": r.external_id, "image": path, "split": r.split,
                                     "label": None if r.tags is None else list(r.tags)}))
        zf.writestr("labels.jsonl", "\n".join(lines) + "\n")
    return out.getvalue()


def load_multilabel_demo(session: Session, settings: Settings, name: str = MULTILABEL_DEMO_NAME,
                         seed: int = 0) -> Dataset:
    """Create the multi-label demo dataset and import its mosaics through the import path."""
    ds = create_dataset(session, DatasetCreate(
        name=name, task="image", classes=CLASSES, multilabel=True,
        settings={"description": "2x2 mosaics of scikit-learn's handwritten digits, tagged with the digits they "
                                 "show; 12% of train sets miss a digit or carry an extra one"},
    ))
    session.flush()
    import_file(session, ds, io.BytesIO(mosaic_zip(mosaic_records(seed))), "mosaics.zip", settings=settings)
    session.flush()
    return ds
