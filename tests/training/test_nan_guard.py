"""Non-finite losses during a fit: detected before the step, the start state restored, retried
with a larger eps and a lower lr; a permanent NaN fails the run with what was tried."""

import numpy as np
import pandas as pd
import pytest
import torch
from sqlalchemy import func, select

from app.jobs.context import LocalJobContext
from app.jobs.registry import run_job
from app.models import Prediction, Run
from app.training.data import load_training_data
from app.training.fitting import fit_and_evaluate
from app.training.jobs import TrainRun
from app.training.nan_guard import (
    NonFiniteTraining,
    PoisonLossCallback,
    check_finite_probs,
    fit_with_recovery,
    weights_finite,
)
from app.training.recipe import resolve_recipe
from tests.training.factories import tabular_dataset


def _poison_final(monkeypatch, poison: PoisonLossCallback) -> None:
    """Add `poison` to the final model's fit (as a fastai callback, next to the job's own)."""
    original = TrainRun._callbacks

    def callbacks(self, stage, label, model, fold):
        cbs = original(self, stage, label, model, fold)
        return cbs + [poison] if model == "final" else cbs

    monkeypatch.setattr(TrainRun, "_callbacks", callbacks)


def test_fit_recovers_from_one_poisoned_batch(engine, settings, db):
    ds, _ = tabular_dataset(db)
    data = load_training_data(engine, ds.id, settings)
    recipe = resolve_recipe({"epochs": 3, "lr": 0.05, "scoring": "in_sample"}, "tabular")
    poison = PoisonLossCallback(at=5)
    result = fit_and_evaluate(data, recipe, callbacks=[poison])
    assert poison.poisoned == 1
    # The retry trained a working model from the start state: every epoch again, all finite.
    assert [e["epoch"] for e in result.history][-3:] == [1, 2, 3]
    assert all(np.isfinite(e["train_loss"]) for e in result.history)
    assert result.value("valid", "accuracy") >= 0.9


def test_sgd_retries_with_a_lower_lr_and_no_eps(engine, settings, db):
    ds, _ = tabular_dataset(db)
    data = load_training_data(engine, ds.id, settings)
    recipe = resolve_recipe({"epochs": 2, "lr": 0.05, "optimizer": "sgd", "scoring": "in_sample"}, "tabular")
    with pytest.raises(NonFiniteTraining, match=r"lr 5\.00e-03.*lr 5\.00e-04") as exc:
        fit_and_evaluate(data, recipe, callbacks=[PoisonLossCallback(at=1, times=None)])
    assert "eps" not in str(exc.value).split("(")[1].split(")")[0]


def test_a_train_job_recovers_and_writes_finite_predictions(engine, settings, db, monkeypatch):
    ds, samples = tabular_dataset(db)
    params = {"epochs": 3, "lr": 0.05, "scoring": "in_sample", "seed": 1}
    poison = PoisonLossCallback(at=4)
    _poison_final(monkeypatch, poison)
    ctx = LocalJobContext(engine=engine, settings=settings, params=params, dataset_id=ds.id)
    result = run_job(ctx, "train")
    assert poison.poisoned == 1
    run = db.get(Run, result["run_id"])
    db.refresh(run)
    assert run.status == "succeeded"
    (recovery,) = run.info["nan_recovery"]
    assert recovery["model"] == "final"
    (failed,) = recovery["attempts"]
    assert failed["attempt"] == 1 and failed["lr"] == 0.05 and failed["error"] == "non-finite loss at epoch 2, batch 2"  # 2 batches an epoch
    retry_lines = [m for level, m in ctx.logs if level == "warning" and "retrying with" in m]
    assert len(retry_lines) == 1 and "eps 1e-04" in retry_lines[0] and "restored the weights" in retry_lines[0]
    # The history holds the retry's epochs from 1 again; predictions are finite and correct.
    assert [h["epoch"] for h in run.history][-3:] == [1, 2, 3]
    preds = db.scalars(select(Prediction).where(Prediction.run_id == run.id)).all()
    assert len(preds) == len(samples)
    assert all(np.isfinite(list(p.probs.values())).all() and abs(sum(p.probs.values()) - 1) < 1e-4 for p in preds)
    assert run.metrics["valid"]["accuracy"] >= 0.9 and run.metrics["test"]["accuracy"] >= 0.9


def test_a_permanent_nan_fails_the_run_with_what_was_tried(engine, settings, db, monkeypatch):
    ds, _ = tabular_dataset(db)
    _poison_final(monkeypatch, PoisonLossCallback(at=3, times=None))
    ctx = LocalJobContext(engine=engine, settings=settings, params={"epochs": 2, "lr": 0.05, "scoring": "in_sample"},
                          dataset_id=ds.id)
    with pytest.raises(NonFiniteTraining, match="all 3 attempts") as exc:
        run_job(ctx, "train")
    message = str(exc.value)
    assert "lr 5.00e-02" in message and "eps 1e-04" in message and "lr 5.00e-03, eps 1e-03" in message
    run = db.get(Run, ctx.run_id)
    db.refresh(run)
    assert run.status == "failed" and "all 3 attempts" in run.info["error"]
    assert len(run.info["nan_recovery"][0]["attempts"]) == 3
    assert len([m for _, m in ctx.logs if "retrying with" in m]) == 2
    assert db.scalar(select(func.count()).select_from(Prediction).where(Prediction.run_id == run.id)) == 0


def test_non_finite_probabilities_are_never_returned():
    assert check_finite_probs(torch.tensor([[0.5, 0.5]])).shape == (1, 2)
    with pytest.raises(NonFiniteTraining, match="1 samples"):
        check_finite_probs(torch.tensor([[0.5, 0.5], [float("nan"), 1.0]]))


def _tabular_learner(tmp_path):
    from app.training import adapters, environment, learners

    rows = [{"sample_id": i, "label": "ab"[i % 2], "f:x": float(i % 2) + 0.01 * i} for i in range(40)]
    df = pd.DataFrame(rows)
    recipe = resolve_recipe({"epochs": 2, "lr": 0.05}, "tabular")
    adapter = adapters.adapter_for("tabular", recipe, environment.resolve_environment(recipe), ["a", "b"], [], ["f:x"])
    return learners.build_learner(adapter, adapter.dataloaders(df.iloc[:32], df.iloc[32:]), False, [], tmp_path)


def test_flags_read_every_few_steps_still_catch_the_nan_and_restore(tmp_path):
    # As on CUDA: the flags are read every 4 steps and at each epoch's end (2 batches an epoch here),
    # so the NaN step reaches the weights before it is seen; the restore undoes it.
    learn = _tabular_learner(tmp_path)
    start = [p.detach().clone() for p in learn.model.parameters()]
    lrs = []

    def fit_once(lr):
        lrs.append(lr)
        if len(lrs) == 2:  # the retry starts from the weights the first attempt started from
            assert all(torch.equal(a, b) for a, b in zip(start, learn.model.parameters()))
        learn.fit_one_cycle(2, lr)
        return []

    with learn.added_cbs([PoisonLossCallback(at=1)]):
        fit_with_recovery(learn, 0.05, fit_once, has_eps=True, check_every=4)
    assert lrs == [0.05, 0.05]
    (failed,) = learn.nan_recovery
    assert failed["error"] == "non-finite loss in epoch 1"
    assert weights_finite(learn.model) and learn.opt.hypers[0]["eps"] == 1e-4
