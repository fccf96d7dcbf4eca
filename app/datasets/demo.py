"""The demo dataset: scikit-learn's handwritten digits as 8x8 PNGs, with 10% of train flipped.

Train 1,000, valid 300, test 197, unlabelled 300 (labels withheld). The split and the flips
come from a fixed seed, so `demo_records()` tells benchmarks and tests which labels are wrong.
The loaded demo also holds `issue_records()`, eight planted data issues (docs/data-issues.md):
exact copies (one leaking into test), near copies (one leaking into valid), twins with
another label, and outliers (noise, a blank scan, a pattern in the unlabelled pool).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets.content import image_key
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

    issue: str | None = None  # the data issue it plants (issue_records)

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


def issue_records(records: list[DemoRecord], seed: int = 0) -> list[DemoRecord]:
    """Eight samples that plant one of each data issue, made from the demo's own images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed + 1)
    by_id = {r.external_id: r for r in records}
    train = [r for r in records if r.split == "train" and not r.flipped]
    picked = [train[i] for i in rng.choice(len(train), 5, replace=False)]

    def pixels(r: DemoRecord) -> np.ndarray:
        return digits.images[int(r.external_id.split("-")[1])]

    def near(r: DemoRecord) -> bytes:
        noisy = pixels(r) + rng.normal(scale=0.25, size=(8, 8))
        return _png(np.clip(noisy, 0, 16))

    a, b, c, d, e = picked
    other = str((int(c.true_label) + 3) % 10)
    out = [
        DemoRecord(f"issue-copy-{a.external_id}", "test", a.true_label, a.label, a.png, "exact copy of a train sample in test"),
        DemoRecord(f"issue-copy-{b.external_id}", "train", b.true_label, b.label, b.png, "exact copy within train"),
        DemoRecord(f"issue-twin-{c.external_id}", "train", c.true_label, other, c.png, "exact twin with another label"),
        DemoRecord(f"issue-near-{d.external_id}", "valid", d.true_label, d.label, near(d), "near copy of a train sample in valid"),
        DemoRecord(f"issue-near-{e.external_id}", "train", e.true_label, e.label, near(e), "near copy within train"),
        DemoRecord("issue-noise", "train", "3", "3", _png(rng.uniform(0, 16, size=(8, 8))), "outlier: noise"),
        DemoRecord("issue-blank", "train", "1", "1", _png(np.zeros((8, 8))), "outlier: a blank scan"),
        DemoRecord("issue-pattern", "unlabelled", "0", None,
                   _png(np.indices((8, 8)).sum(axis=0) % 2 * 16.0), "outlier: a checkerboard"),
    ]
    assert all(r.external_id not in by_id for r in out)
    return out


def load_demo(session: Session, store: BlobStore, name: str = DEMO_NAME, seed: int = 0) -> Dataset:
    """Create the demo dataset (images into the blob store, samples as imported)."""
    ds = Dataset(
        name=name,
        task="image",
        classes=CLASSES,
        settings={
            "unlabelled_joins_train": True,
            "description": "scikit-learn's handwritten digits, 8x8 pixels; 10% of train labels flipped, and a few "
                           "planted copies, near copies, twins with another label and outliers",
        },
        label_version=1,
    )
    session.add(ds)
    session.flush()
    rows = []
    records = demo_records(seed)
    for r in records + issue_records(records, seed):
        digest = store.put(r.png)
        rows.append(
            {
                "dataset_id": ds.id,
                "external_id": r.external_id,
                "split": r.split,
                "image_blob": digest,
                "content_hash": image_key(digest),
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
