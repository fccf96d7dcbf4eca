"""fit_and_evaluate: one model, metrics on valid and test, nothing stored."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from app.jobs.context import JobCancelled
from app.models import Prediction, Run
from app.training.data import load_training_data
from app.training.fitting import fit_and_evaluate
from app.training.recipe import resolve_recipe
from tests.training.factories import tabular_dataset


def test_fit_and_evaluate_measures_valid_and_test_and_stores_nothing(engine, settings, db):
    ds, _ = tabular_dataset(db)
    data = load_training_data(engine, ds.id, settings)
    recipe = resolve_recipe({"epochs": 3, "lr": 0.05, "scoring": "in_sample"}, "tabular")
    epochs: list[int] = []
    result = fit_and_evaluate(data, recipe, on_epoch=lambda e: epochs.append(e["epoch"]))
    assert epochs == [1, 2, 3]
    assert [e["epoch"] for e in result.history] == [1, 2, 3]
    assert result.metrics["valid"]["per_class"]["a"]["support"] == 5
    assert result.metrics["test"]["per_class"]["c"]["support"] == 5
    # Three well separated classes: a working model gets nearly all of them.
    assert result.value("valid", "accuracy") >= 0.9
    assert result.value("test", "f1:a") == result.metrics["test"]["per_class"]["a"]["f1"]
    assert result.lr == 0.05
    assert db.scalar(select(func.count()).select_from(Run)) == 0
    assert db.scalar(select(func.count()).select_from(Prediction)) == 0


def test_fit_and_evaluate_trains_on_the_given_subset_only(engine, settings, db):
    ds, _ = tabular_dataset(db)
    data = load_training_data(engine, ds.id, settings)
    recipe = resolve_recipe({"epochs": 1, "lr": 0.05, "batch_size": 8}, "tabular")
    subset = data.train[data.train["label"] != "c"]
    result = fit_and_evaluate(data, recipe, train=subset)
    # Never shown a "c", the model never predicts it: recall of c on valid is zero.
    assert result.metrics["valid"]["per_class"]["c"]["recall"] == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        fit_and_evaluate(data, recipe, train=subset.iloc[:1])


def test_fit_and_evaluate_stops_when_cancelled(engine, settings, db):
    ds, _ = tabular_dataset(db)
    data = load_training_data(engine, ds.id, settings)
    recipe = resolve_recipe({"epochs": 5, "lr": 0.05}, "tabular")
    cancelled = threading.Event()
    with pytest.raises(JobCancelled):
        fit_and_evaluate(data, recipe, is_cancelled=cancelled.is_set, on_epoch=lambda e: cancelled.set())
