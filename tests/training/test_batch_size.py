"""batch_size "auto": validated in the recipe, measured from the gradient noise scale, bounded,
and recorded in the run's resolved recipe."""

import numpy as np
import pytest
import torch
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from torch.utils.data import TensorDataset

from app.jobs.context import LocalJobContext
from app.jobs.registry import run_job
from app.models import Run
from app.training import batch_size as B
from app.training.data import load_training_data
from app.training.fitting import fit_and_evaluate
from app.training.recipe import RecipeError, resolve_recipe
from tests.builders import make_dataset
from tests.training.factories import tabular_dataset


@pytest.mark.parametrize("value,expected", [("auto", "auto"), (" Auto ", "auto"), (32, 32), ("48", 48), (None, 64)])
def test_batch_size_is_an_integer_or_auto(value, expected):
    assert resolve_recipe({"batch_size": value}, "tabular").batch_size == expected


@pytest.mark.parametrize("value", ["big", 1, 65537, True, 2.5, [8], ""])
def test_any_other_batch_size_is_refused_naming_the_field(value):
    with pytest.raises(RecipeError) as exc:
        resolve_recipe({"batch_size": value}, "tabular")
    assert exc.value.errors == [{"field": "batch_size", "message": f"an integer from 2 to 65536, or 'auto'; got {value!r}"}]


def test_the_api_answers_a_bad_batch_size_with_a_422(client, db, engineer):
    ds = make_dataset(db)
    for value, status in (("huge", 422), ("auto", 202), (0, 422)):
        r = client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "train", "params": {"batch_size": value}},
                        headers=engineer.headers)
        assert r.status_code == status, r.text
        if status == 422:
            assert r.json()["detail"].startswith("invalid training params: batch_size: an integer from 2 to 65536")


def _linear_learner(X, y, bs):
    ds = TensorDataset(torch.as_tensor(X), torch.as_tensor(y))
    dls = DataLoaders.from_dsets(ds, ds, bs=bs, shuffle=True, drop_last=True, device="cpu")
    model = torch.nn.Linear(X.shape[1], 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    return Learner(dls, model, loss_func=lambda p, t: ((p.squeeze(1) - t) ** 2).mean())


def test_the_noise_scale_matches_the_exact_one_of_a_linear_model():
    # Squared error of w.x at w = 0: sample i's gradient is -2 y_i x_i, so |G|^2 and tr(Sigma) are exact.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2048, 4)).astype(np.float32)
    y = (X @ np.array([1.0, -1.0, 0.5, 0.0]) + rng.normal(0, 2.0, size=2048)).astype(np.float32)
    g = -2 * y[:, None] * X
    exact = ((g - g.mean(0)) ** 2).sum(1).mean() / (g.mean(0) ** 2).sum()
    torch.manual_seed(0)
    est = B.noise_scale(_linear_learner(X, y, 256), 16, 256, steps=200)
    assert est["steps"] == 200 and est["b_small"] == 16 and est["b_big"] == 256 and est["bytes_per_sample"] is None
    assert exact / 1.5 < est["b_simple"] < exact * 1.5, (est, exact)


def test_choose_rounds_to_a_power_of_two_within_the_bounds():
    est = {"b_simple": 50.0, "grad_sq": 1.0, "bytes_per_sample": None}
    assert B.choose(est, 10_000, None) == (64, {"min": 8, "max": 1024, "steps": 625})
    assert B.choose({**est, "b_simple": 1e6}, 20_000, None)[0] == 1024
    assert B.choose({**est, "b_simple": 2.0}, 10_000, None)[0] == 8
    # On CUDA: half the free memory at the measured bytes per sample.
    chosen, bounds = B.choose({**est, "b_simple": 1e6, "bytes_per_sample": 1e6}, 10_000, int(200e6))
    assert chosen == bounds["memory"] == 100
    # No signal measurable above the noise: the largest size; no noise: the smallest.
    assert B.choose({"b_simple": None, "grad_sq": -1.0}, 20_000, None)[0] == 1024
    assert B.choose({"b_simple": None, "grad_sq": 1.0}, 10_000, None)[0] == 8


def test_choose_keeps_at_least_sixteen_optimizer_steps_an_epoch():
    # The image demo: 1,000 train samples and a noise scale past them chose 500 (2 steps an epoch).
    est = {"b_simple": 1e6, "grad_sq": 1.0, "bytes_per_sample": None}
    chosen, bounds = B.choose(est, 1000, None)
    assert B.MIN_STEPS_PER_EPOCH == 16
    assert chosen == bounds["steps"] == 62 and 1000 // chosen >= B.MIN_STEPS_PER_EPOCH
    assert B.choose(est, 300, None)[0] == 18  # was 150: two batches an epoch
    assert B.choose({"b_simple": None, "grad_sq": -1.0}, 1000, None)[0] == 62  # "the largest size" too
    # Below the bound the noise scale decides, as a power of two.
    assert B.choose({**est, "b_simple": 40.0}, 1000, None)[0] == 32
    # The smallest of the bounds wins: memory below steps, steps below memory.
    chosen, bounds = B.choose({**est, "bytes_per_sample": 1e6}, 1000, int(80e6))
    assert chosen == bounds["memory"] == 40 and bounds["steps"] == 62
    assert B.choose({**est, "bytes_per_sample": 1e3}, 1000, int(80e6))[0] == 62


@pytest.mark.parametrize("n_train,expected", [(120, 7), (40, 2), (4, 2)])
def test_on_a_small_train_set_the_steps_bound_wins_over_the_floor(n_train, expected):
    est = {"b_simple": 1e6, "grad_sq": 1.0, "bytes_per_sample": None}
    for e in (est, {**est, "b_simple": 2.0}, {"b_simple": None, "grad_sq": 1.0}):
        chosen, bounds = B.choose(e, n_train, None)
        assert chosen == bounds["steps"] == expected, (e, n_train)


def test_fit_and_evaluate_picks_a_batch_size(engine, settings, db):
    ds, _ = tabular_dataset(db)
    data = load_training_data(engine, ds.id, settings)
    result = fit_and_evaluate(data, resolve_recipe({"epochs": 2, "lr": 0.05, "batch_size": "auto"}, "tabular"))
    (line,) = [n for n in result.notices if n.startswith("batch size auto")]
    assert "B_simple" in line and "chose" in line
    assert result.value("valid", "accuracy") is not None


def test_a_train_job_with_auto_batch_size_records_the_chosen_size(engine, settings, db):
    ds, _ = tabular_dataset(db, counts={"train": 120, "valid": 15, "test": 15})
    params = {"epochs": 2, "lr": 0.05, "batch_size": "auto", "scoring": "in_sample"}
    ctx = LocalJobContext(engine=engine, settings=settings, params=params, dataset_id=ds.id)
    result = run_job(ctx, "train")
    run = db.get(Run, result["run_id"])
    db.refresh(run)
    assert run.status == "succeeded"
    finder = run.info["batch_size_finder"]
    chosen = run.params["batch_size"]
    assert isinstance(chosen, int) and chosen == finder["chosen"]
    # 120 train samples: 16 steps an epoch cap the batch at 7, below the floor of 8, and the cap wins.
    assert chosen == finder["bounds"]["steps"] == 120 // B.MIN_STEPS_PER_EPOCH
    assert finder["b_small"] == 15 and finder["b_big"] == 60 and finder["steps"] == B.AUTO_STEPS
    assert any(m.startswith("batch size auto: gradient noise scale") for _, m in ctx.logs)
