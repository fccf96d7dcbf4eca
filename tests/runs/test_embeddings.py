"""Run embeddings on disk: reduced to at most 128 dimensions, read back memory-mapped, and
dropped with the run's predictions by retention (app/runs/embeddings.py)."""

from __future__ import annotations

import numpy as np

from app.runs import embeddings
from app.runs.retention import apply_retention
from tests.runs.test_retention import _scored_runs


def test_wide_embeddings_are_reduced_by_pca_narrow_ones_kept(tmp_path):
    rng = np.random.default_rng(0)
    # 300 dimensions that live in a 5-dimensional subspace: PCA keeps all of their variance.
    wide = (rng.normal(size=(400, 5)) @ rng.normal(size=(5, 300))).astype(np.float32)
    info = embeddings.save(tmp_path, 7, np.arange(400), wide, "final_model")
    ids, X = embeddings.load(tmp_path, 7)
    assert X.shape == (400, 128) and X.dtype == np.float32 and isinstance(X, np.memmap)
    assert info["reduced_from"] == 300 and info["explained_variance"] > 0.999 and info["dim"] == 128
    # Distances survive the projection.
    d_before = np.linalg.norm(wide[0] - wide[1])
    assert abs(np.linalg.norm(X[0] - X[1]) - d_before) < 1e-3 * d_before
    narrow = rng.normal(size=(10, 4))
    assert embeddings.save(tmp_path, 8, np.arange(10), narrow, "external") == {"source": "external", "dim": 4, "rows": 10}
    assert np.allclose(embeddings.load(tmp_path, 8)[1], narrow.astype(np.float32))
    assert embeddings.load(tmp_path, 9) is None
    assert embeddings.drop(tmp_path, 8) and embeddings.load(tmp_path, 8) is None and not embeddings.drop(tmp_path, 8)


def test_retention_drops_the_embeddings_of_the_runs_whose_predictions_go(engine, db, tmp_path):
    ds, runs = _scored_runs(db, ["succeeded"] * 3)
    for run in runs:
        embeddings.save(tmp_path, run.id, np.arange(3), np.ones((3, 2)), "final_model")
    assert apply_retention(engine, ds.id, keep=1, data_dir=tmp_path) == [runs[1].id, runs[0].id]
    assert [embeddings.load(tmp_path, r.id) is None for r in runs] == [True, True, False]
