"""Per-sample embeddings of a run, kept beside its other files as two NumPy arrays.

A train run stores, for every sample it scored, the input of its final model's last linear
layer (the penultimate layer: the pooled body and the head's hidden layer for images, the
pooled encoder for text, the last hidden layer for tabular); an external run stores the
embeddings its file brought. Above MAX_DIM dimensions they are reduced by PCA (fitted on at
most PCA_FIT_ROWS rows, seeded) to MAX_DIM. At a million samples that is 512 MB of float32
in `embedding.npy` (rows in the order of `embedding_sample_ids.npy`), read back memory-mapped:
no JSON value per row, no table in the database. Retention removes them with the run's
predictions.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

MAX_DIM = 128
PCA_FIT_ROWS = 50_000
EMBEDDING_FILE = "embedding.npy"
IDS_FILE = "embedding_sample_ids.npy"


def run_dir(data_dir: str | Path, run_id: int) -> Path:
    """The run's folder (app.training.artifacts.artifact_dir's, without importing torch)."""
    return Path(data_dir) / "artifacts" / f"run-{run_id}"


def reduce(X: np.ndarray, max_dim: int = MAX_DIM, seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """X as float32 with at most max_dim columns: PCA when it has more (the info says so)."""
    X = np.asarray(X, dtype=np.float32)
    info: dict[str, Any] = {}
    if X.ndim != 2:
        raise ValueError(f"embeddings must be an (n, d) matrix, got shape {X.shape}")
    if X.shape[1] > max_dim and X.shape[0] > 1:
        from sklearn.decomposition import PCA

        rng = np.random.default_rng(seed)
        fit_rows = X if len(X) <= PCA_FIT_ROWS else X[np.sort(rng.choice(len(X), PCA_FIT_ROWS, replace=False))]
        dim = min(max_dim, len(fit_rows))
        pca = PCA(n_components=dim, random_state=seed).fit(fit_rows)
        info = {"reduced_from": int(X.shape[1]), "explained_variance": round(float(pca.explained_variance_ratio_.sum()), 4)}
        X = pca.transform(X).astype(np.float32)
    return np.ascontiguousarray(X), info


def save(data_dir: str | Path, run_id: int, sample_ids: np.ndarray, X: np.ndarray, source: str) -> dict[str, Any]:
    """Store the run's embeddings (reduced to MAX_DIM); returns what Run.info["embedding"] keeps."""
    sample_ids = np.asarray(sample_ids, dtype=np.int64)
    if len(sample_ids) != len(X):
        raise ValueError(f"{len(sample_ids)} sample ids for {len(X)} embeddings")
    X, info = reduce(X)
    directory = run_dir(data_dir, run_id)
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / EMBEDDING_FILE, X)
    np.save(directory / IDS_FILE, sample_ids)
    return {"source": source, "dim": int(X.shape[1]), "rows": int(X.shape[0]), **info}


def load(data_dir: str | Path, run_id: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(sample ids, embeddings memory-mapped) of a run, or None when it has none."""
    directory = run_dir(data_dir, run_id)
    if not (directory / EMBEDDING_FILE).exists():
        return None
    return np.load(directory / IDS_FILE), np.load(directory / EMBEDDING_FILE, mmap_mode="r")


def aligned(data_dir: str | Path, run_id: int, sample_ids: np.ndarray) -> np.ndarray | None:
    """The run's embeddings in the order of sample_ids (memory-mapped when the order is the stored
    one), or None when it has none or lacks one of those samples."""
    stored = load(data_dir, run_id)
    if stored is None:
        return None
    ids, matrix = stored
    sample_ids = np.asarray(sample_ids, dtype=np.int64)
    if np.array_equal(ids, sample_ids):
        return np.asarray(matrix)
    position = {int(s): i for i, s in enumerate(ids)}
    rows = [position.get(int(s), -1) for s in sample_ids]
    if min(rows, default=0) < 0:
        return None
    return np.asarray(matrix)[rows]


def drop(data_dir: str | Path, run_id: int) -> bool:
    """Remove a run's embeddings (retention); True if there were any."""
    directory = run_dir(data_dir, run_id)
    found = False
    for name in (EMBEDDING_FILE, IDS_FILE):
        path = directory / name
        if path.exists():
            path.unlink()
            found = True
    return found


def drop_run_dir(data_dir: str | Path, run_id: int) -> None:
    shutil.rmtree(run_dir(data_dir, run_id), ignore_errors=True)
