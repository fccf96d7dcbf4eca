"""Recipe options to fastai pieces, in one place: data loaders, sampling, learners, losses,
optimisers, schedules, early stopping, precision, devices and ensembled predictions for each task.

A new option is a name in app.training.recipe and an entry in one of the tables below
(LOSSES, OPTIMIZERS, SCHEDULES, LR_RULES, MONITORS, IMAGE_ARCHS, TEXT_ARCHS).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
from fastai.callback.core import Callback
from fastai.callback.data import weighted_dataloaders  # noqa: F401  (patches DataBlock.weighted_dataloaders)
from fastai.callback.fp16 import MixedPrecision  # noqa: F401  (patches Learner.to_fp16 / to_bf16)
from fastai.callback.progress import ProgressCallback
from fastai.callback.schedule import (  # noqa: F401  (fit_one_cycle, fine_tune, fit_flat_cos patch Learner)
    ParamScheduler,
    SchedCos,
    combine_scheds,
    fine_tune,
    fit_flat_cos,
    fit_one_cycle,
    minimum,
    steep,
    valley,
)
from fastai.callback.tracker import EarlyStoppingCallback
from fastai.callback.training import GradientAccumulation
from fastai.data.block import CategoryBlock, ColReader, ColSplitter, DataBlock, TransformBlock
from fastai.data.core import DataLoaders
from fastai.data.transforms import Normalize
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat, FocalLossFlat, LabelSmoothingCrossEntropyFlat
from fastai.metrics import F1Score, accuracy
from fastai.optimizer import Adam, Optimizer, RAdam, average_grad, l2_reg, ranger, weight_decay
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
from fastcore.foundation import L

from app.training.callbacks import BestEpochCallback, KeepBestCallback, SnapshotCallback
from app.training.recipe import Recipe

# --- class imbalance -------------------------------------------------------------------


def class_counts(labels: pd.Series, classes: list[str]) -> np.ndarray:
    """How many of `labels` fall in each class, in the order of `classes`."""
    counts = labels.value_counts()
    return np.array([int(counts.get(c, 0)) for c in classes], dtype=np.int64)


def class_weights(counts: np.ndarray) -> np.ndarray:
    """sqrt(n_min / n_c): the rarest class weighs 1, a class 100x as common 0.1. The square root
    (rather than the full inverse frequency) keeps the common classes' precision; a class absent
    from the train set weighs 1 (no sample of it reaches the loss)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        return np.ones_like(counts)
    n_min = counts[present].min()
    return np.where(present, np.sqrt(n_min / np.where(present, counts, 1.0)), 1.0)


def oversample(df: pd.DataFrame, classes: list[str], seed: int) -> pd.DataFrame:
    """Rows of the rarer classes repeated until every present class has as many as the largest:
    whole copies first, then a seeded random draw without replacement for the remainder."""
    counts = class_counts(df["label"], classes)
    target = counts.max()
    rng = np.random.default_rng(seed)
    parts = []
    for c, n in zip(classes, counts):
        if n == 0:
            continue
        rows = df[df["label"] == c]
        whole, rest = divmod(int(target), int(n))
        parts += [rows] * whole
        if rest:
            parts.append(rows.iloc[np.sort(rng.choice(int(n), rest, replace=False))])
    return pd.concat(parts)


def sample_weights(df: pd.DataFrame, counts: np.ndarray, classes: list[str]) -> np.ndarray:
    """Per-row draw weights for fastai's weighted loaders: 1 / (its class's count), so every
    class is drawn equally often in expectation."""
    per_class = {c: 1.0 / n for c, n in zip(classes, counts) if n > 0}
    return df["label"].map(per_class).to_numpy(dtype=np.float64)


# --- option tables ---------------------------------------------------------------------


def _weights_tensor(weights, device: torch.device) -> torch.Tensor:
    return torch.tensor(np.asarray(weights, dtype=np.float32), device=device)


def _focal(recipe: Recipe, counts: np.ndarray, device: torch.device) -> FocalLossFlat:
    alpha = recipe.focal_alpha
    if alpha is None:
        weight = None
    elif alpha == "balanced":
        weight = _weights_tensor(class_weights(counts), device)
    else:
        if len(alpha) != len(counts):
            raise ValueError(f"focal_alpha has {len(alpha)} weights; the dataset has {len(counts)} classes")
        weight = _weights_tensor(alpha, device)
    return FocalLossFlat(gamma=recipe.focal_gamma, weight=weight)


# name -> loss from (recipe, the train set's class counts, device)
LOSSES: dict[str, Callable[[Recipe, np.ndarray, torch.device], Any]] = {
    "cross_entropy": lambda r, counts, device: CrossEntropyLossFlat(),
    "weighted_cross_entropy": lambda r, counts, device: CrossEntropyLossFlat(weight=_weights_tensor(class_weights(counts), device)),
    "focal": _focal,
    "label_smoothing": lambda r, counts, device: LabelSmoothingCrossEntropyFlat(eps=r.label_smoothing),
}


def nesterov_step(p, lr, mom, grad_avg, **kwargs):
    "Nesterov momentum, as torch.optim.SGD(nesterov=True): step along grad + mom * grad_avg"
    p.data.add_(p.grad.data.add(grad_avg, alpha=mom), alpha=-lr)


def nesterov_sgd(params, lr, mom: float = 0.9, wd: float = 0.0, decouple_wd: bool = True) -> Optimizer:
    """SGD with Nesterov momentum from fastai's optimizer steps (fastai's SGD has plain momentum)."""
    cbs = [weight_decay] if decouple_wd else [l2_reg]
    return Optimizer(params, [*cbs, average_grad, nesterov_step], lr=lr, mom=mom, wd=wd)


# name -> fastai optimizer function. fastai's Adam decouples weight decay (AdamW) by default:
# "adamw" is that, unchanged; "adam" adds the decay to the gradient (L2), the classic Adam.
OPTIMIZERS: dict[str, Callable] = {
    "adamw": Adam,
    "adam": Adam,
    "radam": RAdam,
    "ranger": ranger,
    "sgd": nesterov_sgd,
}
OPTIMIZER_OPTIONS: dict[str, dict[str, Any]] = {
    "adam": {"decouple_wd": False},
    "sgd": {"mom": 0.9},
}


def opt_func(recipe: Recipe) -> Callable:
    """The recipe's optimizer function with its eps and weight decay (true weight decay except for
    "adam"; the learner keeps batchnorm and bias parameters out of it: wd_bn_bias=False)."""
    kwargs = dict(OPTIMIZER_OPTIONS.get(recipe.optimizer, {}))
    if recipe.eps is not None:
        kwargs["eps"] = recipe.eps
    if recipe.weight_decay is not None:
        kwargs["wd"] = recipe.weight_decay
    fn = OPTIMIZERS[recipe.optimizer]
    return partial(fn, **kwargs) if kwargs else fn


def fit_sgdr_cycles(learn: Learner, n_epoch: int, lr, cycle_len: int, cbs: list) -> None:
    """SGDR with cycles of `cycle_len` epochs (the last one shorter when they do not divide
    n_epoch): a cosine from lr to 0 in each, restarting at lr. fastai's fit_sgdr doubles each
    cycle (cycle_mult=2, epochs 1, 3, 7, 15 ...); this builds the same ParamScheduler with
    equal cycles so that any epoch count works."""
    if learn.opt is None:
        learn.create_opt()
    learn.opt.set_hyper("lr", lr)
    lr_max = np.array([h["lr"] for h in learn.opt.hypers])
    lengths = [cycle_len] * (n_epoch // cycle_len) + ([n_epoch % cycle_len] if n_epoch % cycle_len else [])
    scheds = {"lr": combine_scheds([n / n_epoch for n in lengths], [SchedCos(lr_max, 0) for _ in lengths])}
    learn.fit(n_epoch, cbs=ParamScheduler(scheds) + L(cbs))


def _phase(name: str, learn: Learner, recipe: Recipe, n_epoch: int, lr, cbs: list, part: str = "all") -> None:
    """One fit under the schedule `name`; part "head" and "body" are a pretrained model's two
    phases (one_cycle then takes fine_tune's settings), "all" a model from scratch."""
    if name == "one_cycle":
        if part == "head":
            learn.fit_one_cycle(n_epoch, lr, pct_start=0.99, cbs=cbs)
        elif part == "body":
            learn.fit_one_cycle(n_epoch, lr, pct_start=0.3, div=5.0, cbs=cbs)
        else:
            learn.fit_one_cycle(n_epoch, lr, cbs=cbs)
    elif name == "flat_cos":
        learn.fit_flat_cos(n_epoch, lr, cbs=cbs)
    else:
        fit_sgdr_cycles(learn, n_epoch, lr, recipe.cycle_len or 1, cbs)


def _fine_tune(name: str, learn: Learner, recipe: Recipe, lr: float, cbs: list) -> None:
    """fastai's transfer-learning recipe under any schedule: `freeze_epochs` on the new head at
    lr, then the whole model at lr/2 with discriminative rates slice(lr/2/lr_mult, lr/2)."""
    freeze_epochs = recipe.freeze_epochs if recipe.freeze_epochs is not None else 1
    lr_mult = recipe.lr_mult or 100.0
    if name == "one_cycle" and freeze_epochs > 0:
        learn.fine_tune(recipe.epochs, base_lr=lr, freeze_epochs=freeze_epochs, lr_mult=lr_mult, cbs=cbs)
        return
    if freeze_epochs > 0:
        learn.freeze()
        _phase(name, learn, recipe, freeze_epochs, slice(lr), cbs, "head")
    learn.unfreeze()
    _phase(name, learn, recipe, recipe.epochs, slice(lr / 2 / lr_mult, lr / 2), cbs, "body")


def _schedule(name: str) -> Callable[[Learner, Recipe, float, bool, list], None]:
    def fit_fn(learn: Learner, recipe: Recipe, lr: float, pretrained: bool, cbs: list) -> None:
        if pretrained:
            _fine_tune(name, learn, recipe, lr, cbs)
        else:
            _phase(name, learn, recipe, recipe.epochs, lr, cbs)

    fit_fn.__name__ = f"fit_{name}"
    return fit_fn


# name -> (fit function, whether a pretrained model first trains its head for freeze_epochs)
SCHEDULES: dict[str, tuple[Callable[[Learner, Recipe, float, bool, list], None], bool]] = {
    "one_cycle": (_schedule("one_cycle"), True),
    "flat_cos": (_schedule("flat_cos"), True),
    "sgdr": (_schedule("sgdr"), True),
}

# lr_find suggestion functions; fastai's `minimum` is already a tenth of the minimum's lr.
LR_RULES: dict[str, Callable] = {"valley": valley, "steep": steep, "minimum": minimum}
# monitor name -> the recorder's column
MONITORS = {"valid_loss": "valid_loss", "accuracy": "accuracy", "f1": "f1_score"}

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

    def dataloaders(self, train_df: pd.DataFrame, valid_df: pd.DataFrame) -> DataLoaders:
        """Training and validation dataloaders under the recipe's sampling. The class counts of
        train_df (before any oversampling) ride along as `dls.class_counts` for the loss, and
        `dls.train_rows` maps each train dataset row to its row of train_df."""
        counts = class_counts(train_df["label"], self.classes)
        wgts = None
        # Which row of train_df each row of the train dataset is (repeated when oversampled).
        rows = np.arange(len(train_df))
        if self.recipe.sampling == "oversample":
            marked = oversample(train_df.assign(_curate_row=rows), self.classes, self.recipe.seed)
            rows = marked["_curate_row"].to_numpy()
            train_df = marked.drop(columns="_curate_row")
        elif self.recipe.sampling == "weighted":
            wgts = sample_weights(train_df, counts, self.classes)
        dls = self.make_dataloaders(train_df, valid_df, wgts)
        dls.class_counts = counts
        dls.train_rows = rows
        return dls

    @abstractmethod
    def make_dataloaders(self, train_df: pd.DataFrame, valid_df: pd.DataFrame, wgts: np.ndarray | None) -> DataLoaders:
        """Training and validation dataloaders for this task; with `wgts` (one per train row) the
        training loader draws rows with those weights (fastai's weighted loaders)."""

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

    def make_dataloaders(self, train_df, valid_df, wgts=None):
        block = self._block(bool(self.recipe.augment))
        kwargs = self.loader_kwargs(len(train_df))
        if wgts is None:
            return block.dataloaders(_frame(train_df, valid_df), **kwargs)
        # weighted_dataloaders takes a weight per row of the whole frame and keeps the train rows'.
        full = np.concatenate([wgts, np.ones(len(valid_df))])
        return block.weighted_dataloaders(_frame(train_df, valid_df), full, **kwargs)

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

    def make_dataloaders(self, train_df, valid_df, wgts=None, vocab=None):
        kwargs = self.loader_kwargs(len(train_df))
        block = self._block(vocab)
        if wgts is None:
            return block.dataloaders(_frame(train_df, valid_df), **kwargs)
        # weighted_dataloaders leaves out the block's own loader settings: keep its padding
        # (its length-sorted loader is what the weighted one replaces).
        full = np.concatenate([wgts, np.ones(len(valid_df))])
        pad = block.dls_kwargs["before_batch"]
        return block.weighted_dataloaders(_frame(train_df, valid_df), full, before_batch=pad, **kwargs)

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
        dls = self.make_dataloaders(df.iloc[:2], df.iloc[:0], vocab=state["vocab"])
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

    def make_dataloaders(self, train_df, valid_df, wgts=None):
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
        if wgts is not None:
            # TabularPandas loads with fastai's TabWeightedDL, which takes the train rows' weights.
            kwargs["dl_kwargs"] = [{"wgts": wgts}, {}]
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
    """The task's fastai learner with the recipe's loss, optimiser, metrics, precision and callbacks."""
    recipe = adapter.recipe
    counts = getattr(dls, "class_counts", None)
    if counts is None:
        if recipe.loss in ("weighted_cross_entropy", "focal"):
            raise ValueError("class-weighted losses need loaders from TaskAdapter.dataloaders (they carry the class counts)")
        counts = np.ones(len(adapter.classes), dtype=np.int64)
    metrics: list = [accuracy]
    if recipe.monitor == "f1":
        metrics.append(F1Score(average="macro"))
    learn = adapter.learner(
        dls,
        pretrained,
        loss_func=LOSSES[recipe.loss](recipe, counts, adapter.env.device),
        opt_func=opt_func(recipe),
        metrics=metrics,
        cbs=cbs,
        path=path,
        wd_bn_bias=False,
    )
    quiet(learn)
    if adapter.env.precision == "bf16":
        learn.to_bf16()
    elif adapter.env.precision == "fp16":
        learn.to_fp16()
    return learn


def total_epochs(recipe: Recipe, pretrained: bool) -> int:
    """Epochs one model runs under the recipe's schedule."""
    _, two_phases = SCHEDULES[recipe.schedule]
    freeze = recipe.freeze_epochs if recipe.freeze_epochs is not None else 1
    return recipe.epochs + (freeze if pretrained and two_phases else 0)


def fit(learn: Learner, recipe: Recipe, lr: float, pretrained: bool, has_valid: bool) -> list[str]:
    """Train under the recipe's schedule; returns notices.

    Afterwards `learn.best_epoch` is the epoch (counted over both phases of a pretrained model)
    with the best `monitor` value when retrain_best_epochs asks for it, and `learn.snapshots`
    the last epochs' weights when snapshot_ensemble is on."""
    notices = []
    cbs: list[Callback] = []
    monitor = MONITORS[recipe.monitor]
    watchers = {"early_stopping": recipe.early_stopping is not None, "keep_best": recipe.keep_best,
                "retrain_best_epochs": recipe.retrain_best_epochs}
    if has_valid:
        if recipe.early_stopping is not None:
            cbs.append(EarlyStoppingCallback(monitor=monitor, patience=recipe.early_stopping))
        if recipe.keep_best:
            cbs.append(KeepBestCallback(monitor=monitor, fname="best"))
    else:
        for name, on in watchers.items():
            if on:
                notices.append(f"{name} ignored: the dataset has no labelled valid samples to monitor")
    best = BestEpochCallback(monitor=monitor) if has_valid and recipe.retrain_best_epochs else None
    if best is not None:
        cbs.append(best)
    snapshots = SnapshotCallback(recipe.snapshot_ensemble) if recipe.snapshot_ensemble else None
    if snapshots is not None:
        cbs.append(snapshots)
    if recipe.accumulate is not None:
        cbs.append(GradientAccumulation(n_acc=recipe.accumulate))
    fit_fn, _ = SCHEDULES[recipe.schedule]
    fit_fn(learn, recipe, lr, pretrained, cbs)
    if best is not None:
        learn.best_epoch = best.best_epoch
    if snapshots is not None:
        learn.snapshots = list(snapshots.snapshots)
    return notices


def lr_find_iterations(recipe: Recipe, n_train: int) -> int:
    """lr_find's usual 100 steps, but never more than the training itself takes (at least 20):
    on a small dataset 100 steps would be many epochs, and longer than the run."""
    batches = max(1, n_train // effective_batch_size(recipe.batch_size, n_train))
    return int(min(LR_FIND_ITERATIONS, max(LR_FIND_MIN_ITERATIONS, batches * recipe.epochs)))


def lr_suggestions(learn: Learner, num_it: int = LR_FIND_ITERATIONS) -> dict[str, float]:
    """fastai's lr_find, with every rule's suggestion: valley, steep and minimum (a tenth of
    the lr at the lowest loss)."""
    found = learn.lr_find(num_it=num_it, show_plot=False, suggest_funcs=tuple(LR_RULES.values()))
    return {name: float(getattr(found, fn.__name__)) for name, fn in LR_RULES.items()}


def find_lr(learn: Learner, num_it: int = LR_FIND_ITERATIONS, rule: str = "valley") -> float:
    """fastai's lr_find suggestion under `rule` (valley, steep or minimum)."""
    return lr_suggestions(learn, num_it)[rule]


def _get_probs(learn: Learner, dl, tta: bool) -> torch.Tensor:
    if tta:
        preds, _ = learn.tta(dl=dl)
    else:
        preds, _ = learn.get_preds(dl=dl)
    return preds.float().cpu()


def predict_probs(adapter: TaskAdapter, learn: Learner, items: pd.DataFrame, tta: bool = False) -> np.ndarray:
    """Class probabilities (rows in the order of `items`) from fastai's get_preds, or learn.tta
    with `tta`. A learner trained with a snapshot ensemble averages its snapshots' probabilities
    (and is left with its final weights)."""
    if len(items) == 0:
        return np.zeros((0, len(adapter.classes)))
    bs = max(adapter.recipe.batch_size * 2, 64)
    dl = adapter.test_dl(learn, items, bs)
    snapshots = getattr(learn, "snapshots", None)
    if not snapshots:
        return _get_probs(learn, dl, tta).numpy().astype(np.float64)
    final = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}
    try:
        total = None
        for state in snapshots:
            learn.model.load_state_dict(state)
            probs = _get_probs(learn, dl, tta).double()
            total = probs if total is None else total + probs
    finally:
        learn.model.load_state_dict(final)
    return (total / len(snapshots)).numpy()
