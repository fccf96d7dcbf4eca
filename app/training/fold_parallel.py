"""Out-of-fold models one per device at once (`fold_parallelism: folds`), instead of each on
every device in turn (`data`: app.training.ddp).

With N devices and M fold models (folds x oof_repeats), model j trains on rank j mod N, alone
(no DistributedDataParallel, no gradient exchange), on the same rows, seed and recipe as in a
one-process run, so each fold model is the one-process run's model. Rank 0 sends the
assignment once, trains its own share through the job's usual path (progress, history,
cancellation), and meanwhile collects what the followers post in the group's store: each
epoch's history entry as it ends, then every fold's held-out probabilities (and, with
`ensemble`, its probabilities of the other items), best epoch, seconds and NaN recoveries.
The final model then trains data-parallel on every rank as before.

Which is faster depends on M and N (`choose`): folds in parallel take ceil(M / N) rounds of
one-device fits and exchange nothing; data-parallel fits take M rounds of fits that each run
at N x `DATA_PARALLEL_EFFICIENCY` the speed of one device. The efficiency is the speed-up a
data-parallel fit gets per device: on the CPU it is from bench/training.py's section (e) (two
gloo processes against one on the image demo: 0.56 for its fold models, 0.61 for its final fit
in an earlier run); on
CUDA it is the usual all-reduce overhead of NCCL within one machine (about 10%), not yet
measured here (bench/gpu.py).
"""

from __future__ import annotations

import json
import math
import pickle
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from app.training.ddp import Group

TrainRun = Any  # app.training.jobs.TrainRun, which imports this module

DATA_PARALLEL_EFFICIENCY = {"cuda": 0.9, "cpu": 0.6}
POLL_SECONDS = 0.2


def choose(mode: str, devices: int, models: int, device_type: str) -> tuple[str, str]:
    """('folds' or 'data', why) for a job's out-of-fold models; `mode` is the recipe's."""
    if mode != "auto":
        return mode, "the recipe's choice"
    efficiency = DATA_PARALLEL_EFFICIENCY.get(device_type, DATA_PARALLEL_EFFICIENCY["cuda"])
    rounds = math.ceil(models / devices)
    data_rounds = models / (devices * efficiency)
    why = (f"{models} fold models on {devices} devices: {rounds} rounds of one-device fits against "
           f"{data_rounds:.2f} fit-times data-parallel at {efficiency:.0%} efficiency per device")
    return ("folds" if rounds <= data_rounds else "data"), why


def resolve(recipe, device_type: str):
    """(the recipe with fold_parallelism settled, why) for a run on recipe.devices devices; why is
    None when there is nothing to settle (one device, or no fold models)."""
    if recipe.devices <= 1 or recipe.scoring != "out_of_fold":
        return recipe, None
    mode, why = choose(recipe.fold_parallelism, recipe.devices, recipe.folds * recipe.oof_repeats, device_type)
    return recipe.model_copy(update={"fold_parallelism": mode}), why


@dataclass
class FoldResult:
    """What one fold model yields: its held-out probabilities and what the run records of it."""

    probs: np.ndarray
    ensemble: np.ndarray | None = None
    best_epoch: int | None = None
    seconds: float = 0.0
    nan_recovery: list | None = None
    notices: list[str] = field(default_factory=list)


def _key(rank: int, what: str) -> str:
    return f"curate_folds/{rank}/{what}"


def assign(jobs: list[tuple[int, int]], world: int) -> dict[tuple[int, int], int]:
    """The rank of each (pass, fold): round robin, rank 0 first."""
    return {job: i % world for i, job in enumerate(jobs)}


def fit_folds(run: TrainRun, lr: float, rest: np.ndarray | None, fit_here) -> dict[tuple[int, int], FoldResult]:
    """Rank 0: every fold model of the run, trained one per rank at once. `fit_here(r, f)` trains
    and predicts rank 0's own share (a FoldResult); `rest` is the positions of the items the
    fold models also predict (`ensemble`), or None."""
    group: Group = run.group
    data, plans, recipe = run.data, run.plan.fold_plans, run.recipe
    train_index = data.train.index.to_numpy()
    jobs = [(r, f) for r, plan in enumerate(plans) for f in range(plan.folds)]
    ranks = assign(jobs, group.world)
    commands = []
    for (r, f), rank in ranks.items():
        if rank == 0:
            continue
        label, model = fold_names(r, f, plans[r].folds, len(plans))
        commands.append({"rank": rank, "pass": r, "fold": f, "seed": recipe.seed + r, "label": label, "model": model,
                         "rows": train_index[plans[r].train_indices(f)], "held": train_index[plans[r].held_out(f)]})
    group.send({"op": "folds", "jobs": commands, "recipe": recipe.model_dump(), "lr": float(lr),
                "pretrained": bool(run.pretrained), "has_valid": len(data.valid) > 0,
                "rest": None if rest is None else data.items.index.to_numpy()[rest], "tta": bool(recipe.tta)})
    watcher = _Watcher(run, group, sorted({c["rank"] for c in commands}))
    results: dict[tuple[int, int], FoldResult] = {}
    for job, rank in ranks.items():
        if rank == 0:
            results[job] = fit_here(*job)
            results.update(watcher.poll())
    results.update(watcher.wait())
    return results


def fold_names(r: int, f: int, folds: int, passes: int) -> tuple[str, str]:
    label, model = f"fold {f + 1}/{folds}", f"fold {f + 1}"
    if passes > 1:
        label, model = f"{label}, pass {r + 1}/{passes}", f"{model} pass {r + 1}"
    return label, model


class _Watcher:
    """Rank 0's view of the followers' fold fits: their epochs go into the run's history and
    progress as they end, their results are collected, and a follower's error or exit fails the
    job with what it said."""

    def __init__(self, run: TrainRun, group: Group, ranks: list[int]) -> None:
        self.run, self.store, self.procs, self.ranks = run, group.store, group.procs, ranks
        self.seen = dict.fromkeys(ranks, 0)

    def poll(self) -> dict[tuple[int, int], FoldResult]:
        """Relay new epochs; return the results of the ranks that finished (once each)."""
        from app.training.options import total_epochs

        results: dict[tuple[int, int], FoldResult] = {}
        epochs = total_epochs(self.run.recipe, bool(self.run.pretrained))
        for rank in list(self.ranks):
            count = self.store.add(_key(rank, "epochs"), 0)
            for k in range(self.seen[rank], count):
                entry = json.loads(self.store.get(_key(rank, f"epoch/{k}")).decode())
                stage = entry.pop("stage")
                self.run._on_epoch(entry)
                self.run.progress.report(stage, entry["epoch"] / max(epochs, 1), f"{entry['model']} (rank {rank})")
            self.seen[rank] = count
            if self.store.check([_key(rank, "result")]):
                done = pickle.loads(self.store.get(_key(rank, "result")))
                if "error" in done:
                    raise RuntimeError(f"the fold models on rank {rank} failed: {done['error']}")
                for n in done.get("notices", []):
                    if n not in self.run.info["notices"]:
                        self.run.notice(n)
                results.update(done["results"])
                self.ranks.remove(rank)
        for proc, err in self.procs:
            if proc.poll() is not None and self.ranks:
                err.seek(0)
                raise RuntimeError(f"a training process exited with status {proc.returncode} while training fold "
                                   f"models: {err.read().decode(errors='replace')[-2000:]}")
        return results

    def wait(self) -> dict[tuple[int, int], FoldResult]:
        results: dict[tuple[int, int], FoldResult] = {}
        while True:
            results.update(self.poll())
            if not self.ranks:
                return results
            self.run.check_cancelled()
            time.sleep(POLL_SECONDS)


def follow_folds(group: Group, data, cmd: dict[str, Any], workdir: str) -> int:
    """A follower: train and predict its share of the fold models, posting each epoch and then
    the results (or the error) in the group's store; returns how many models it trained."""
    mine = [job for job in cmd["jobs"] if job["rank"] == group.rank]
    if not mine:
        return 0
    store, posted = group.store, [0]

    def post_epoch(entry: dict[str, Any], stage: str) -> None:
        store.set(_key(group.rank, f"epoch/{posted[0]}"), json.dumps({**entry, "stage": stage}))
        posted[0] += 1
        store.add(_key(group.rank, "epochs"), 1)

    try:
        results, notices = {}, []
        for job in mine:
            results[(job["pass"], job["fold"])] = _fit_one(data, cmd, job, workdir, post_epoch, notices)
        store.set(_key(group.rank, "result"), pickle.dumps({"results": results, "notices": notices}))
    except BaseException as exc:
        store.set(_key(group.rank, "result"), pickle.dumps(
            {"error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-1500:]}"}))
        raise
    return len(mine)


def _fit_one(data, cmd: dict[str, Any], job: dict[str, Any], workdir: str, post_epoch, notices: list[str]) -> FoldResult:
    """One fold model as a one-process run trains it: same seed, rows, recipe and lr."""
    from fastai.torch_core import set_seed

    from app.training.adapters import adapter_for
    from app.training.callbacks import HistoryCallback
    from app.training.environment import resolve_environment
    from app.training.learners import build_learner, fit, predict_probs
    from app.training.recipe import Recipe

    started = time.monotonic()
    recipe = Recipe.model_validate(cmd["recipe"])
    env = resolve_environment(recipe)
    adapter = adapter_for(data.task, recipe, env, data.classes, data.cat_names, data.cont_names, data.multilabel)
    set_seed(job["seed"], reproducible=env.device.type == "cpu")
    dls = adapter.dataloaders(data.train.loc[job["rows"]], data.valid)
    learn = build_learner(adapter, dls, cmd["pretrained"], [], workdir)
    stage = f"fold{job['fold']}" if job["pass"] == 0 else f"pass{job['pass']}fold{job['fold']}"
    history = HistoryCallback(job["model"], job["fold"], lambda entry: post_epoch(entry, stage))
    with learn.added_cbs([history]):
        for n in fit(learn, recipe, cmd["lr"], cmd["pretrained"], has_valid=cmd["has_valid"]):
            if n not in notices:
                notices.append(n)
    seconds = round(time.monotonic() - started, 3)
    probs = predict_probs(adapter, learn, data.train.loc[job["held"]])
    ensemble = None
    if cmd["rest"] is not None:
        ensemble = predict_probs(adapter, learn, data.items.loc[cmd["rest"]], tta=cmd["tta"])
    best = getattr(learn, "best_epoch", None)
    return FoldResult(probs, ensemble, int(best) if best else None, seconds, getattr(learn, "nan_recovery", None) or None)
