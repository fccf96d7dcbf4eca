"""Recipe options to fastai pieces, in one place: data loaders, learners, losses, optimisers,
schedules, precision and devices for each task.

A new option is a name in app.training.recipe and an entry in one of the tables below
(LOSSES, OPTIMIZERS, SCHEDULES, IMAGE_ARCHS, TEXT_ARCHS).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from fastai.callback.fp16 import MixedPrecision  # noqa: F401  (patches Learner.to_fp16 / to_bf16)
from fastai.callback.progress import ProgressCallback
from fastai.callback.schedule import fit_one_cycle  # noqa: F401  (patches Learner.fit_one_cycle)
from fastai.callback.tracker import EarlyStoppingCallback
from fastai.data.block import CategoryBlock, ColReader, ColSplitter, DataBlock, TransformBlock
from fastai.data.core import DataLoaders
from fastai.data.transforms import Normalize
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat
from fastai.metrics import accuracy
from fastai.optimizer import Adam
from fastai.tabular.core import Categorify, FillMissing, Normalize as TabNormalize, TabularPandas
from fastai.tabular.learner import tabular_learner
from fastai.text.data import TextBlock
from fastai.text.learner import text_classifier_learner
from fastai.text.models.awdlstm import AWD_LSTM
from fastai.vision import models as vision_models
from fastai.vision.augment import Resize, ResizeMethod, aug_transforms
from fastai.vision.core import imagenet_stats
from fastai.vision.data import ImageBlock
from fastai.vision.learner import vision_learner
from fastcore.basics import noop

from app.training.recipe import Recipe

# --- option tables ---------------------------------------------------------------------

LOSSES: dict[str, Callable[[Recipe], Any]] = {
    "cross_entropy": lambda r: CrossEntropyLossFlat(),
    "label_smoothing": lambda r: LabelSmoothingCrossEntropyFlat(eps=r.label_smoothing),
}

OPTIMIZERS: dict[str, Callable] = {
    "adam": Adam,
}


def _one_cycle(learn: Learner, recipe: Recipe, lr: float, pretrained: bool, cbs: list) -> None:
    if pretrained:
        # fastai's transfer-learning recipe: one epoch on the new head, then the whole body.
        learn.fine_tune(recipe.epochs, base_lr=lr, freeze_epochs=1, cbs=cbs)
    else:
        learn.fit_one_cycle(recipe.epochs, lr, cbs=cbs)


# name -> (fit function, extra epochs it runs when fine-tuning a pretrained model)
SCHEDULES: dict[str, tuple[Callable[[Learner, Recipe, float, bool, list], None], int]] = {
    "one_cycle": (_one_cycle, 1),
}

IMAGE_ARCHS: dict[str, Callable] = {
    "resnet18": vision_models.resnet18,
    "resnet34": vision_models.resnet34,
    "resnet50": vision_models.resnet50,
    "densenet121": vision_models.densenet121,
    "squeezenet1_1": vision_models.squeezenet1_1,
}

TEXT_ARCHS: dict[str, Any] = {
    "awd_lstm": AWD_LSTM,
}

LR_FIND_ITERATIONS = 100
LR_FIND_MIN_ITERATIONS = 20


# --- device and precision --------------------------------------------------------------


@dataclass
class Environment:
    """Where and how models train: device, mixed precision, loader workers."""

    device: torch.device
    precision: str  # fp32 | bf16 | fp16, as actually used
    num_workers: int
    pin_memory: bool
    notices: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"device": str(self.device), "precision": self.precision, "num_workers": self.num_workers}
        if self.device.type == "cuda":
            d["gpu"] = torch.cuda.get_device_name(self.device)
        else:
            d["threads"] = torch.get_num_threads()
        return d


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_environment(recipe: Recipe) -> Environment:
    """CUDA when present (mixed precision: bf16 where supported, else fp16), fp32 on the CPU."""
    notices: list[str] = []
    if torch.cuda.is_available():
        device = torch.device("cuda")
        bf16_ok = torch.cuda.is_bf16_supported()
        precision = recipe.precision
        if precision == "auto":
            precision = "bf16" if bf16_ok else "fp16"
        elif precision == "bf16" and not bf16_ok:
            precision = "fp16"
            notices.append("this GPU does not support bfloat16: training in fp16 mixed precision")
        return Environment(device, precision, min(8, cpu_count()), True, notices)
    if recipe.precision in ("bf16", "fp16"):
        notices.append(f"{recipe.precision} mixed precision needs CUDA: training in fp32 on the CPU")
    # Loader worker processes cost more than they save for the small batches of CPU training.
    return Environment(torch.device("cpu"), "fp32", 0, False, notices)


def effective_batch_size(batch_size: int, n_train: int) -> int:
    """The batch size, lowered for a small train set so that an epoch has at least two batches
    (fastai drops the last incomplete training batch)."""
    return max(2, min(batch_size, n_train // 2))


# --- tasks ------------------------------------------------------------------------------


def _frame(train_df: pd.DataFrame, valid_df: pd.DataFrame) -> pd.DataFrame:
    df = pd.concat([train_df.assign(is_valid=False), valid_df.assign(is_valid=True)], ignore_index=True)
    return df


class TaskAdapter(ABC):
    """How one task turns sample rows into fastai DataLoaders and a Learner."""

    task: str

    def __init__(self, recipe: Recipe, env: Environment, classes: list[str]) -> None:
        self.recipe, self.env, self.classes = recipe, env, list(classes)

    def y_block(self) -> CategoryBlock:
        # A fixed vocabulary in the dataset's order: every model's outputs line up with
        # `classes`, even when a fold's train set lacks a class.
        return CategoryBlock(vocab=self.classes, sort=False)

    def loader_kwargs(self, n_train: int) -> dict[str, Any]:
        bs = effective_batch_size(self.recipe.batch_size, n_train)
        return {
            "bs": bs,
            "val_bs": bs * 2,
            "device": self.env.device,
            "num_workers": self.env.num_workers,
            "pin_memory": self.env.pin_memory,
        }

    @abstractmethod
    def dataloaders(self, train_df: pd.DataFrame, valid_df: pd.DataFrame) -> DataLoaders:
        """Training and validation dataloaders for this task."""

    @abstractmethod
    def learner(self, dls: DataLoaders, pretrained: bool, **kwargs) -> Learner:
        """The fastai learner for this task."""

    @abstractmethod
    def inference_learner(self, state: dict[str, Any], items: pd.DataFrame) -> Learner:
        """A learner rebuilt from an artifact's preprocessing state (no training data needed)."""

    def state(self, learn: Learner) -> dict[str, Any]:
        """The preprocessing state an artifact needs to predict like `learn`."""
        return {}

    def test_dl(self, learn: Learner, items: pd.DataFrame, bs: int):
        return learn.dls.test_dl(items, bs=bs)


class ImageAdapter(TaskAdapter):
    task = "image"

    def _block(self, augment: bool) -> DataBlock:
        size = self.recipe.image_size
        batch_tfms = []
        if augment:
            # No flips: they change the meaning of digits and text; light affine and lighting only.
            batch_tfms += aug_transforms(do_flip=False, max_rotate=10.0, max_zoom=1.1, max_warp=0.0, max_lighting=0.2)
        # Always ImageNet statistics: what pretrained weights expect, and a fine scaling from scratch.
        batch_tfms.append(Normalize.from_stats(*imagenet_stats))
        return DataBlock(
            blocks=(ImageBlock, self.y_block()),
            get_x=ColReader("path"),
            get_y=ColReader("label"),
            splitter=ColSplitter("is_valid"),
            # Squish keeps the whole picture: a crop could cut away what the label is about.
            item_tfms=Resize(size, method=ResizeMethod.Squish),
            batch_tfms=batch_tfms,
        )

    def dataloaders(self, train_df, valid_df):
        block = self._block(bool(self.recipe.augment))
        return block.dataloaders(_frame(train_df, valid_df), **self.loader_kwargs(len(train_df)))

    def learner(self, dls, pretrained, **kwargs):
        arch = IMAGE_ARCHS[self.recipe.arch]
        return vision_learner(dls, arch, pretrained=pretrained, n_out=len(self.classes), **kwargs)

    def state(self, learn):
        return {"image_size": self.recipe.image_size, "resize": "squish", "normalize": [list(s) for s in imagenet_stats]}

    def inference_learner(self, state, items):
        df = items.assign(label=self.classes[0])
        dls = self._block(False).dataloaders(_frame(df.iloc[:2], df.iloc[:0]), **self.loader_kwargs(4))
        return vision_learner(dls, IMAGE_ARCHS[self.recipe.arch], pretrained=False, n_out=len(self.classes))


class TextAdapter(TaskAdapter):
    task = "text"

    def _block(self, vocab: list[str] | None = None) -> DataBlock:
        # spaCy's blank English tokenizer (no model download) with fastai's rules; in-process,
        # since worker processes cost more than they save at this size.
        text_block = TextBlock.from_df("text", vocab=vocab, seq_len=self.recipe.seq_len, n_workers=0)
        return DataBlock(
            blocks=(text_block, self.y_block()),
            get_x=ColReader("text"),
            get_y=ColReader("label"),
            splitter=ColSplitter("is_valid"),
        )

    def dataloaders(self, train_df, valid_df, vocab=None):
        kwargs = self.loader_kwargs(len(train_df))
        return self._block(vocab).dataloaders(_frame(train_df, valid_df), **kwargs)

    def learner(self, dls, pretrained, **kwargs):
        return text_classifier_learner(
            dls,
            TEXT_ARCHS[self.recipe.arch],
            seq_len=self.recipe.seq_len,
            pretrained=pretrained,
            drop_mult=0.5,
            n_out=len(self.classes),
            **kwargs,
        )

    def state(self, learn):
        return {"vocab": [str(t) for t in learn.dls.vocab[0]], "seq_len": self.recipe.seq_len, "tokenizer": "spacy-blank-en"}

    def inference_learner(self, state, items):
        df = items.assign(label=self.classes[0])
        dls = self.dataloaders(df.iloc[:2], df.iloc[:0], vocab=state["vocab"])
        return self.learner(dls, pretrained=False)


class TabularAdapter(TaskAdapter):
    task = "tabular"

    def __init__(self, recipe, env, classes, cat_names: list[str], cont_names: list[str]) -> None:
        super().__init__(recipe, env, classes)
        self.cat_names, self.cont_names = list(cat_names), list(cont_names)

    def _prepare(self, df: pd.DataFrame) -> pd.DataFrame:
        cols = ["label", *self.cat_names, *self.cont_names]
        out = df[[c for c in cols if c in df.columns]].copy()
        for c in self.cat_names:
            # Integer codes as strings: Categorify then never compares float32 with float64.
            out[c] = out[c].map(lambda v: None if pd.isna(v) else str(int(v))).astype(object)
        return out

    def dataloaders(self, train_df, valid_df):
        df = self._prepare(pd.concat([train_df, valid_df], ignore_index=True))
        n_train = len(train_df)
        to = TabularPandas(
            df,
            procs=[Categorify, FillMissing, TabNormalize],
            cat_names=list(self.cat_names),
            cont_names=list(self.cont_names),
            y_names="label",
            y_block=self.y_block(),
            splits=(list(range(n_train)), list(range(n_train, len(df)))),
        )
        kwargs = self.loader_kwargs(n_train)
        return to.dataloaders(**kwargs)

    def test_dl(self, learn, items, bs):
        return learn.dls.test_dl(self._prepare(items).drop(columns=["label"]), bs=bs)

    def learner(self, dls, pretrained, **kwargs):
        return tabular_learner(dls, layers=list(self.recipe.layers), n_out=len(self.classes), **kwargs)

    def state(self, learn):
        procs = learn.dls.train_ds.procs
        cat = next(p for p in procs.fs if isinstance(p, Categorify))
        fill = next(p for p in procs.fs if isinstance(p, FillMissing))
        norm = next(p for p in procs.fs if isinstance(p, TabNormalize))

        def plain(v):
            return v.item() if isinstance(v, np.generic) else v

        return {
            "cat_names": self.cat_names,
            "cont_names": self.cont_names,
            "categories": {k: [plain(x) for x in v] for k, v in cat.classes.items()},
            "fill": {k: float(v) for k, v in fill.na_dict.items()},
            "means": {k: float(v) for k, v in norm.means.items()},
            "stds": {k: float(v) for k, v in norm.stds.items()},
        }

    def inference_learner(self, state, items):
        from fastai.data.transforms import Categorize, CategoryMap
        from fastai.learner import Learner as _Learner
        from fastai.tabular.model import TabularModel, get_emb_sz

        cat = Categorify()
        cat.classes = {k: CategoryMap(v, sort=False) for k, v in state["categories"].items()}
        fill = FillMissing()
        fill.na_dict, fill.fill_strategy, fill.add_col = dict(state["fill"]), "median", True
        norm = TabNormalize()
        norm.means, norm.stds = dict(state["means"]), dict(state["stds"])
        # A stand-in target with the dataset's classes: the loaders then know that a batch
        # has two inputs (categorical, continuous); test_dl drops the target as usual.
        target = Categorize(vocab=self.classes, sort=False)
        to = TabularPandas(
            self._prepare(items.iloc[:2].assign(label=self.classes[0])),
            procs=[fill, cat, norm, target],
            cat_names=list(self.cat_names),
            cont_names=list(self.cont_names),
            y_names="label",
            y_block=TransformBlock(),
            do_setup=False,
        )
        to.process()
        dls = to.dataloaders(bs=2, shuffle=False, drop_last=False, device=self.env.device)
        model = TabularModel(get_emb_sz(to), len(to.cont_names), len(self.classes), layers=list(self.recipe.layers))
        return _Learner(dls, model, loss_func=CrossEntropyLossFlat())


def adapter_for(task: str, recipe: Recipe, env: Environment, classes: list[str], cat_names=(), cont_names=()) -> TaskAdapter:
    if task == "image":
        return ImageAdapter(recipe, env, classes)
    if task == "text":
        return TextAdapter(recipe, env, classes)
    if task == "tabular":
        return TabularAdapter(recipe, env, classes, list(cat_names), list(cont_names))
    raise ValueError(f"unknown task {task!r}")


# --- learners, fitting, predicting -------------------------------------------------------


def quiet(learn: Learner) -> Learner:
    """Progress goes to the job, not to a console progress bar or printed epoch lines."""
    if any(isinstance(cb, ProgressCallback) for cb in learn.cbs):
        learn.remove_cb(ProgressCallback)
    learn.logger = noop
    return learn


def build_learner(adapter: TaskAdapter, dls: DataLoaders, pretrained: bool, cbs: list, path) -> Learner:
    """The task's fastai learner with the recipe's loss, optimiser, precision and callbacks."""
    recipe = adapter.recipe
    learn = adapter.learner(
        dls,
        pretrained,
        loss_func=LOSSES[recipe.loss](recipe),
        opt_func=OPTIMIZERS[recipe.optimizer],
        metrics=[accuracy],
        cbs=cbs,
        path=path,
    )
    quiet(learn)
    if adapter.env.precision == "bf16":
        learn.to_bf16()
    elif adapter.env.precision == "fp16":
        learn.to_fp16()
    return learn


def total_epochs(recipe: Recipe, pretrained: bool) -> int:
    """Epochs one model runs under the recipe's schedule."""
    return recipe.epochs + (SCHEDULES[recipe.schedule][1] if pretrained else 0)


def fit(learn: Learner, recipe: Recipe, lr: float, pretrained: bool, has_valid: bool) -> list[str]:
    """Train under the recipe's schedule; returns notices."""
    notices = []
    cbs = []
    if recipe.early_stopping is not None:
        if has_valid:
            cbs.append(EarlyStoppingCallback(monitor="valid_loss", patience=recipe.early_stopping))
        else:
            notices.append("early_stopping ignored: the dataset has no labelled valid samples to monitor")
    fit_fn, _ = SCHEDULES[recipe.schedule]
    fit_fn(learn, recipe, lr, pretrained, cbs)
    return notices


def lr_find_iterations(recipe: Recipe, n_train: int) -> int:
    """lr_find's usual 100 steps, but never more than the training itself takes (at least 20):
    on a small dataset 100 steps would be many epochs, and longer than the run."""
    batches = max(1, n_train // effective_batch_size(recipe.batch_size, n_train))
    return int(min(LR_FIND_ITERATIONS, max(LR_FIND_MIN_ITERATIONS, batches * recipe.epochs)))


def find_lr(learn: Learner, num_it: int = LR_FIND_ITERATIONS) -> float:
    """fastai's lr_find 'valley' suggestion."""
    suggestion = learn.lr_find(num_it=num_it, show_plot=False)
    return float(suggestion.valley)


def predict_probs(adapter: TaskAdapter, learn: Learner, items: pd.DataFrame) -> np.ndarray:
    """Class probabilities (rows in the order of `items`) from fastai's get_preds."""
    if len(items) == 0:
        return np.zeros((0, len(adapter.classes)))
    bs = max(adapter.recipe.batch_size * 2, 64)
    dl = adapter.test_dl(learn, items, bs)
    preds, _ = learn.get_preds(dl=dl)
    return preds.float().cpu().numpy().astype(np.float64)
