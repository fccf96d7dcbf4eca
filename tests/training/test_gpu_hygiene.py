"""Where and how models train on CUDA: channels_last image models, pinned memory and loader
workers; checked on whatever device the machine has (the CUDA paths run on the CPU too)."""

import numpy as np
import pandas as pd
import torch

from app.training import adapters, environment, learners
from app.training.recipe import resolve_recipe
from tests.training.factories import png


def test_cuda_gets_channels_last_pinned_memory_and_workers_the_cpu_none():
    env = environment.resolve_environment(resolve_recipe({}, "image"))
    if torch.cuda.is_available():
        assert env.channels_last and env.pin_memory and 0 < env.num_workers <= min(8, environment.cpu_count())
    else:
        assert not env.channels_last and not env.pin_memory and env.num_workers == 0
    assert env.describe()["channels_last"] == env.channels_last


def _image_frames(tmp_path, n=24):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        img = rng.integers(0, 60, size=(8, 8))
        if i % 2:
            img[:, :4] += 180
        path = tmp_path / f"{i}.png"
        path.write_bytes(png(img))
        rows.append({"sample_id": i, "label": "ab"[i % 2], "path": str(path)})
    df = pd.DataFrame(rows)
    return df.iloc[:18], df.iloc[18:]


def test_a_channels_last_image_model_trains_and_predicts(tmp_path):
    recipe = resolve_recipe({"epochs": 1, "lr": 1e-3, "image_size": 16, "pretrained": False, "augment": False}, "image")
    env = environment.Environment(torch.device("cpu"), "fp32", 0, False, channels_last=True)
    adapter = adapters.adapter_for("image", recipe, env, ["a", "b"])
    train, valid = _image_frames(tmp_path)
    learn = learners.build_learner(adapter, adapter.dataloaders(train, valid), False, [], tmp_path)
    learners.fit(learn, recipe, 1e-3, False, has_valid=True)
    conv = next(m for m in learn.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()  # NHWC, not the default NCHW
    probs = learners.predict_probs(adapter, learn, valid)
    assert probs.shape == (6, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # Without the flag the model stays NCHW.
    plain = adapters.adapter_for("image", recipe, environment.Environment(torch.device("cpu"), "fp32", 0, False), ["a", "b"])
    learn = learners.build_learner(plain, plain.dataloaders(train, valid), False, [], tmp_path)
    learners.fit(learn, recipe, 1e-3, False, has_valid=True)
    conv = next(m for m in learn.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()
