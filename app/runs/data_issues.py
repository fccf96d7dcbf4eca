"""A run's data issues: its outlier scores and duplicate groups (app.scoring.neighbours), found
from its embeddings and the samples' content keys when the run is stored, and for an image
dataset the valid and test images that are near copies of a train image, found in the pixels
(app.scoring.image_copies)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import Engine, select

from app.db import session_scope
from app.datasets.storage import BlobStore
from app.models import Dataset, Sample
from app.runs import embeddings
from app.scoring import image_copies
from app.scoring.neighbours import NeighbourIssues, conflicting_members, find_issues

KEY_BATCH = 50_000


def content_keys(engine: Engine, dataset_id: int, sample_ids: np.ndarray) -> list[str | None]:
    """The content key (samples.content_hash) of each sample id, in the order given."""
    return _column(engine, dataset_id, sample_ids, Sample.content_hash)


def image_blobs(engine: Engine, dataset_id: int, sample_ids: np.ndarray) -> list[str | None]:
    """The image blob digest of each sample id, in the order given."""
    return _column(engine, dataset_id, sample_ids, Sample.image_blob)


def _column(engine: Engine, dataset_id: int, sample_ids: np.ndarray, column) -> list[str | None]:
    wanted = np.asarray(sample_ids, dtype=np.int64)
    found: dict[int, str] = {}
    with session_scope(engine) as session:
        last = 0
        while True:
            rows = session.execute(
                select(Sample.id, column)
                .where(Sample.dataset_id == dataset_id, Sample.id > last, column.is_not(None))
                .order_by(Sample.id).limit(KEY_BATCH)
            ).all()
            if not rows:
                break
            found.update((r[0], r[1]) for r in rows)
            last = rows[-1][0]
    return [found.get(int(i)) for i in wanted]


def _image_pairs(engine: Engine, data_dir: str | Path, dataset_id: int, sample_ids: np.ndarray,
                 split: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray] | None, dict | None]:
    """For an image dataset: the (held-out row, train row) pairs of near copies in the pixels."""
    with session_scope(engine) as session:
        task = session.scalar(select(Dataset.task).where(Dataset.id == dataset_id))
    if task != "image":
        return None, None
    store = BlobStore(Path(data_dir) / "blobs")
    paths = [str(store.path(b)) if b else "" for b in image_blobs(engine, dataset_id, sample_ids)]
    a, b, _, info = image_copies.held_out_copies(image_copies.thumbnails(paths), split)
    return (a, b), info


def run_issues(engine: Engine, data_dir: str | Path, run_id: int, dataset_id: int, sample_ids: np.ndarray,
               split: np.ndarray, y: np.ndarray, X: np.ndarray | None = None) -> NeighbourIssues:
    """The issues of a run's samples (in the order of sample_ids) from their embeddings X (rows
    in that order), else those stored for the run, if any, and the samples' content keys; info counts the groups that leak (a member
    in train and one in valid or test) and those whose labels conflict."""
    sample_ids = np.asarray(sample_ids, dtype=np.int64)
    if X is None:
        X = embeddings.aligned(data_dir, run_id, sample_ids)
    split = np.asarray(split).astype(str)
    pairs, pixel_info = _image_pairs(engine, data_dir, dataset_id, sample_ids, split)
    issues = find_issues(X, sample_ids, split, content_keys(engine, dataset_id, sample_ids), extra_pairs=pairs)
    if pixel_info is not None:
        issues.info["image_copies"] = pixel_info
    group = issues.group
    in_group = group >= 0
    train_groups = set(group[in_group & (split == "train")].tolist())
    held_out = set(group[in_group & np.isin(split, ["valid", "test"])].tolist())
    issues.info["leak_groups"] = len(train_groups & held_out)
    issues.info["conflict_groups"] = len(set(group[conflicting_members(group, np.asarray(y))].tolist()))
    return issues
