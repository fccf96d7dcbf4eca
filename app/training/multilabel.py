"""The fastai pieces of a multi-label model: one-hot targets, losses on per-class sigmoids,
sampling of the rarer tags and the learner's metrics.

Each class is a binary decision with its own sigmoid (fastai's MultiCategoryBlock, encoded as
one 0/1 column per class), trained with binary cross-entropy (BCEWithLogitsLossFlat). The
recipe's options map as follows (docs/rest.md, "Multi-label datasets"):

- loss "cross_entropy": BCE; "weighted_cross_entropy": BCE with a positive weight per class,
  (negatives / positives) among the train samples, at most MAX_POS_WEIGHT (1 for a class
  without a positive or a negative); "focal": torchvision's sigmoid_focal_loss with
  focal_gamma, focal_alpha weighing each class's terms ("balanced": the single-label class
  weights on the positive counts); "label_smoothing" does not apply (refused at enqueue);
- sampling "oversample" and "weighted" draw by each sample's rarest tag (the empty set is a
  group of its own), as single-label sampling draws by class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from fastai.metrics import F1ScoreMulti, accuracy_multi
from torchvision.ops import sigmoid_focal_loss

from app.datasets.tagsets import indicator  # noqa: F401 (callers take it from here too)
from app.training.recipe import Recipe

MAX_POS_WEIGHT = 100.0
EMPTY_GROUP = "\x00empty"  # the sampling group of a sample with the empty set


def target_names(classes: list[str]) -> list[str]:
    """The one-hot target columns, one per class in the dataset's order."""
    return [f"t:{j}" for j in range(len(classes))]


def with_targets(df: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """df with its one-hot target columns (from its `label` column)."""
    Y = indicator(df["label"], classes)
    return df.assign(**{name: Y[:, j] for j, name in enumerate(target_names(classes))})


def rarest_tag(df: pd.DataFrame, classes: list[str], counts: np.ndarray) -> pd.Series:
    """Each row's rarest tag by `counts` (ties: the first class), EMPTY_GROUP for the empty set."""
    Y = indicator(df["label"], classes)
    big = counts.max() + 1
    pick = np.where(Y == 1, counts[None, :], big).argmin(axis=1)
    return pd.Series(np.where(Y.any(axis=1), np.asarray(classes, dtype=object)[pick], EMPTY_GROUP), index=df.index)


def pos_weight(Y_counts: np.ndarray, n: int) -> np.ndarray:
    """negatives / positives per class, clipped to [1/MAX_POS_WEIGHT, MAX_POS_WEIGHT]; 1 where either is absent."""
    pos = np.asarray(Y_counts, dtype=np.float64)
    neg = n - pos
    ok = (pos > 0) & (neg > 0)
    return np.where(ok, np.clip(neg / np.where(ok, pos, 1.0), 1 / MAX_POS_WEIGHT, MAX_POS_WEIGHT), 1.0)


class SigmoidFocalLossFlat:
    """torchvision's sigmoid focal loss on (batch, k) logits and 0/1 targets, optionally with a
    weight per class; fastai reads `activation` (sigmoid) for get_preds and `decodes`."""

    def __init__(self, gamma: float, weight: torch.Tensor | None = None) -> None:
        self.gamma, self.weight = gamma, weight

    def __call__(self, inp: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
        terms = sigmoid_focal_loss(inp.float(), targ.float(), alpha=-1, gamma=self.gamma, reduction="none")
        if self.weight is not None:
            terms = terms * self.weight.to(terms.device)[None, :]
        return terms.mean()

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)

    def decodes(self, x: torch.Tensor) -> torch.Tensor:
        return x > 0


def multilabel_loss(recipe: Recipe, counts: np.ndarray, n_train: int, device: torch.device):
    """The recipe's loss for k per-class sigmoids; counts: positives per class among n_train."""
    from fastai.losses import BCEWithLogitsLossFlat

    from app.training.options import class_weights

    def tensor(values) -> torch.Tensor:
        return torch.tensor(np.asarray(values, dtype=np.float32), device=device)

    if recipe.loss == "cross_entropy":
        return BCEWithLogitsLossFlat()
    if recipe.loss == "weighted_cross_entropy":
        return BCEWithLogitsLossFlat(pos_weight=tensor(pos_weight(counts, n_train)))
    if recipe.loss == "focal":
        alpha = recipe.focal_alpha
        if alpha is not None and alpha != "balanced" and len(alpha) != len(counts):
            raise ValueError(f"focal_alpha has {len(alpha)} weights; the dataset has {len(counts)} classes")
        weight = None if alpha is None else tensor(class_weights(counts) if alpha == "balanced" else alpha)
        return SigmoidFocalLossFlat(recipe.focal_gamma, weight)
    raise ValueError(f"loss {recipe.loss!r} does not apply to multi-label datasets")


def accuracy(inp: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
    """Per-tag accuracy at 0.5 (fastai's accuracy_multi), under the name the monitor reads."""
    return accuracy_multi(inp, targ, thresh=0.5, sigmoid=True)


def learner_metrics(monitor: str) -> list:
    """The learner's metrics: per-tag accuracy, and macro F1 at 0.5 when the monitor is f1."""
    metrics: list = [accuracy]
    if monitor == "f1":
        metrics.append(F1ScoreMulti(average="macro"))
    return metrics
