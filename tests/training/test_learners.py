import pandas as pd
import pytest
import torch
from fastai.callback.progress import ProgressCallback
from fastai.callback.tracker import EarlyStoppingCallback
from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat

from app.training import adapters, environment, learners, options
from app.training.recipe import resolve_recipe

def test_precision_is_mixed_on_cuda_and_fp32_on_the_cpu():
    env = environment.resolve_environment(resolve_recipe({}, "image"))
    asked = environment.resolve_environment(resolve_recipe({"precision": "bf16"}, "image"))
    if torch.cuda.is_available():
        assert env.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
        assert env.pin_memory and env.num_workers > 0
        assert asked.precision in ("bf16", "fp16")
    else:
        assert (env.device.type, env.precision, env.num_workers, env.pin_memory, env.notices) == ("cpu", "fp32", 0, False, [])
        assert asked.precision == "fp32"
        assert "needs CUDA" in asked.notices[0]
    fp32 = environment.resolve_environment(resolve_recipe({"precision": "fp32"}, "image"))
    assert fp32.precision == "fp32" and fp32.notices == []


def test_small_train_sets_get_smaller_batches():
    assert environment.effective_batch_size(64, 1000) == 64
    assert environment.effective_batch_size(64, 40) == 20
    assert environment.effective_batch_size(64, 3) == 2


def test_lr_find_never_takes_longer_than_the_training():
    recipe = resolve_recipe({"epochs": 2}, "tabular")
    assert learners.lr_find_iterations(recipe, 40) == 20
    assert learners.lr_find_iterations(recipe, 64 * 30) == 60
    assert learners.lr_find_iterations(resolve_recipe({"epochs": 8}, "tabular"), 64 * 30) == 100


def _tabular_frames():
    rows = [{"sample_id": i, "label": "ab"[i % 2], "f:x": float(i % 2) + 0.01 * i, "f:k": float(i % 3)} for i in range(24)]
    df = pd.DataFrame(rows)
    return df.iloc[:18], df.iloc[18:]


@pytest.mark.parametrize(
    "params, loss_type, eps",
    [({}, CrossEntropyLossFlat, None), ({"label_smoothing": 0.2}, LabelSmoothingCrossEntropyFlat, 0.2)],
)
def test_build_learner_maps_the_recipe_to_fastai_pieces(tmp_path, params, loss_type, eps):
    recipe = resolve_recipe(params, "tabular")
    env = environment.resolve_environment(recipe)
    adapter = adapters.adapter_for("tabular", recipe, env, ["a", "b"], ["f:k"], ["f:x"])
    train, valid = _tabular_frames()
    learn = learners.build_learner(adapter, adapter.dataloaders(train, valid), False, [], tmp_path)
    assert isinstance(learn.loss_func, loss_type)
    if eps is not None:
        assert learn.loss_func.func.eps == eps
    assert learn.opt_func is options.OPTIMIZERS["adam"]
    assert not any(isinstance(cb, ProgressCallback) for cb in learn.cbs)
    # The class vocabulary is the dataset's, in its order.
    assert list(learn.dls.vocab) == ["a", "b"]
    probs = learners.predict_probs(adapter, learn, valid)
    assert probs.shape == (6, 2)
    assert probs.sum(1) == pytest.approx([1.0] * 6, abs=1e-5)


def test_early_stopping_adds_fastais_callback(tmp_path, monkeypatch):
    seen = {}

    def schedule(learn, recipe, lr, pretrained, cbs):
        seen["cbs"] = cbs

    monkeypatch.setitem(options.SCHEDULES, "one_cycle", (schedule, 1))
    recipe = resolve_recipe({"early_stopping": 2}, "tabular")
    notices = learners._fit_once(None, recipe, 1e-3, False, has_valid=True)
    (cb,) = seen["cbs"]
    assert isinstance(cb, EarlyStoppingCallback) and cb.patience == 2 and cb.monitor == "valid_loss"
    assert notices == []
    notices = learners._fit_once(None, recipe, 1e-3, False, has_valid=False)
    assert seen["cbs"] == [] and "early_stopping ignored" in notices[0]
