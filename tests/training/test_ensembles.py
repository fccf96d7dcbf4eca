"""Ensembles and the options that change which weights predict, through whole train jobs."""

import numpy as np
import pytest
from sqlalchemy import select

from app.jobs.context import LocalJobContext
from app.models import Prediction, Run
from app.training import adapters, environment, learners
from app.training.data import load_training_data
from app.jobs.registry import run_job
from app.training.jobs import TrainRun
from app.training.recipe import resolve_recipe
from tests.training.factories import tabular_dataset


def _run(engine, settings, db, ds, params, monkeypatch):
    """Run a train job; returns the run, its stored probabilities by sample id, and every learner
    it built (the final model first, then one per fold)."""
    built = []
    original = TrainRun._learner

    def keep(self, train_df, valid_df, **kwargs):
        learn = original(self, train_df, valid_df, **kwargs)
        built.append(learn)
        return learn

    monkeypatch.setattr(TrainRun, "_learner", keep)
    ctx = LocalJobContext(engine=engine, settings=settings, params=params, dataset_id=ds.id)
    result = run_job(ctx, "train")
    run = db.get(Run, result["run_id"])
    db.refresh(run)
    assert run.status == "succeeded"
    preds = {p.sample_id: p for p in db.scalars(select(Prediction).where(Prediction.run_id == run.id))}
    return run, preds, built


def _probs(preds, sample_ids, classes):
    return np.array([[preds[int(s)].probs[c] for c in classes] for s in sample_ids])


def test_the_fold_ensemble_predicts_the_mean_of_the_fold_models(engine, settings, db, monkeypatch):
    ds, _ = tabular_dataset(db, flip=0.1)
    run, preds, built = _run(engine, settings, db, ds, {"epochs": 2, "lr": 1e-2, "folds": 3, "ensemble": True}, monkeypatch)
    data = load_training_data(engine, ds.id, settings)
    assert len(built) == 4
    final, folds = built[0], built[1:]
    items = data.items
    rest = items[~items.index.isin(data.train.index)]
    assert set(rest["split"]) == {"valid", "test", "unlabelled"}
    recipe = resolve_recipe(run.params, "tabular")
    adapter = adapters.adapter_for("tabular", recipe, environment.resolve_environment(recipe), data.classes,
                                   data.cat_names, data.cont_names)
    each = [learners.predict_probs(adapter, learn, rest) for learn in folds]
    stored = _probs(preds, rest["sample_id"], data.classes)
    assert stored == pytest.approx(np.mean(each, axis=0), abs=1e-5)
    # ... and not the final model's, nor any single fold's.
    assert not np.allclose(stored, learners.predict_probs(adapter, final, rest), atol=1e-4)
    assert all(not np.allclose(stored, e, atol=1e-4) for e in each)
    assert run.info["predictions"] == {"model": "fold_ensemble", "snapshots": None, "tta": False,
                                       "artifact_reproduces": False}
    # Metrics come from the ensembled probabilities.
    valid = rest[rest["split"] == "valid"]
    accuracy = (_probs(preds, valid["sample_id"], data.classes).argmax(1) == valid["y"].to_numpy()).mean()
    assert run.metrics["valid"]["accuracy"] == pytest.approx(accuracy)
    # Train samples keep their out-of-fold scores.
    train_preds = [preds[int(s)] for s in data.train["sample_id"]]
    assert all(p.out_of_fold and p.fold is not None for p in train_preds)


def test_the_final_model_predicts_by_default_and_the_run_says_so(engine, settings, db, monkeypatch):
    ds, _ = tabular_dataset(db)
    run, _, built = _run(engine, settings, db, ds, {"epochs": 1, "lr": 1e-2, "folds": 2}, monkeypatch)
    assert run.info["predictions"] == {"model": "final", "snapshots": None, "tta": False, "artifact_reproduces": True}


def test_retrain_best_epochs_trains_the_final_model_for_the_folds_median_best(engine, settings, db, monkeypatch):
    ds, _ = tabular_dataset(db, counts={"train": 60, "valid": 30, "test": 6}, flip=0.15)
    params = {"epochs": 12, "lr": 1e-2, "folds": 3, "early_stopping": 2, "monitor": "accuracy",
              "retrain_best_epochs": True}
    run, _, _ = _run(engine, settings, db, ds, params, monkeypatch)
    info = run.info["retrain_best_epochs"]
    fold_best = []
    for f in (1, 2, 3):
        accuracy = [h["accuracy"] for h in run.history if h["model"] == f"fold {f}"]
        assert len(accuracy) < 12  # stopped early
        fold_best.append(int(np.argmax(accuracy)) + 1)  # the first epoch at the best accuracy
    assert info["fold_best_epochs"] == fold_best
    assert info["epochs"] == int(round(float(np.median(fold_best))))
    final_epochs = [h["epoch"] for h in run.history if h["model"] == "final"]
    # No early stopping for the final model: exactly the chosen count.
    assert final_epochs == list(range(1, info["epochs"] + 1))
    assert run.params["epochs"] == 12 and run.params["early_stopping"] == 2


def test_options_run_through_a_whole_job(engine, settings, db, monkeypatch):
    ds, samples = tabular_dataset(db, counts={"train": 90, "valid": 15, "test": 9, "unlabelled": 6})
    params = {"epochs": 3, "folds": 2, "sampling": "oversample", "loss": "focal", "focal_alpha": "balanced",
              "optimizer": "ranger", "schedule": "sgdr", "lr_rule": "minimum", "snapshot_ensemble": 2}
    run, preds, built = _run(engine, settings, db, ds, params, monkeypatch)
    found = run.info["lr_find"]
    assert found["method"] == "minimum" and run.info["lr"] == found["suggestion"] == found["suggestions"]["minimum"]
    assert set(found["suggestions"]) == {"valley", "steep", "minimum"}
    assert run.info["predictions"] == {"model": "final", "snapshots": 2, "tta": False, "artifact_reproduces": False}
    final = built[0]
    assert len(final.snapshots) == 2 and type(final.loss_func).__name__ == "FocalLossFlat"
    assert len(preds) == len(samples)
    assert run.metrics["valid"]["accuracy"] is not None
