"""What a training run reads: a dataset's samples and their current labels, as one DataFrame.

The samples and the dataset's label version are read in one transaction (a snapshot on
both databases), so the run's label_version is the version of exactly the labels it saw.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.datasets import tagsets
from app.datasets.storage import BlobStore
from app.models import Dataset, Sample

# A feature is categorical when every value is an integer and it takes at most this many
# distinct values (flags, codes, small counts); everything else is continuous.
MAX_CATEGORIES = 10


@dataclass
class TrainingData:
    """A dataset as of one label version: `items` has one row per sample.

    Columns: sample_id, split, label (str or None), y (class index, -1 without a label),
    and the input: `path` (image), `text` (text) or one column per feature (tabular).
    In a multi-label dataset `label` is the canonical tag set (app.datasets.tagsets) and y the
    index of that set among the distinct sets, sorted (-1 without a label): equal sets share a
    y, and y >= 0 still means labelled; `targets()` gives the one-hot tags.
    """

    dataset_id: int
    name: str
    task: str
    classes: list[str]
    label_version: int
    items: pd.DataFrame
    cat_names: list[str] = field(default_factory=list)
    cont_names: list[str] = field(default_factory=list)
    multilabel: bool = False

    def targets(self, df: pd.DataFrame | None = None) -> np.ndarray:
        """The (n, k) 0/1 tags of the rows of df (default: every item); an unlabelled row is all 0."""
        from app.training.multilabel import indicator

        return indicator((self.items if df is None else df)["label"], self.classes)

    def split(self, name: str, labelled: bool | None = None) -> pd.DataFrame:
        """The rows of one split, optionally only the labelled (True) or unlabelled (False) ones."""
        df = self.items[self.items["split"] == name]
        if labelled is not None:
            df = df[(df["y"] >= 0) == labelled]
        return df

    @property
    def train(self) -> pd.DataFrame:
        """What the model learns from: the labelled samples of the train split."""
        return self.split("train", labelled=True)

    @property
    def valid(self) -> pd.DataFrame:
        return self.split("valid", labelled=True)


def _read(session: Session, dataset_id: int) -> tuple[Dataset, list]:
    ds = session.get(Dataset, dataset_id)
    if ds is None:
        raise ValueError(f"dataset {dataset_id} not found")
    rows = session.execute(
        select(Sample.id, Sample.split, Sample.label, Sample.reviewed, Sample.text, Sample.features, Sample.image_blob)
        .where(Sample.dataset_id == dataset_id)
        .order_by(Sample.id)
    ).all()
    session.expunge(ds)
    return ds, rows


def read_dataset(engine: Engine, dataset_id: int) -> tuple[Dataset, list]:
    """The dataset row and its samples' (id, split, label, reviewed, text, features, image_blob), consistently."""
    if engine.dialect.name == "postgresql":
        # READ COMMITTED would let a relabel land between the two statements.
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with Session(bind=conn) as session, session.begin():
                return _read(session, dataset_id)
    # SQLite in WAL mode: one read transaction sees one snapshot.
    with Session(bind=engine.execution_options(curate_readonly=True)) as session, session.begin():
        return _read(session, dataset_id)


def infer_feature_types(features: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(categorical, continuous) feature names: integer-valued columns with at most
    MAX_CATEGORIES distinct values are categorical (an embedding fits codes and flags
    without assuming an order), every other column is continuous."""
    cats, conts = [], []
    for name in features.columns:
        col = features[name].dropna()
        values = col.to_numpy(dtype=np.float64) if len(col) else np.array([])
        is_int = len(values) > 0 and np.all(np.isfinite(values)) and np.all(values == np.round(values))
        if is_int and len(np.unique(values)) <= MAX_CATEGORIES:
            cats.append(name)
        else:
            conts.append(name)
    return cats, conts


def load_training_data(engine: Engine, dataset_id: int, settings: Settings) -> TrainingData:
    """Read a dataset's samples with their current labels; raises ValueError if it cannot train."""
    ds, rows = read_dataset(engine, dataset_id)
    classes = list(ds.classes or [])
    if len(classes) < 2:
        raise ValueError(f"dataset {ds.id} needs at least two classes to train, has {classes}")
    index = {c: i for i, c in enumerate(classes)}
    if ds.multilabel:
        # A tag set is a "class" of its own for y: equal sets share an index.
        unknown = sorted({r.label for r in rows if not tagsets.is_canonical(r.label, classes)})
        index = {s: i for i, s in enumerate(sorted({r.label for r in rows if r.label is not None}))}
    else:
        unknown = sorted({r.label for r in rows if r.label is not None and r.label not in index})
    if unknown:
        raise ValueError(f"dataset {ds.id} has labels outside its classes: {unknown[:10]}")
    items = pd.DataFrame(
        {
            "sample_id": np.array([r.id for r in rows], dtype=np.int64),
            "split": [r.split for r in rows],
            "label": [r.label for r in rows],
            "reviewed": np.array([bool(r.reviewed) for r in rows], dtype=bool),
            "y": np.array([index[r.label] if r.label is not None else -1 for r in rows], dtype=np.int64),
        }
    )
    data = TrainingData(ds.id, ds.name, ds.task, classes, ds.label_version, items, multilabel=bool(ds.multilabel))
    if ds.task == "image":
        missing = [r.id for r in rows if not r.image_blob]
        if missing:
            raise ValueError(f"{len(missing)} samples of dataset {ds.id} have no image, e.g. sample {missing[0]}")
        store = BlobStore(settings.blob_dir)
        items["path"] = [str(store.path(r.image_blob)) for r in rows]
        absent = [p for p in items["path"] if not os.path.exists(p)]
        if absent:
            raise ValueError(f"{len(absent)} images are missing from the blob store, e.g. {absent[0]}")
    elif ds.task == "text":
        items["text"] = [r.text or "" for r in rows]
    elif ds.task == "tabular":
        feats = pd.DataFrame.from_records([r.features or {} for r in rows], index=items.index)
        if feats.shape[1] == 0:
            raise ValueError(f"the samples of dataset {ds.id} have no features")
        feats = feats.apply(pd.to_numeric, errors="coerce").astype(np.float64)
        # Feature names may clash with the bookkeeping columns: prefix them.
        feats.columns = [f"f:{c}" for c in feats.columns]
        data.cat_names, data.cont_names = infer_feature_types(feats)
        data.items = items = pd.concat([items, feats], axis=1)
    else:
        raise ValueError(f"unknown task {ds.task!r}")
    if len(data.train) < 2:
        raise ValueError(f"dataset {ds.id} has {len(data.train)} labelled train samples; training needs at least 2")
    return data
