"""The demo dataset: scikit-learn's handwritten digits as 8x8 PNGs, with 10% of train flipped.

Train 1,000, valid 300, test 197, unlabelled 300 (labels withheld). The split and the flips
come from a fixed seed, so `demo_records()` tells benchmarks and tests which labels are wrong.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets.storage import BlobStore
from app.models import Dataset, Job, JobStatus, Sample

DEMO_NAME = "digits-demo"
CLASSES = [str(d) for d in range(10)]
SIZES = {"train": 1000, "valid": 300, "test": 197, "unlabelled": 300}
FLIP_FRACTION = 0.10


@dataclass(frozen=True)
class DemoRecord:
    external_id: str
    split: str
    true_label: str
    label: str | None  # the label as given: flipped for 10% of train, None for unlabelled
    png: bytes

    @property
    def flipped(self) -> bool:
        return self.label is not None and self.label != self.true_label


def _png(pixels: np.ndarray) -> bytes:
    # Digits pixels run 0..16; scale to 0..255 and invert nothing: white strokes on black.
    img = Image.fromarray((pixels * (255.0 / 16.0)).round().astype(np.uint8), mode="L")
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def demo_records(seed: int = 0) -> list[DemoRecord]:
    """The demo samples, in a fixed order, with their true and given labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    records: list[DemoRecord] = []
    start = 0
    for split, size in SIZES.items():
        idx = order[start : start + size]
        start += size
        n_flip = int(round(FLIP_FRACTION * size)) if split == "train" else 0
        flip = set(rng.choice(size, n_flip, replace=False).tolist()) if n_flip else set()
        for j, i in enumerate(idx):
            true = str(int(digits.target[i]))
            if split == "unlabelled":
                given = None
            elif j in flip:
                given = str(int(rng.choice([c for c in range(10) if c != int(true)])))
            else:
                given = true
            records.append(DemoRecord(f"digit-{int(i):04d}", split, true, given, _png(digits.images[i])))
    return records


def load_demo(session: Session, store: BlobStore, name: str = DEMO_NAME, seed: int = 0) -> Dataset:
    """Create the demo dataset (images into the blob store, samples as imported)."""
    ds = Dataset(
        name=name,
        task="image",
        classes=CLASSES,
        settings={
            "unlabelled_joins_train": True,
            "description": "scikit-learn's handwritten digits, 8x8 pixels; 10% of train labels flipped",
        },
        label_version=1,
    )
    session.add(ds)
    session.flush()
    rows = []
    for r in demo_records(seed):
        digest = store.put(r.png)
        rows.append(
            {
                "dataset_id": ds.id,
                "external_id": r.external_id,
                "split": r.split,
                "image_blob": digest,
                "image_path": f"{r.split}/{r.external_id}.png",
                "label": r.label,
                "original_label": r.label,
            }
        )
    session.execute(Sample.__table__.insert(), rows)
    session.flush()
    return ds


def queue_first_run(session: Session, ds: Dataset, max_attempts: int = 3) -> Job:
    """Queue the demo's first training run with the default recipe."""
    job = Job(dataset_id=ds.id, kind="train", params={}, status=JobStatus.queued, max_attempts=max_attempts)
    session.add(job)
    session.flush()
    return job


def demo_exists(session: Session, name: str = DEMO_NAME) -> bool:
    return session.scalar(select(Dataset.id).where(Dataset.name == name)) is not None
