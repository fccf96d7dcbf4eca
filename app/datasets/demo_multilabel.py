"""The multi-label demo dataset: pairs of scikit-learn's handwritten digits side by side,
each tagged with the digits it shows, with tag noise injected into train.

Each mosaic is 8x16 pixels: two 8x8 cells, each a digit or left blank (30%), so a mosaic
carries zero to two distinct digits (the empty set is a label like any other; no two mosaics
are the same images, so it occurs once). Train 1000, valid 200, test 200, unlabelled 100. In
12% of train the given set is noisy: half of those miss one digit the mosaic shows, half carry
one extra digit it does not. All of it comes from a fixed seed and offline data, so
`mosaic_records()` tells tests and benchmarks which sets are wrong and how.

Two cells and a thousand train mosaics, not four cells and five hundred, because the review
queue can only find the noise the out-of-fold models see through: from scratch on a CPU, a
ResNet learns each digit at each place from tens of examples per (digit, place) or not at
all. `queue_multilabel_run` queues the first run with `RUN_PARAMS`: no pretrained weights
(the same run offline or not), a fixed learning rate (no lr_find), 3 folds and 10 epochs:
bench/results/demo_multilabel.md measures how much of the noise heads its queue.

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
from app.models import Dataset, Job, JobStatus

MULTILABEL_DEMO_NAME = "digit-mosaics-demo"
CLASSES = [str(d) for d in range(10)]
SIZES = {"train": 1000, "valid": 200, "test": 200, "unlabelled": 100}
GRID = (1, 2)  # rows, columns of 8x8 cells
BLANK = 0.3  # chance that a cell shows no digit
NOISE_FRACTION = 0.12  # of train: half a missing tag, half an extra one
RUN_PARAMS: dict = {"pretrained": False, "lr": 1e-2, "folds": 3, "epochs": 10}


@dataclass(frozen=True)
class MosaicRecord:
    external_id: str
    split: str
    digits: tuple[int, ...]  # the digit images of the cells, row by row, -1 for a blank one
    true_tags: tuple[str, ...]  # the digits the mosaic shows, in class order
    tags: tuple[str, ...] | None  # the set as given (noisy for some train ones), None when unlabelled
    noise: str | None  # "missing <d>" or "extra <d>" where the given set is wrong
    png: bytes

    @property
    def noisy(self) -> bool:
        return self.noise is not None


def _mosaic(images: np.ndarray, cells: tuple[int, ...]) -> np.ndarray:
    rows, cols = GRID
    out = np.zeros((8 * rows, 8 * cols))
    for q, i in enumerate(cells):
        if i >= 0:
            r, c = divmod(q, cols)
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
        cells = tuple(int(i) if rng.random() >= BLANK else -1 for i in rng.integers(0, len(digits.target), GRID[0] * GRID[1]))
        if cells in seen:
            continue
        seen.add(cells)
        picks.append(cells)
    records: list[MosaicRecord] = []
    start = 0
    for split, size in SIZES.items():
        n_noisy = int(round(NOISE_FRACTION * size)) if split == "train" else 0
        noisy = rng.choice(size, n_noisy, replace=False).tolist() if n_noisy else []
        kinds = {j: ("missing" if k % 2 == 0 else "extra") for k, j in enumerate(noisy)}
        for j, cells in enumerate(picks[start:start + size]):
            true = tuple(CLASSES[d] for d in sorted({int(digits.target[i]) for i in cells if i >= 0}))
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
            records.append(MosaicRecord(f"mosaic-{start + j:04d}", split, cells, true, given, noise,
                                        _png(_mosaic(digits.images, cells))))
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
        settings={"description": "pairs of scikit-learn's handwritten digits side by side, tagged with the digits "
                                 "they show; 12% of train sets miss a digit or carry an extra one"},
    ))
    session.flush()
    import_file(session, ds, io.BytesIO(mosaic_zip(mosaic_records(seed))), "mosaics.zip", settings=settings)
    session.flush()
    return ds


def queue_multilabel_run(session: Session, ds: Dataset, max_attempts: int = 3) -> Job:
    """Queue the multi-label demo's first training run."""
    job = Job(dataset_id=ds.id, kind="train", params=dict(RUN_PARAMS), status=JobStatus.queued,
              max_attempts=max_attempts)
    session.add(job)
    session.flush()
    return job
