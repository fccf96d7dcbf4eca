"""Each training option takes effect: tiny tabular (and image) models on the CPU, built with
build_learner and trained with fit, checked through what fastai actually ran."""

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from fastai.callback.core import Callback
from fastai.losses import CrossEntropyLossFlat, FocalLossFlat, LabelSmoothingCrossEntropyFlat
from fastai.optimizer import Lookahead, l2_reg, radam_step, weight_decay
from fastai.torch_core import set_seed
from PIL import Image

from app.training import adapters, environment, learners, options
from app.training.recipe import RecipeError, resolve_recipe
from tests.builders import make_dataset

CLASSES = ["a", "b", "c"]


def _frames(counts=(120, 24, 6), n_valid=15, seed=0):
    """Well separated classes with `counts` train rows each; a balanced valid set."""
    rng = np.random.default_rng(seed)
    rows = []

    def row(c):
        return {"label": CLASSES[c], "f:x": 3 * c + rng.normal(0, 0.5), "f:y": -2 * c + rng.normal(0, 0.5),
                "f:k": float(c % 2)}

    for c, n in enumerate(counts):
        rows += [row(c) for _ in range(n)]
    train = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    valid = pd.DataFrame([row(i % 3) for i in range(n_valid)])
    return train, valid


def _build(params, train, valid, tmp_path, task_params=None):
    recipe = resolve_recipe({"epochs": 3, "lr": 1e-2, "batch_size": 16, **params}, "tabular")
    env = environment.resolve_environment(recipe)
    adapter = adapters.adapter_for("tabular", recipe, env, CLASSES, ["f:k"], ["f:x", "f:y"])
    set_seed(0, reproducible=True)
    learn = learners.build_learner(adapter, adapter.dataloaders(train, valid), False, [], tmp_path)
    return recipe, adapter, learn


def _drawn_labels(dls, epochs=1):
    """Class indices of every sample the train loader yields over `epochs` epochs."""
    drawn = Counter()
    for _ in range(epochs):
        for *_, y in dls.train:
            drawn.update(y.view(-1).tolist())
    return np.array([drawn[i] for i in range(len(CLASSES))])


class Record(Callback):
    """Per epoch: the weights, whether the model was frozen; per step: a count."""

    order = 55

    def __init__(self):
        self.states, self.frozen, self.steps = [], [], 0

    def after_step(self):
        self.steps += 1

    def after_epoch(self):
        self.states.append({k: v.detach().clone() for k, v in self.learn.model.state_dict().items()})
        self.frozen.append(self.learn.opt.frozen_idx > 0)


def _same_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


# --- class imbalance -------------------------------------------------------------------


def test_class_weights_are_the_square_root_of_the_rarest_over_each_class():
    w = options.class_weights(np.array([100, 25, 4, 0]))
    assert w == pytest.approx([0.2, 0.4, 1.0, 1.0])


@pytest.mark.parametrize("params, loss_type", [
    ({}, CrossEntropyLossFlat),
    ({"loss": "weighted_cross_entropy"}, CrossEntropyLossFlat),
    ({"loss": "focal"}, FocalLossFlat),
    ({"focal_alpha": "balanced"}, FocalLossFlat),
    ({"loss": "focal", "focal_gamma": 0.5, "focal_alpha": [1, 2, 3]}, FocalLossFlat),
    ({"label_smoothing": 0.2}, LabelSmoothingCrossEntropyFlat),
])
def test_the_loss_and_its_class_weights_come_from_the_train_split(tmp_path, params, loss_type):
    train, valid = _frames(counts=(100, 25, 4))
    recipe, _, learn = _build(params, train, valid, tmp_path)
    loss = learn.loss_func
    assert type(loss) is loss_type
    weight = getattr(loss.func, "weight", None)
    if params.get("loss") == "weighted_cross_entropy" or params.get("focal_alpha") == "balanced":
        assert weight.tolist() == pytest.approx([0.2, 0.4, 1.0])
    elif "focal_alpha" in params:
        assert weight.tolist() == [1.0, 2.0, 3.0]
    else:
        assert weight is None
    if loss_type is FocalLossFlat:
        assert loss.func.gamma == params.get("focal_gamma", 2.0)
    if loss_type is LabelSmoothingCrossEntropyFlat:
        assert loss.func.eps == 0.2
    # The weights change the loss: with the same (uninformed) outputs, a sample of the rarer
    # class costs more than one of the common class.
    if weight is not None:
        loss.reduction = "none"
        per = loss(torch.zeros(2, 3), torch.tensor([0, 2]))
        assert per[1] > per[0] * 1.5
        if loss_type is CrossEntropyLossFlat:
            assert (per[1] / per[0]).item() == pytest.approx((weight[2] / weight[0]).item())


def test_focal_alpha_needs_one_weight_per_class(tmp_path):
    train, valid = _frames()
    with pytest.raises(ValueError, match="focal_alpha has 2 weights; the dataset has 3 classes"):
        _build({"focal_alpha": "1, 2"}, train, valid, tmp_path)


def test_a_folds_class_weights_come_from_its_own_train_part(tmp_path):
    train, valid = _frames(counts=(100, 25, 4))
    part = pd.concat([train[train.label == "a"].iloc[:16], train[train.label != "a"]])
    _, _, learn = _build({"loss": "weighted_cross_entropy"}, part, valid, tmp_path)
    assert learn.dls.class_counts.tolist() == [16, 25, 4]
    assert learn.loss_func.func.weight.tolist() == pytest.approx(list(np.sqrt(4 / np.array([16, 25, 4]))))


def test_without_sampling_batches_keep_the_imbalance(tmp_path):
    train, valid = _frames()
    _, _, learn = _build({}, train, valid, tmp_path)
    drawn = _drawn_labels(learn.dls, epochs=2)
    assert drawn[2] / drawn.sum() < 0.1 and drawn[0] / drawn.sum() > 0.7


def test_oversampling_repeats_the_rare_classes_until_balanced(tmp_path):
    train, valid = _frames()
    _, _, learn = _build({"sampling": "oversample"}, train, valid, tmp_path)
    dls = learn.dls
    assert len(dls.train_ds) == 3 * 120
    assert Counter(dls.train_ds.items["label"].tolist()) == {0: 120, 1: 120, 2: 120}  # encoded classes
    # The class counts for the loss are the real ones, and every row maps back to its sample.
    assert dls.class_counts.tolist() == [120, 24, 6]
    assert np.bincount(dls.train_rows).tolist() == [1 if c == "a" else 5 if c == "b" else 20 for c in train["label"]]
    drawn = _drawn_labels(dls)
    assert drawn.min() / drawn.max() > 0.8


def test_weighted_sampling_draws_the_classes_evenly(tmp_path):
    train, valid = _frames()
    _, _, learn = _build({"sampling": "weighted"}, train, valid, tmp_path)
    assert len(learn.dls.train_ds) == 150  # the same rows, drawn with weights
    drawn = _drawn_labels(learn.dls, epochs=4)
    shares = drawn / drawn.sum()
    assert shares == pytest.approx([1 / 3] * 3, abs=0.08), drawn


def _pngs(tmp_path, n):
    rows = []
    rng = np.random.default_rng(0)
    for i in range(n):
        c = 0 if i % 5 else 1  # 80% "a"
        img = rng.integers(0, 60, size=(8, 8))
        img[:, :4] += 180 if c == 0 else 0
        img[:, 4:] += 180 if c == 1 else 0
        path = tmp_path / f"{i}.png"
        Image.fromarray(img.astype(np.uint8)).save(path)
        rows.append({"path": str(path), "label": "ab"[c]})
    return pd.DataFrame(rows)


def test_weighted_sampling_uses_fastais_weighted_loaders_for_images(tmp_path):
    df = _pngs(tmp_path, 50)
    recipe = resolve_recipe({"sampling": "weighted", "batch_size": 10, "pretrained": False, "augment": False,
                             "image_size": 16}, "image")
    adapter = adapters.adapter_for("image", recipe, environment.resolve_environment(recipe), ["a", "b"])
    set_seed(0)
    dls = adapter.dataloaders(df.iloc[:40], df.iloc[40:])
    assert type(dls.train).__name__ == "WeightedDL"
    drawn = Counter()
    for _ in range(5):
        for _, y in dls.train:
            drawn.update(y.tolist())
    assert abs(drawn[0] - drawn[1]) / (drawn[0] + drawn[1]) < 0.2, drawn


def test_weighted_sampling_keeps_the_padding_of_text_batches(tmp_path):
    words = {"pos": ["great", "lovely", "good"], "neg": ["awful", "bad", "poor"]}
    rng = np.random.default_rng(0)
    rows = [{"text": f"the film was {rng.choice(words[c])} and {'very ' * int(rng.integers(0, 4))}long .", "label": c}
            for c in ("pos" if i % 6 else "neg" for i in range(48))]
    df = pd.DataFrame(rows)
    recipe = resolve_recipe({"sampling": "weighted", "batch_size": 8, "pretrained": False}, "text")
    adapter = adapters.adapter_for("text", recipe, environment.resolve_environment(recipe), ["neg", "pos"])
    set_seed(0)
    dls = adapter.dataloaders(df.iloc[:40], df.iloc[40:])
    assert type(dls.train).__name__ == "WeightedDL"
    drawn = Counter()
    for _ in range(5):
        for x, y in dls.train:  # texts of different lengths, padded into one tensor per batch
            assert x.shape[0] == y.shape[0] == 8
            drawn.update(y.tolist())
    assert drawn[0] / (drawn[0] + drawn[1]) > 0.35  # "neg" is 1 in 6 of the samples


# --- optimisers ------------------------------------------------------------------------


@pytest.mark.parametrize("params", [
    {},
    {"optimizer": "adam", "weight_decay": 0.05},
    {"optimizer": "radam", "eps": 1e-3},
    {"optimizer": "ranger", "weight_decay": 0.2},
    {"optimizer": "sgd", "weight_decay": 0.01},
])
def test_the_optimizer_and_its_hyper_parameters(tmp_path, params):
    train, valid = _frames()
    _, _, learn = _build(params, train, valid, tmp_path)
    learn.create_opt()
    opt = learn.opt
    name = params.get("optimizer", "adamw")
    inner = opt.opt if isinstance(opt, Lookahead) else opt
    assert isinstance(opt, Lookahead) == (name == "ranger")
    steppers = {getattr(f, "func", f).__name__ for f in inner.cbs}
    hypers = opt.hypers[0]
    # True (decoupled) weight decay everywhere but "adam", which adds it to the gradient.
    assert (weight_decay in inner.cbs, l2_reg in inner.cbs) == ((False, True) if name == "adam" else (True, False))
    default_wd = {"adamw": 0.01, "adam": 0.01, "radam": 0.0, "ranger": 0.01, "sgd": 0.0}[name]
    assert hypers["wd"] == pytest.approx(params.get("weight_decay", default_wd))
    if name == "sgd":
        assert "nesterov_step" in steppers and hypers["mom"] == 0.9 and "eps" not in hypers
    else:
        default_eps = 1e-6 if name == "ranger" else 1e-5
        assert hypers["eps"] == pytest.approx(params.get("eps", default_eps))
    if name in ("radam", "ranger"):
        assert radam_step in inner.cbs
    # No weight decay on batchnorm and bias parameters (fastai's wd_bn_bias=False).
    bias = learn.model.layers[0][0].bias if hasattr(learn.model.layers[0][0], "bias") else None
    bn = next(m for m in learn.model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    for p in [bn.weight, bn.bias] + ([bias] if bias is not None else []):
        assert inner.state[p]["do_wd"] is False
    linear = next(m for m in learn.model.modules() if isinstance(m, torch.nn.Linear))
    assert inner.state[linear.weight].get("do_wd", True) is True


def test_nesterov_sgd_steps_like_torch():
    torch.manual_seed(0)
    w0 = torch.randn(5)
    ours, theirs = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    opt = options.nesterov_sgd([ours], lr=0.1, mom=0.9, wd=0.0)
    ref = torch.optim.SGD([theirs], lr=0.1, momentum=0.9, nesterov=True)
    for step in range(4):
        g = torch.randn(5)
        ours.grad, theirs.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
        assert torch.allclose(ours.data, theirs.data, atol=1e-6), step


# --- schedules ---------------------------------------------------------------------------


def _lrs(params, tmp_path, pretrained=False):
    train, valid = _frames()
    recipe, _, learn = _build({"epochs": 4, **params}, train, valid, tmp_path)
    learners.fit(learn, recipe, 1e-2, pretrained, has_valid=True)
    return np.array(learn.recorder.lrs), len(learn.dls.train)


def test_one_cycle_rises_then_falls(tmp_path):
    lrs, _ = _lrs({}, tmp_path)
    top = lrs.argmax()
    assert 0 < top < len(lrs) // 2
    assert lrs.max() == pytest.approx(1e-2)
    assert np.all(np.diff(lrs[: top + 1]) > 0) and np.all(np.diff(lrs[top:]) < 0)
    # From lr/25 to near 0 (the recorder logs each batch's lr before its step).
    assert lrs[0] == pytest.approx(1e-2 / 25) and lrs[-1] < 0.1 * lrs[0]


def test_flat_cos_holds_then_anneals(tmp_path):
    lrs, _ = _lrs({"schedule": "flat_cos"}, tmp_path)
    flat = int(0.75 * len(lrs))
    assert lrs[: flat - 1] == pytest.approx([1e-2] * (flat - 1))
    assert np.all(np.diff(lrs[flat:]) < 0) and lrs[-1] < 0.05 * 1e-2


def test_sgdr_restarts_every_cycle(tmp_path):
    lrs, per_epoch = _lrs({"schedule": "sgdr", "cycle_len": 2}, tmp_path)
    assert len(lrs) == 4 * per_epoch
    jumps = np.flatnonzero(np.diff(lrs) > 0) + 1
    assert jumps.tolist() == [2 * per_epoch]  # 4 epochs in cycles of 2: one restart
    for cycle in (lrs[: 2 * per_epoch], lrs[2 * per_epoch :]):
        assert cycle[0] == pytest.approx(1e-2) and np.all(np.diff(cycle) < 0)


@pytest.mark.parametrize("schedule", ["one_cycle", "flat_cos"])
def test_pretrained_models_train_the_head_then_everything_at_discriminative_rates(tmp_path, schedule):
    df = _pngs(tmp_path, 24)
    recipe = resolve_recipe({"batch_size": 8, "epochs": 1, "freeze_epochs": 2, "lr_mult": 10, "schedule": schedule,
                             "pretrained": False, "augment": False, "image_size": 32, "arch": "squeezenet1_1"}, "image")
    adapter = adapters.adapter_for("image", recipe, environment.resolve_environment(recipe), ["a", "b"])
    set_seed(0)
    learn = learners.build_learner(adapter, adapter.dataloaders(df.iloc[:16], df.iloc[16:]), False, [], tmp_path)
    rec = Record()
    learn.add_cb(rec)
    assert options.total_epochs(recipe, True) == 3
    learners.fit(learn, recipe, 1e-2, True, has_valid=True)
    assert rec.frozen == [True, True, False]
    lrs = [h["lr"] for h in learn.opt.hypers]
    assert len(lrs) >= 2 and lrs[-1] / lrs[0] == pytest.approx(10.0)
    if schedule == "flat_cos":
        # The unfrozen phase starts flat at lr/2 for the head.
        assert max(learn.recorder.lrs) == pytest.approx(1e-2 / 2)


# --- lr_find -------------------------------------------------------------------------------


def test_the_lr_rule_picks_its_lr_find_suggestion(tmp_path):
    train, valid = _frames()
    _, _, learn = _build({}, train, valid, tmp_path)
    set_seed(1)
    found = learners.lr_suggestions(learn, 20)
    lrs, losses = torch.tensor(learn.recorder.lrs[2:-5]), torch.tensor([float(x) for x in learn.recorder.losses[2:-5]])
    assert found["minimum"] == pytest.approx(lrs[losses.argmin()].item() / 10)
    assert len(set(found.values())) == 3
    for rule in ("steep", "minimum"):
        set_seed(1)
        alone = learn.lr_find(num_it=20, show_plot=False, suggest_funcs=(options.LR_RULES[rule],))
        assert getattr(alone, rule) == pytest.approx(found[rule])


# --- stopping, best weights, accumulation, snapshots -------------------------------------


def test_early_stopping_stops_before_the_budget_and_keep_best_reloads_the_best(tmp_path):
    train, valid = _frames()
    recipe, _, learn = _build({"epochs": 30, "early_stopping": 2, "monitor": "accuracy", "keep_best": True},
                              train, valid, tmp_path)
    rec = Record()
    learn.add_cb(rec)
    learners.fit(learn, recipe, 1e-2, False, has_valid=True)
    epochs = len(rec.states)
    assert epochs < 30
    accuracy = [v[2] for v in learn.recorder.values]
    best = int(np.argmax(accuracy))  # the first epoch with the best accuracy
    assert best == epochs - 3  # patience 2: two epochs without a better one, then stop
    assert _same_weights(learn.model.state_dict(), rec.states[best])
    assert not _same_weights(learn.model.state_dict(), rec.states[-1])


def test_monitor_f1_adds_fastais_macro_f1_and_stops_on_it(tmp_path):
    train, valid = _frames()
    recipe, _, learn = _build({"epochs": 30, "early_stopping": 1, "monitor": "f1"}, train, valid, tmp_path)
    learners.fit(learn, recipe, 1e-2, False, has_valid=True)
    assert "f1_score" in learn.recorder.metric_names
    assert len(learn.recorder.values) < 30


def test_gradient_accumulation_steps_every_effective_batch(tmp_path):
    train, valid = _frames()
    recipe, _, learn = _build({"epochs": 2, "batch_size": 10, "accumulate": 30}, train, valid, tmp_path)
    rec = Record()
    learn.add_cb(rec)
    learners.fit(learn, recipe, 1e-2, False, has_valid=True)
    batches = 2 * len(learn.dls.train)
    assert batches == 30
    assert rec.steps == batches * 10 // 30 == 10


def test_snapshot_ensemble_averages_the_last_epochs_weights(tmp_path):
    train, valid = _frames()
    recipe, adapter, learn = _build({"epochs": 4, "snapshot_ensemble": 2}, train, valid, tmp_path)
    rec = Record()
    learn.add_cb(rec)
    learners.fit(learn, recipe, 1e-2, False, has_valid=True)
    learn.remove_cb(rec)
    assert len(learn.snapshots) == 2
    assert _same_weights(learn.snapshots[0], rec.states[2]) and _same_weights(learn.snapshots[1], rec.states[3])
    final = {k: v.clone() for k, v in learn.model.state_dict().items()}
    probs = learners.predict_probs(adapter, learn, valid)
    assert _same_weights(learn.model.state_dict(), final)  # left with its final weights
    each = []
    for state in learn.snapshots:
        learn.model.load_state_dict(state)
        preds, _ = learn.get_preds(dl=adapter.test_dl(learn, valid, 64))
        each.append(preds.double().numpy())
    assert probs == pytest.approx((each[0] + each[1]) / 2, abs=1e-6)
    assert not np.allclose(each[0], each[1])


def test_tta_predicts_with_fastais_tta(tmp_path, monkeypatch):
    df = _pngs(tmp_path, 24)
    recipe = resolve_recipe({"batch_size": 8, "epochs": 1, "pretrained": False, "image_size": 32, "tta": True,
                             "arch": "squeezenet1_1"}, "image")
    adapter = adapters.adapter_for("image", recipe, environment.resolve_environment(recipe), ["a", "b"])
    set_seed(0)
    learn = learners.build_learner(adapter, adapter.dataloaders(df.iloc[:16], df.iloc[16:]), False, [], tmp_path)
    learners.fit(learn, recipe, 1e-3, False, has_valid=True)
    calls = []
    original = type(learn).tta

    def spy(self, *args, **kwargs):
        calls.append(kwargs["dl"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(learn), "tta", spy)
    set_seed(0)
    plain = learners.predict_probs(adapter, learn, df.iloc[16:])
    augmented = learners.predict_probs(adapter, learn, df.iloc[16:], tta=True)
    assert len(calls) == 1 and len(calls[0].dataset) == 8
    assert augmented.shape == plain.shape and augmented.sum(1) == pytest.approx([1.0] * 8, abs=1e-5)
    assert not np.allclose(augmented, plain)


def test_every_option_has_a_form_field_with_help_in_a_group():
    from app.web.training import field_groups, recipe_fields

    for task in ("tabular", "text", "image"):
        fields = recipe_fields(task)
        assert all(f.help for f in fields), [f.name for f in fields if not f.help]
        groups = dict(field_groups([f for f in fields if not f.main]))
        assert [f.name for f in groups["Other"]] == ["seed"]
        assert [f.name for f in groups["Ensembles"]] == ["ensemble", "snapshot_ensemble"]
        assert {"sampling", "loss", "focal_gamma", "focal_alpha"} <= {f.name for f in groups["Class imbalance"]}


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("params, field, words", [
    ({"sampling": "smote"}, "sampling", "oversample"),
    ({"loss": "hinge"}, "loss", "focal"),
    ({"loss": "cross_entropy", "focal_gamma": 1}, "focal_gamma", "need loss 'focal'"),
    ({"focal_alpha": "heavy"}, "focal_alpha", "'balanced' or one number per class"),
    ({"focal_alpha": [1, -1, 1]}, "focal_alpha", "positive"),
    ({"focal_gamma": 2, "label_smoothing": 0.1}, "loss", "choose one"),
    ({"optimizer": "sgd", "eps": 1e-8}, "eps", "does not apply to sgd"),
    ({"schedule": "one_cycle", "cycle_len": 2}, "cycle_len", "needs schedule 'sgdr'"),
    ({"lr": 0.01, "lr_rule": "steep"}, "lr_rule", "leave lr empty"),
    ({"monitor": "f1"}, "monitor", "needs early_stopping"),
    ({"retrain_best_epochs": True, "scoring": "in_sample"}, "retrain_best_epochs", "out_of_fold"),
    ({"ensemble": True, "scoring": "in_sample"}, "ensemble", "out_of_fold"),
    ({"snapshot_ensemble": 2, "keep_best": True}, "keep_best", "pick one"),
    ({"snapshot_ensemble": 11}, "snapshot_ensemble", "more than the 10 epochs"),
    ({"accumulate": 64}, "accumulate", "larger than batch_size 64"),
    ({"freeze_epochs": 1}, "freeze_epochs", "does not apply to tabular"),
    ({"tta": True}, "tta", "does not apply to tabular"),
])
def test_bad_option_params_name_the_field(params, field, words):
    with pytest.raises(RecipeError) as info:
        resolve_recipe(params, "tabular")
    assert any(e["field"] == field and words in e["message"] for e in info.value.errors), info.value.errors


def test_tta_needs_augmentation():
    with pytest.raises(RecipeError, match="tta: test-time augmentation needs augment"):
        resolve_recipe({"tta": True, "augment": False}, "image")
    assert resolve_recipe({"tta": True}, "image").tta is True


@pytest.mark.parametrize("params, words", [
    ({"sampling": "smote"}, "sampling"),
    ({"loss": "focal", "label_smoothing": 0.1}, "label_smoothing needs loss 'label_smoothing'"),
    ({"ensemble": True, "scoring": "in_sample"}, "ensemble needs out_of_fold scoring"),
    ({"tta": True}, "tta: does not apply to tabular"),
])
def test_the_jobs_api_refuses_bad_options_with_422(client, db, engineer, params, words):
    ds = make_dataset(db, task="tabular")
    r = client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "train", "params": params}, headers=engineer.headers)
    assert r.status_code == 422, r.text
    assert words in r.json()["detail"]
    ok = client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "train", "params": {
        "sampling": "weighted", "loss": "focal", "focal_alpha": "balanced", "optimizer": "ranger",
        "schedule": "flat_cos", "early_stopping": 2, "monitor": "f1", "keep_best": True, "ensemble": True,
    }}, headers=engineer.headers)
    assert ok.status_code == 202, ok.text
