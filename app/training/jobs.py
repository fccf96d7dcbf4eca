"""The `train` job: train, evaluate and score a dataset, recorded as one Run.

The slow work (training, predicting) happens outside any transaction; the run row is
written in short transactions (app.training.records): created, its history after each
epoch, predictions in batches, and its final status.
"""

from __future__ import annotations

import gc
import logging
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from app.evaluation.metrics import classification_metrics, summary
from app.formatting import fmt
from app.jobs.context import JobCancelled, JobContext
from app.models import RunStatus
from app.runs import embeddings
from app.runs.data_issues import run_issues
from app.runs.retention import apply_retention
from app.scoring.oof import FoldPlan, out_of_fold_probs, plan_folds, plan_multilabel_folds
from app.scoring.scores import score
from app.training.data import TrainingData
from app.training import fold_parallel, multilabel_run
from app.training.label_errors import label_error_columns
from app.training.recipe import Recipe
from app.training.records import (create_run, fill_prediction_rows, finish_run, prediction_source, update_run,
                                  write_predictions)

if TYPE_CHECKING:
    from app.training.adapters import TaskAdapter
    from app.training.environment import Environment

log = logging.getLogger(__name__)

# A forward pass costs about a third of a training step; weights the scoring stage.
INFERENCE_COST = 1 / 3


def run_train_job(ctx: JobContext, recipe: Recipe, data: TrainingData) -> dict:
    """Train the dataset's model on its current labels, evaluate it, score every sample."""
    from app.training import ddp

    # How many processes train each model (app.training.ddp), as the run's resolved recipe records it.
    devices = ddp.resolve_devices(recipe.devices, ddp.advertised_devices(ctx.settings.worker_devices))
    recipe, why = fold_parallel.resolve(recipe.model_copy(update={"devices": devices}), ddp.group_device().type)
    run_id = create_run(ctx.engine, data, recipe, ctx.job_id)
    ctx.set_run(run_id)
    if why:
        ctx.log(f"fold models: {recipe.fold_parallelism} parallel ({why})")
    info: dict[str, Any] = {"notices": [], "timings": {}}
    try:
        with ddp.job_group(devices, data, ctx.settings) as group:
            return TrainRun(ctx, run_id, data, recipe, info, group).execute()
    except JobCancelled:
        _finish_quietly(ctx.engine, run_id, info, RunStatus.cancelled)
        ctx.log(f"run {run_id} cancelled", "warning")
        raise
    except BaseException as exc:
        _finish_quietly(ctx.engine, run_id, info, RunStatus.failed, error=f"{type(exc).__name__}: {exc}")
        raise


def _finish_quietly(engine, run_id: int, info: dict[str, Any], status: str, error: str | None = None) -> None:
    """Record how the run ended without hiding the exception that ended it."""
    try:
        finish_run(engine, run_id, info, status, error=error)
    except Exception:
        log.exception("could not mark run %s %s", run_id, status)


@dataclass
class TrainPlan:
    """What a run settles before its first model: where it trains, each task's loaders and
    learners, the batch size, its out-of-fold passes, lr_find's steps and the scratch folder."""

    env: Environment
    adapter: TaskAdapter
    batch_size: int
    fold_plans: list[FoldPlan]  # one per out-of-fold pass (recipe.oof_repeats); none when scoring in sample
    lr_iterations: int | None  # lr_find's steps; None with a fixed lr
    workdir: tempfile.TemporaryDirectory

    @property
    def fold_plan(self) -> FoldPlan | None:
        """The first out-of-fold pass's plan (its folds are the ones stored); None when scoring in sample."""
        return self.fold_plans[0] if self.fold_plans else None


class TrainRun:
    """One run: the learners of every fold and the final model, their scores and metrics.

    Constructing it plans the run (`_setup` returns the TrainPlan) and builds the final
    model's learner, which settles whether pretrained weights load and so how long each model
    trains; `execute` then finds the lr, trains, scores and stores.
    """

    def __init__(self, ctx: JobContext, run_id: int, data: TrainingData, recipe: Recipe, info: dict[str, Any],
                 group=None) -> None:
        from app.training.aum import AUMCallback
        from app.training.callbacks import CancelCallback

        self.started = time.monotonic()
        self.ctx, self.run_id, self.data, self.recipe, self.info = ctx, run_id, data, recipe, info
        self.group = group  # app.training.ddp.Group: fits run on every rank of it
        self.history: list[dict[str, Any]] = []
        self.cancel_cb = CancelCallback(ctx.is_cancelled)
        # Margins while the model that sees every train sample trains on it (a softmax's: not multi-label).
        self.aum_cb = None if data.multilabel else AUMCallback(targets=data.train["y"].to_numpy())
        self.plan = self._setup()
        self.pretrained: bool | None = None  # the first learner tries the weights
        try:
            self.final = self._learner(data.train, data.valid)
        except BaseException:
            self.plan.workdir.cleanup()
            raise
        self.info["pretrained"] = self.pretrained
        self.progress = self._progress()

    # --- bookkeeping ---

    def notice(self, message: str) -> None:
        self.info["notices"].append(message)
        self.ctx.log(message, "warning")

    def _on_epoch(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        update_run(self.ctx.engine, self.run_id, history=list(self.history))
        metrics = ", ".join(
            f"{k} {v:.4f}" for k, v in entry.items() if k not in ("model", "fold", "epoch", "frozen", "seconds") and v is not None
        )
        self.ctx.log(f"{entry['model']} epoch {entry['epoch']}: {metrics}")

    def check_cancelled(self) -> None:
        if self.cancel_cb.cancelled or self.ctx.is_cancelled():
            raise JobCancelled()

    # --- learners ---

    def _learner(self, train_df: pd.DataFrame, valid_df: pd.DataFrame, seed: int | None = None):
        """A learner seeded with `seed` (default: the recipe's) for its weights and batch order."""
        from fastai.torch_core import set_seed

        from app.training.learners import build_learner

        plan = self.plan
        seed = self.recipe.seed if seed is None else seed
        set_seed(seed, reproducible=plan.env.device.type == "cpu")
        dls = plan.adapter.dataloaders(train_df, valid_df)
        learn = None
        if self.pretrained is None and self.recipe.pretrained:
            try:
                learn = build_learner(plan.adapter, dls, True, [], plan.workdir.name)
                self.pretrained = True
            except Exception as exc:  # no network, no cached weights, ...
                self.notice(f"pretrained weights for {self.recipe.arch} unavailable ({type(exc).__name__}: {exc}); "
                            "training from scratch")
        self.pretrained = bool(self.pretrained)
        if learn is None:
            learn = build_learner(plan.adapter, dls, self.pretrained, [], plan.workdir.name)
        learn.ddp_rows, learn.ddp_seed = train_df.index.to_numpy(), seed  # what the other ranks rebuild
        return learn

    def _callbacks(self, stage: str, label: str, model: str, fold: int | None) -> list:
        from app.training.callbacks import HistoryCallback, JobProgressCallback
        from app.training.options import total_epochs

        epochs = total_epochs(self.recipe, bool(self.pretrained))
        cbs = [
            self.cancel_cb,
            JobProgressCallback(self.progress, stage, label, epochs),
            HistoryCallback(model, fold, self._on_epoch),
        ]
        if model == "final" and self.aum_cb is not None:
            cbs.append(self.aum_cb)
        return cbs

    def _train(self, learn, stage: str, label: str, model: str, fold: int | None, lr: float, solo: bool = False) -> float:
        """Fit `learn` (on every rank of the group unless `solo`); returns its seconds."""
        from app.training import ddp
        from app.training.learners import fit

        started = time.monotonic()
        group, has_valid, aum = None if solo else self.group, len(self.data.valid) > 0, model == "final" and self.aum_cb is not None
        if group is not None:
            ddp.announce_fit(group, learn, self.recipe, lr, bool(self.pretrained), has_valid, aum)
        try:
            with learn.added_cbs(self._callbacks(stage, label, model, fold)):
                for n in fit(learn, self.recipe, lr, bool(self.pretrained), has_valid=has_valid,
                             log=lambda message: self.ctx.log(f"{label}: {message}", "warning"),
                             wrap=None if group is None else lambda learn: ddp.data_parallel(learn, group)):
                    if n not in self.info["notices"]:
                        self.notice(n)
            if group is not None and aum:
                ddp.reduce_aum(self.aum_cb, group)  # each rank saw its shard of every epoch
        finally:
            if getattr(learn, "nan_recovery", None):  # the failed attempts and their settings
                self.info.setdefault("nan_recovery", []).append({"model": model, "attempts": learn.nan_recovery})
        self.check_cancelled()
        return round(time.monotonic() - started, 3)

    # --- the run ---

    def execute(self) -> dict:
        """Find the lr, train the fold models and the final model, evaluate, score, store."""
        try:
            metrics, path, P, fold_col = self._train_and_score()
        finally:
            self.plan.workdir.cleanup()
        n = self._write(P, fold_col)
        self.info["timings"]["total"] = round(time.monotonic() - self.started, 3)
        self.progress.report("scoring", 1.0, "done", force=True)
        finish_run(self.ctx.engine, self.run_id, self.info, RunStatus.succeeded, metrics=metrics, artifact=str(path))
        result = {"run_id": self.run_id, "predictions": n, "seconds": self.info["timings"]["total"], **summary(metrics)}
        keep = self.ctx.settings.keep_runs
        if dropped := apply_retention(self.ctx.engine, self.data.dataset_id, keep, self.ctx.settings.data_dir):
            self.ctx.log(f"dropped the per-sample predictions of runs {dropped} (kept: the latest {keep} and pinned runs)")
        self.ctx.log(
            f"run {self.run_id} finished in {result['seconds']:.0f}s: valid accuracy {fmt(result['valid_accuracy'])}, "
            f"test accuracy {fmt(result['test_accuracy'])}"
        )
        return result

    def _train_and_score(self) -> tuple[dict[str, Any], Any, np.ndarray, np.ndarray]:
        """(metrics, the artifact's path, probabilities per item, each item's fold or -1)."""
        from app.training.artifacts import artifact_dir, save_artifact
        from app.training.embedding import predict_embeddings
        from app.training.learners import predict_probs

        ctx, data, plan, final = self.ctx, self.data, self.plan, self.final
        items = data.items
        lr = self._find_lr()
        update_run(ctx.engine, self.run_id, info=self.info)

        P = np.full((len(items), len(data.classes)), np.nan)
        fold_col = np.full(len(items), -1, dtype=np.int64)
        t = time.monotonic()
        ensemble_probs = self._score_out_of_fold(P, fold_col, lr) if plan.fold_plan is not None else None
        self.info["timings"]["fold_models"] = round(time.monotonic() - t, 3)  # their wall time, in parallel or not
        self.info["timings"]["final"] = self._train(final, "final", "final model", "final", None, lr)

        t = time.monotonic()
        self.progress.report("scoring", 0.0, "scoring", force=True)
        # Every sample that no fold model scored out of fold (valid, test, unlabelled): the
        # fold models' average with `ensemble`, else the final model.
        rest = np.flatnonzero(fold_col < 0)
        if ensemble_probs is not None:
            P[rest] = ensemble_probs
        else:
            with final.added_cbs([self.cancel_cb]):
                P[rest] = predict_probs(plan.adapter, final, items.iloc[rest], tta=bool(self.recipe.tta))
        self.info["predictions"] = prediction_source(self.recipe, ensemble_probs is not None)
        self.check_cancelled()
        metrics = self._evaluate(P)
        self.info["timings"]["scoring"] = round(time.monotonic() - t, 3)
        t = time.monotonic()
        with final.added_cbs([self.cancel_cb]):
            X = predict_embeddings(plan.adapter, final, items)
        self.info["embedding"] = embeddings.save(ctx.settings.data_dir, self.run_id, items["sample_id"].to_numpy(), X,
                                                 "final_model")
        self.info["timings"]["embedding"] = round(time.monotonic() - t, 3)
        extra = {"run_id": self.run_id, "dataset_id": data.dataset_id, "label_version": data.label_version, "lr": lr}
        path = save_artifact(artifact_dir(ctx.settings, self.run_id), final, plan.adapter, data.task, extra)
        return metrics, path, P, fold_col

    def _setup(self) -> TrainPlan:
        """The run's plan; logs what it trains on and records it in info."""
        import torch

        from app.training.adapters import adapter_for
        from app.training.batch_size import auto_batch_size
        from app.training.environment import effective_batch_size, resolve_environment
        from app.training.learners import lr_find_iterations

        ctx, data, recipe = self.ctx, self.data, self.recipe
        env = resolve_environment(recipe)
        for n in env.notices:
            self.notice(n)
        self.info["environment"] = env.describe()
        if recipe.batch_size == "auto":  # the chosen size goes into the run's resolved recipe
            t = time.monotonic()
            self.recipe = recipe = auto_batch_size(recipe, data.task, data.classes, data.cat_names, data.cont_names,
                                                   data.train, data.valid, env, ctx.log, self.info,
                                                   multilabel=data.multilabel)
            self.info["timings"]["batch_size_finder"] = round(time.monotonic() - t, 3)
            update_run(ctx.engine, self.run_id, params=recipe.model_dump())
        adapter = adapter_for(data.task, recipe, env, data.classes, data.cat_names, data.cont_names, data.multilabel)
        items, n_train = data.items, len(data.train)
        self.info["sizes"] = {
            "train": n_train,
            "valid": len(data.valid),
            "test": int(((items["split"] == "test") & (items["y"] >= 0)).sum()),
            "scored": len(items),
        }
        if data.task == "tabular":
            self.info["features"] = {"categorical": data.cat_names, "continuous": data.cont_names}
        batch_size = effective_batch_size(recipe.batch_size, n_train)
        if batch_size != recipe.batch_size:
            self.notice(f"batch size {recipe.batch_size} lowered to {batch_size} for {n_train} train samples")
        ctx.log(
            f"run {self.run_id}: {data.task} dataset {data.name!r} at label version {data.label_version}, "
            f"{n_train} train / {len(data.valid)} valid samples, {recipe.arch}, {recipe.epochs} epochs, "
            f"{recipe.scoring} scoring, on {env.device} ({env.precision}"
            + (f", {torch.get_num_threads()} CPU threads)" if env.device.type == "cpu" else ")")
        )
        fold_plans: list[FoldPlan] = []
        if recipe.scoring == "out_of_fold":
            # Each pass splits train (and seeds its models) its own way: seed, seed + 1, ...; the first
            # pass is a one-pass run's.
            y, plan = (data.targets(data.train), plan_multilabel_folds) if data.multilabel else (data.train["y"].to_numpy(), plan_folds)
            fold_plans = [plan(y, recipe.folds, recipe.seed + r) for r in range(recipe.oof_repeats)]
            first = fold_plans[0]
            for n in first.notices:
                self.notice(n)
            self.info["folds"] = {"count": first.folds, "stratified": first.stratified, "sizes": first.sizes(),
                                  "repeats": recipe.oof_repeats}
        lr_iterations = lr_find_iterations(recipe, n_train) if recipe.lr is None else None
        workdir = tempfile.TemporaryDirectory(prefix="curate-train-")
        return TrainPlan(env, adapter, batch_size, fold_plans, lr_iterations, workdir)

    def _progress(self):
        """The run's progress over its stages, weighted in sample-epochs: lr_find, every model's
        train and valid passes, scoring."""
        from app.training.callbacks import RunProgress
        from app.training.options import total_epochs

        plan, n_train, n_valid = self.plan, len(self.data.train), len(self.data.valid)
        epochs = total_epochs(self.recipe, bool(self.pretrained))

        def per_model(n: int) -> float:
            return (n + n_valid * INFERENCE_COST) * epochs

        weights: dict[str, float] = {}
        if plan.lr_iterations is not None:
            weights["lr_find"] = plan.lr_iterations * plan.batch_size
        for r, fold_plan in enumerate(plan.fold_plans):
            for f in range(fold_plan.folds):
                weights[_fold_stage(r, f)] = per_model(len(fold_plan.train_indices(f)))
        weights["final"] = per_model(n_train)
        weights["scoring"] = len(self.data.items) * INFERENCE_COST
        return RunProgress(self.ctx, weights)

    def _find_lr(self) -> float:
        """The recipe's lr, or lr_find's suggestion under its lr_rule (with every rule's in info)."""
        from app.training.callbacks import LRFindProgressCallback
        from app.training.learners import lr_suggestions

        if self.recipe.lr is not None:
            lr = self.recipe.lr
        else:
            t = time.monotonic()
            rule, iterations = self.recipe.lr_rule, self.plan.lr_iterations
            with self.final.added_cbs([self.cancel_cb, LRFindProgressCallback(self.progress, "lr_find", "learning rate")]):
                suggestions = lr_suggestions(self.final, iterations)
            self.check_cancelled()
            lr = suggestions[rule]
            self.info["lr_find"] = {"suggestion": lr, "method": rule, "suggestions": suggestions, "iterations": iterations}
            self.info["timings"]["lr_find"] = round(time.monotonic() - t, 3)
            self.ctx.log(f"lr_find suggests {lr:.2e} ({rule})")
        self.info["lr"] = lr
        return lr

    def _score_out_of_fold(self, P: np.ndarray, fold_col: np.ndarray, lr: float) -> np.ndarray | None:
        """Fill P for the labelled train samples from the fold models that never saw them (the mean
        over passes); fold_col gets the first pass's folds. Returns the fold models' mean
        probabilities of the other items with `ensemble`, else None."""
        from app.training.environment import empty_cuda_cache
        from app.training.learners import predict_probs

        train, valid, items = self.data.train, self.data.valid, self.data.items
        adapter, fold_plans = self.plan.adapter, self.plan.fold_plans
        passes = len(fold_plans)
        positions = pd.Series(np.arange(len(items)), index=items.index)[train.index].to_numpy()
        # The samples the fold models do not score out of fold; with `ensemble` every fold model
        # predicts them too, and their average replaces the final model's predictions.
        rest = np.setdiff1d(np.arange(len(items)), positions)
        ensemble_sum = np.zeros((len(rest), len(self.data.classes))) if self.recipe.ensemble else None
        parallel = self.group is not None and self.recipe.fold_parallelism == "folds"
        fold_times: list[float] = []
        best_epochs: list[int] = []

        def fit_fold(r: int, f: int) -> fold_parallel.FoldResult:
            # A later pass also starts its models from other weights: averaging models that differ
            # only in their folds would average away less of each one's noise.
            plan = fold_plans[r]
            learn = self._learner(train.iloc[plan.train_indices(f)], valid, seed=self.recipe.seed + r)
            label, model = fold_parallel.fold_names(r, f, plan.folds, passes)
            seconds = self._train(learn, _fold_stage(r, f), label, model, f, lr, solo=parallel)
            result = fold_parallel.FoldResult(predict_probs(adapter, learn, train.iloc[plan.held_out(f)]),
                                              best_epoch=getattr(learn, "best_epoch", None), seconds=seconds)
            if ensemble_sum is not None:
                with learn.added_cbs([self.cancel_cb]):
                    result.ensemble = predict_probs(adapter, learn, items.iloc[rest], tta=bool(self.recipe.tta))
                self.check_cancelled()
            del learn
            gc.collect()
            empty_cuda_cache()
            return result

        # Folds in parallel: every fold model trained at once, one per rank (app.training.fold_parallel).
        done = fold_parallel.fit_folds(self, lr, rest if ensemble_sum is not None else None, fit_fold) if parallel else {}

        def use(r: int, f: int) -> fold_parallel.FoldResult:
            result = done[(r, f)] if parallel else fit_fold(r, f)
            fold_times.append(result.seconds)
            if result.best_epoch:
                best_epochs.append(int(result.best_epoch))
            if result.ensemble is not None:
                ensemble_sum[:] += result.ensemble
            if parallel and result.nan_recovery:  # rank 0's own fits record theirs in _train
                self.info.setdefault("nan_recovery", []).append({"model": f"fold {f + 1}", "attempts": result.nan_recovery})
            return result

        total = np.zeros((len(positions), len(self.data.classes)))
        for r, plan in enumerate(fold_plans):
            total += out_of_fold_probs(plan, lambda f, _idx, r=r: use(r, f), lambda result, _idx: result.probs,
                                       len(self.data.classes))
        P[positions] = total / passes
        fold_col[positions] = self.plan.fold_plan.fold_of
        self.info["timings"]["folds"] = fold_times
        if self.recipe.retrain_best_epochs and best_epochs:
            self._retrain_for(best_epochs)
        if ensemble_sum is None:
            return None
        return ensemble_sum / sum(plan.folds for plan in fold_plans)

    def _retrain_for(self, best_epochs: list[int]) -> None:
        """The final model trains for the fold models' median best epoch count, without early
        stopping (the folds already chose when to stop)."""
        from app.training.options import total_epochs

        frozen = total_epochs(self.recipe, bool(self.pretrained)) - self.recipe.epochs
        epochs = max(1, int(round(float(np.median(best_epochs)))) - frozen)
        self.info["retrain_best_epochs"] = {"fold_best_epochs": best_epochs, "epochs": epochs}
        self.ctx.log(f"the fold models were best after {best_epochs} epochs: the final model trains for {epochs}")
        self.recipe = self.recipe.model_copy(update={"epochs": epochs, "early_stopping": None})

    def _evaluate(self, P: np.ndarray) -> dict[str, Any]:
        """Metrics M of the final model on the labelled valid and test samples (null when none)."""
        if self.data.multilabel:
            metrics, self.thresholds = multilabel_run.evaluate(self.data, P)
            self.info["thresholds"] = dict(zip(self.data.classes, self.thresholds.tolist()))
            return metrics
        items = self.data.items
        y, split = items["y"].to_numpy(), items["split"].to_numpy()
        metrics = {}
        for name in ("valid", "test"):
            pos = np.flatnonzero((split == name) & (y >= 0))
            metrics[name] = classification_metrics(y[pos], P[pos].argmax(axis=1), self.data.classes)
        return metrics

    def _write(self, P: np.ndarray, fold_col: np.ndarray) -> int:
        """One Prediction per sample, scored against the label it had when the run read it."""
        if self.data.multilabel:
            return multilabel_run.write(self, P, fold_col, self.thresholds)
        t = time.monotonic()
        items = self.data.items
        # The data issues first: their neighbour search (the embeddings, an index, the
        # neighbour lists) is freed before the row dicts below exist, so the peaks do not add.
        issues = run_issues(self.ctx.engine, self.ctx.settings.data_dir, self.run_id, self.data.dataset_id,
                            items["sample_id"].to_numpy(), items["split"].to_numpy(), items["y"].to_numpy())
        self.info["data_issues"] = issues.info
        gc.collect()
        rows = score(P, items["y"].to_numpy(), self.data.classes).rows()
        sample_ids = items["sample_id"].tolist()
        Z = embeddings.aligned(self.ctx.settings.data_dir, self.run_id, items["sample_id"].to_numpy())
        columns = label_error_columns(P, self.data, self.aum_cb, self.plan.fold_plan is not None, self.notice,
                                      group=issues.group, Z=Z)
        del Z
        self.info.update(columns.info)
        classes = self.data.classes
        fill_prediction_rows(rows, self.run_id, items, fold_col, columns, issues, classes)
        # The scores, the flagged set and the priority, then their write, timed apart.
        self.info["timings"]["label_errors"] = round(time.monotonic() - t, 3)
        t = time.monotonic()
        write_predictions(self.ctx.engine, rows, self.ctx)
        self.info["timings"]["writing"] = round(time.monotonic() - t, 3)
        # Every sample of the dataset up to this id has a prediction under the run, and the
        # listings rely on it: the run read all the samples its snapshot held, and a sample
        # of an import still under way then has a higher id than every sample that had
        # committed (imports into a dataset take turns, and ids are handed out in order).
        self.info["covers_through"] = max(sample_ids, default=0)
        # The advisor's train suspect counts, kept with the run so that no page view counts
        # them over a million predictions (app.advisor.advice.train_confusion).
        from app.advisor.advice import train_confusion

        on_train = items["split"].to_numpy() == "train"
        self.info["train_confusion"] = train_confusion(items["y"].to_numpy()[on_train], P[on_train].argmax(axis=1), classes)
        return len(rows)


def _fold_stage(r: int, f: int) -> str:
    """The progress stage of fold f in out-of-fold pass r."""
    return f"fold{f}" if r == 0 else f"pass{r}fold{f}"
