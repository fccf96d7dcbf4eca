"""The multi-label model's pieces: one-hot targets, its losses and rare-tag sampling."""

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from fastai.losses import BCEWithLogitsLossFlat
from fastai.torch_core import set_seed
from torchvision.ops import sigmoid_focal_loss

from app.training import adapters, environment, learners, multilabel
from app.training.recipe import RecipeError, resolve_recipe

CLASSES = ["a", "b", "c"]


def _frames():
    # 60 train rows: "a" on 48, "b" on 20, "c" (rare) on 4; 8 rows have the empty set.
    labels = []
    for i in range(60):
        tags = [t for t, on in (("a", i % 5 != 0), ("b", i % 3 == 0), ("c", i % 15 == 1)) if on]
        labels.append("|".join(tags))
    train = pd.DataFrame({"sample_id": range(60), "label": labels, "f:x": np.arange(60) / 60.0})
    valid = pd.DataFrame({"sample_id": range(60, 66), "label": ["a", "b", "", "a|c", "c", "a|b"], "f:x": np.arange(6) / 6})
    return train, valid


def _learner(params, tmp_path):
    train, valid = _frames()
    recipe = resolve_recipe({"batch_size": 10, **params}, "tabular", multilabel=True)
    adapter = adapters.adapter_for("tabular", recipe, environment.resolve_environment(recipe), CLASSES, [], ["f:x"],
                                   multilabel=True)
    set_seed(0)
    dls = adapter.dataloaders(train, valid)
    return train, learners.build_learner(adapter, dls, False, [], tmp_path)


def test_targets_are_one_hot_in_class_order_and_unlabelled_rows_are_empty():
    Y = multilabel.indicator(["a|c", "", None, float("nan"), "b"], CLASSES)
    assert Y.tolist() == [[1, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0]]


def test_the_default_loss_is_bce_and_weighted_bce_weighs_positives_by_their_rarity(tmp_path):
    _, learn = _learner({}, tmp_path)
    assert isinstance(learn.loss_func, BCEWithLogitsLossFlat) and learn.loss_func.func.pos_weight is None
    _, learn = _learner({"loss": "weighted_cross_entropy"}, tmp_path)
    assert learn.dls.class_counts.tolist() == [48, 20, 4]
    assert learn.loss_func.func.pos_weight.tolist() == pytest.approx([12 / 48, 40 / 20, 56 / 4])
    # Clipped to [0.01, 100]; a class without a positive weighs 1.
    assert multilabel.pos_weight(np.array([0, 1, 500]), 501).tolist() == pytest.approx([1.0, 100.0, 0.01])
    # Predictions are per-class sigmoids: rows do not sum to 1.
    preds, _ = learn.get_preds(dl=learn.dls.valid)
    assert preds.shape == (6, 3) and ((preds >= 0) & (preds <= 1)).all()


def test_focal_loss_is_torchvisions_sigmoid_focal_loss_with_per_class_weights(tmp_path):
    _, learn = _learner({"loss": "focal", "focal_gamma": 1.5, "focal_alpha": [1.0, 2.0, 3.0]}, tmp_path)
    loss = learn.loss_func
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 0.7, -2.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    terms = sigmoid_focal_loss(logits, targets, alpha=-1, gamma=1.5, reduction="none") * torch.tensor([1.0, 2.0, 3.0])
    assert loss(logits, targets).item() == pytest.approx(terms.mean().item())
    assert torch.allclose(loss.activation(logits), torch.sigmoid(logits))
    # gamma 0 without weights is plain BCE.
    plain = multilabel.SigmoidFocalLossFlat(0.0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    assert plain(logits, targets).item() == pytest.approx(bce.item(), rel=1e-5)
    with pytest.raises(ValueError, match="focal_alpha has 2 weights; the dataset has 3 classes"):
        _learner({"loss": "focal", "focal_alpha": [1.0, 2.0]}, tmp_path)


def test_oversampling_repeats_the_rows_of_rare_tags(tmp_path):
    train, learn = _learner({"sampling": "oversample"}, tmp_path)
    counts = np.array([48, 20, 4])
    groups = multilabel.rarest_tag(train, CLASSES, counts)
    # Each row's group is its rarest tag, the empty set a group of its own.
    assert groups.iloc[1] == "c" and groups.iloc[0] == "b" and groups.iloc[5] == multilabel.EMPTY_GROUP
    assert groups.iloc[2] == "a"
    rows = learn.dls.train_rows
    drawn = Counter(groups.iloc[rows].tolist())
    assert len(set(drawn.values())) == 1, drawn  # every group as large as the largest
    assert learn.dls.class_counts.tolist() == [48, 20, 4] and learn.dls.n_train == 60


def test_weighted_sampling_draws_the_rare_tags_more_often(tmp_path):
    train, learn = _learner({"sampling": "weighted"}, tmp_path)
    assert type(learn.dls.train).__name__.startswith("TabWeighted")
    drawn = 0
    total = 0
    for _ in range(5):
        for batch in learn.dls.train:
            y = batch[-1]
            drawn += int(y[:, 2].sum())
            total += len(y)
    assert drawn / total > 0.15  # 4 of 60 rows (7%) carry "c"; one group in four draws it


def test_label_smoothing_is_refused_for_multilabel_only():
    assert resolve_recipe({"loss": "label_smoothing"}, "tabular").loss == "label_smoothing"
    with pytest.raises(RecipeError) as err:
        resolve_recipe({"loss": "label_smoothing"}, "image", multilabel=True)
    assert [e["field"] for e in err.value.errors] == ["loss"]
    with pytest.raises(RecipeError) as err:
        resolve_recipe({"label_smoothing": 0.2}, "text", multilabel=True)
    assert "label_smoothing" in [e["field"] for e in err.value.errors]
