"""Each task's way from sample rows to fastai DataLoaders and a Learner: its data block, its
architectures (IMAGE_ARCHS, TEXT_ARCHS) and the recipe's sampling of the rarer classes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from fastai.callback.data import weighted_dataloaders  # noqa: F401  (patches DataBlock.weighted_dataloaders)
from fastai.data.block import CategoryBlock, ColReader, ColSplitter, DataBlock, MultiCategoryBlock, TransformBlock
from fastai.data.core import DataLoaders
from fastai.data.transforms import Normalize
from fastai.learner import Learner
from fastai.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat
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

from app.training.environment import Environment, effective_batch_size
from app.training.multilabel import indicator, rarest_tag, target_names, with_targets
from app.training.recipe import Recipe

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


# --- class imbalance -------------------------------------------------------------------


def class_counts(labels: pd.Series, classes: list[str]) -> np.ndarray:
    """How many of `labels` fall in each class, in the order of `classes`."""
    counts = labels.value_counts()
    return np.array([int(counts.get(c, 0)) for c in classes], dtype=np.int64)


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


# --- tasks ------------------------------------------------------------------------------


def _frame(train_df: pd.DataFrame, valid_df: pd.DataFrame) -> pd.DataFrame:
    df = pd.concat([train_df.assign(is_valid=False), valid_df.assign(is_valid=True)], ignore_index=True)
    return df


class TaskAdapter(ABC):
    """How one task turns sample rows into fastai DataLoaders and a Learner."""

    task: str

    def __init__(self, recipe: Recipe, env: Environment, classes: list[str], multilabel: bool = False) -> None:
        self.recipe, self.env, self.classes, self.multilabel = recipe, env, list(classes), multilabel

    def y_block(self) -> CategoryBlock | MultiCategoryBlock:
        # A fixed vocabulary in the dataset's order: every model's outputs line up with
        # `classes`, even when a fold's train set lacks a class. A multi-label target is one
        # 0/1 column per class (app.training.multilabel.target_names).
        if self.multilabel:
            return MultiCategoryBlock(encoded=True, vocab=self.classes)
        return CategoryBlock(vocab=self.classes, sort=False)

    def get_y(self) -> ColReader:
        return ColReader(target_names(self.classes)) if self.multilabel else ColReader("label")

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
        `dls.train_rows` maps each train dataset row to its row of train_df. A multi-label
        dataset's counts are each class's positives (`dls.n_train` rows), and its sampling
        draws by each row's rarest tag."""
        if self.multilabel:
            counts = indicator(train_df["label"], self.classes).sum(axis=0)
            train_df, valid_df = with_targets(train_df, self.classes), with_targets(valid_df, self.classes)
            groups = rarest_tag(train_df, self.classes, counts)
            group_names = sorted(set(groups))
            by = train_df.assign(label=groups)
        else:
            counts = class_counts(train_df["label"], self.classes)
            group_names, by = self.classes, train_df
        wgts = None
        # Which row of train_df each row of the train dataset is (repeated when oversampled).
        rows = np.arange(len(train_df))
        if self.recipe.sampling == "oversample":
            marked = oversample(by.assign(_curate_row=rows), group_names, self.recipe.seed)
            rows = marked["_curate_row"].to_numpy()
            train_df = train_df.iloc[rows]
        elif self.recipe.sampling == "weighted":
            wgts = sample_weights(by, class_counts(by["label"], group_names), group_names)
        dls = self.make_dataloaders(train_df, valid_df, wgts)
        dls.class_counts = counts
        dls.n_train = int(len(np.unique(rows)))  # the rows the counts count, before any oversampling
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

    def _stand_in(self, items: pd.DataFrame) -> pd.DataFrame:
        """items with a stand-in target (the first class), to build loaders that only predict."""
        df = items.assign(label=self.classes[0])
        return with_targets(df, self.classes) if self.multilabel else df


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
            get_y=self.get_y(),
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
        df = self._stand_in(items)
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
            get_y=self.get_y(),
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
        df = self._stand_in(items)
        dls = self.make_dataloaders(df.iloc[:2], df.iloc[:0], vocab=state["vocab"])
        return self.learner(dls, pretrained=False)


class TabularAdapter(TaskAdapter):
    task = "tabular"

    def __init__(self, recipe, env, classes, cat_names: list[str], cont_names: list[str], multilabel: bool = False) -> None:
        super().__init__(recipe, env, classes, multilabel)
        self.cat_names, self.cont_names = list(cat_names), list(cont_names)

    def _prepare(self, df: pd.DataFrame) -> pd.DataFrame:
        ys = target_names(self.classes) if self.multilabel else ["label"]
        cols = [*ys, *self.cat_names, *self.cont_names]
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
            y_names=target_names(self.classes) if self.multilabel else "label",
            y_block=self.y_block(),
            splits=(list(range(n_train)), list(range(n_train, len(df)))),
        )
        kwargs = self.loader_kwargs(n_train)
        if wgts is not None:
            # TabularPandas loads with fastai's TabWeightedDL, which takes the train rows' weights.
            kwargs["dl_kwargs"] = [{"wgts": wgts}, {}]
        return to.dataloaders(**kwargs)

    def test_dl(self, learn, items, bs):
        ys = target_names(self.classes) if self.multilabel else ["label"]
        return learn.dls.test_dl(self._prepare(items).drop(columns=ys, errors="ignore"), bs=bs)

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
        target = [] if self.multilabel else [Categorize(vocab=self.classes, sort=False)]
        to = TabularPandas(
            self._prepare(self._stand_in(items.iloc[:2])),
            procs=[fill, cat, norm, *target],
            cat_names=list(self.cat_names),
            cont_names=list(self.cont_names),
            y_names=target_names(self.classes) if self.multilabel else "label",
            y_block=TransformBlock(),
            do_setup=False,
        )
        to.process()
        dls = to.dataloaders(bs=2, shuffle=False, drop_last=False, device=self.env.device)
        model = TabularModel(get_emb_sz(to), len(to.cont_names), len(self.classes), layers=list(self.recipe.layers))
        # The loss gives get_preds its activation: a softmax over classes, or a sigmoid per class.
        return _Learner(dls, model, loss_func=BCEWithLogitsLossFlat() if self.multilabel else CrossEntropyLossFlat())


def adapter_for(task: str, recipe: Recipe, env: Environment, classes: list[str], cat_names=(), cont_names=(),
                multilabel: bool = False) -> TaskAdapter:
    if task == "image":
        return ImageAdapter(recipe, env, classes, multilabel)
    if task == "text":
        return TextAdapter(recipe, env, classes, multilabel)
    if task == "tabular":
        return TabularAdapter(recipe, env, classes, list(cat_names), list(cont_names), multilabel)
    raise ValueError(f"unknown task {task!r}")
