"""The `search` job: trials of one Optuna study, taken by one or more jobs in parallel.

The first job of a search creates the study `curate-search-<job id>` with its `n_trials`
trials waiting in Optuna's queue (WAITING trials), and queues `workers - 1` more `search`
jobs with `parent_job` set. Every job then takes waiting trials one at a time (Optuna's
claim of a waiting trial is atomic), so the study finishes exactly `n_trials` trials however
many workers share it. A job whose trials are all taken waits for the running ones, so
every job ends with the whole study's result.

A trial trains one model with fit_and_evaluate (no scoring, nothing stored in Curate's
tables) and keeps Optuna's heartbeat while it runs. A trial whose worker died (no heartbeat
for GRACE_SECONDS, or left RUNNING by an earlier attempt of the same job) is marked failed
and queued again with its params; a trial stopped by a shutdown or a cancel likewise.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState
from sqlalchemy import select

from app.db import session_scope
from app.jobs.context import JobCancelled, JobContext
from app.models import Job
from app.search import storage as st
from app.search.params import KIND, SearchJobParams, SearchParams, smooths

if TYPE_CHECKING:
    from app.training.data import TrainingData

log = logging.getLogger(__name__)

# How often a job with nothing to take looks again (and how often an extra job reads the first job's cancel flag).
POLL_SECONDS = 1.0
optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_pruner(p: SearchParams, max_epochs: int) -> optuna.pruners.BasePruner:
    if p.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs)
    if p.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if p.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, max_epochs))
    return optuna.pruners.NopPruner()


def make_sampler(p: SearchParams, offset: int) -> optuna.samplers.BaseSampler:
    """TPE seeded by the params; each job of a search draws its own stream (seed + offset)."""
    return optuna.samplers.TPESampler(
        seed=p.seed + offset,
        n_startup_trials=min(10, max(1, p.n_trials // 3)),
        constant_liar=p.workers > 1,
    )


def max_epochs(p: SearchParams, space: dict[str, dict[str, Any]], task: str) -> int:
    from app.training.recipe import TASK_DEFAULTS

    spec = space.get("epochs")
    if spec is not None:
        return int(max(spec["choices"]) if "choices" in spec else spec["high"])
    return int(p.base.get("epochs") or TASK_DEFAULTS[task]["epochs"])


def suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]], base: dict[str, Any]) -> dict[str, Any]:
    """Draw a trial's params from the space (label_smoothing only when the loss smooths)."""
    values: dict[str, Any] = {}
    for name, spec in space.items():
        if name == "label_smoothing" and not smooths(values.get("loss", base.get("loss"))):
            continue
        if "choices" in spec:
            values[name] = trial.suggest_categorical(name, spec["choices"])
        elif isinstance(spec["low"], int) and isinstance(spec["high"], int):
            values[name] = trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step", 1), log=spec["log"])
        else:
            values[name] = trial.suggest_float(name, spec["low"], spec["high"], step=spec.get("step"), log=spec["log"])
    return values


class _Heartbeat:
    """Records Optuna's heartbeat of one trial until stopped."""

    def __init__(self, storage, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self._stop = threading.Event()
        self.storage.record_heartbeat(trial_id)
        self._thread = threading.Thread(target=self._run, name=f"trial-heartbeat-{trial_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(st.HEARTBEAT_SECONDS):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:
                log.warning("trial %s: heartbeat failed; retrying", self.trial_id, exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def counts(trials: list[optuna.trial.FrozenTrial]) -> dict[str, int]:
    """Trials by state; `finished` leaves out failed trials that were queued again."""
    by = {s: 0 for s in ("complete", "pruned", "failed", "running", "waiting")}
    names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
             TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}
    retried = 0
    for t in trials:
        by[names[t.state]] += 1
        if "failed_trial" in t.system_attrs:
            retried += 1
    by["finished"] = by["complete"] + by["pruned"] + by["failed"] - retried
    return by


def best_of(trials: list[optuna.trial.FrozenTrial], direction: str) -> optuna.trial.FrozenTrial | None:
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]
    if not done:
        return None
    sign = -1.0 if direction == "maximize" else 1.0
    # The best value; the earliest trial among equals.
    return min(done, key=lambda t: (sign * t.value, t.number))


def summary(study_id: int, storage, p: SearchParams) -> dict[str, Any]:
    """The study as a job result: counts, the best trial and the train params it implies."""
    trials = storage.get_all_trials(study_id, deepcopy=False)
    best = best_of(trials, p.direction)
    return {
        "study": storage.get_study_name_from_id(study_id),
        "metric": p.metric,
        "direction": p.direction,
        "n_trials": p.n_trials,
        "counts": counts(trials),
        "best": None if best is None else {
            "number": best.number,
            "value": best.value,
            "params": dict(best.params),
            "train_params": {**p.base, **best.params},
        },
    }


class SearchRun:
    """One job's share of a search."""

    def __init__(self, ctx: JobContext, params: SearchJobParams, data: TrainingData) -> None:
        self.ctx, self.data = ctx, data
        self.task = data.task
        self.p, self.space = params.params, params.space
        self.owner_id = self.p.parent_job or ctx.job_id
        with session_scope(ctx.engine, readonly=True) as session:
            owner = session.get(Job, self.owner_id)
            self.owner_created = owner.created_at if owner is not None else None
        self.worker = getattr(ctx, "worker_id", None) or f"local-job-{ctx.job_id}"
        self.storage = st.get_storage(ctx.settings)
        self.trials_run = 0
        self._owner_cancel_checked = 0.0
        self._owner_cancelled = False

    # --- the study -----------------------------------------------------------------------

    def open_study(self) -> optuna.Study:
        name = st.study_name(self.owner_id)
        sampler = make_sampler(self.p, self.ctx.job_id - self.owner_id)
        pruner = make_pruner(self.p, max_epochs(self.p, self.space, self.task))
        if self.p.parent_job is not None:
            study_id = st.find_study_id(self.storage, self.owner_id, self.owner_created)
            if study_id is None:
                raise RuntimeError(f"study {name} of search job {self.owner_id} not found")
            return optuna.load_study(study_name=name, storage=self.storage, sampler=sampler, pruner=pruner)
        token = st.job_token(self.owner_created)
        try:
            old = self.storage.get_study_id_from_name(name)
        except KeyError:
            old = None
        if old is not None and self.storage.get_study_user_attrs(old).get("job_token") != token:
            # Left by another job of the same id in a database whose ids started over.
            optuna.delete_study(study_name=name, storage=self.storage)
            old = None
        study = optuna.create_study(
            study_name=name, storage=self.storage, sampler=sampler, pruner=pruner,
            direction=self.p.direction, load_if_exists=True,
        )
        if old is None:
            for key, value in {
                "job_token": token, "job_id": self.owner_id, "dataset_id": self.ctx.dataset_id,
                "metric": self.p.metric, "space": self.space, "base": self.p.base,
                "n_trials": self.p.n_trials, "started_at": time.time(),
            }.items():
                study.set_user_attr(key, value)
        # The trials, queued once (an earlier attempt may have queued some of them).
        originals = [t for t in study.get_trials(deepcopy=False) if "failed_trial" not in t.system_attrs]
        for _ in range(self.p.n_trials - len(originals)):
            study.enqueue_trial({})
        if self.p.workers > 1 and "jobs" not in study.user_attrs:
            study.set_user_attr("jobs", [self.owner_id, *self._queue_extra_jobs()])
        return study

    def _queue_extra_jobs(self) -> list[int]:
        from app.jobs import service
        from app.models import User

        params = {**self.ctx.params, "parent_job": self.owner_id}
        with session_scope(self.ctx.engine) as session:
            owner = session.get(Job, self.owner_id)
            user = session.get(User, owner.created_by) if owner is not None and owner.created_by else None
            ids = []
            for _ in range(self.p.workers - 1):
                job = service.enqueue(
                    session, KIND, params, dataset_id=self.ctx.dataset_id, user=user,
                    max_attempts=owner.max_attempts if owner is not None else None,
                )
                ids.append(job.id)
        self.ctx.log(f"queued {len(ids)} more search jobs for this study: {', '.join(f'#{i}' for i in ids)}")
        return ids

    # --- cancel ------------------------------------------------------------------------

    def owner_cancelled(self) -> bool:
        """An extra job stops with the search: when its first job was asked to cancel."""
        if self.p.parent_job is None or self._owner_cancelled:
            return self._owner_cancelled
        now = time.monotonic()
        if now - self._owner_cancel_checked >= POLL_SECONDS:
            self._owner_cancel_checked = now
            with session_scope(self.ctx.engine, readonly=True) as session:
                self._owner_cancelled = bool(session.scalar(select(Job.cancel_requested).where(Job.id == self.owner_id)))
        return self._owner_cancelled

    def cancelled(self) -> bool:
        return self.ctx.is_cancelled() or self.owner_cancelled()

    def cancel_extra_jobs(self, study: optuna.Study) -> None:
        from app.jobs import service

        ids = [i for i in study.user_attrs.get("jobs", []) if i != self.owner_id]
        if not ids:
            return
        with session_scope(self.ctx.engine) as session:
            for job_id in ids:
                try:
                    service.cancel_job(session, job_id)
                except Exception:  # already finished: nothing to stop
                    pass

    # --- trials ------------------------------------------------------------------------

    def _requeue(self, study: optuna.Study, trial_id: int) -> None:
        """Fail an interrupted trial and queue it again with its params."""
        try:
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return
        st.retry_callback()(study, self.storage.get_trial(trial_id))

    def recover_own_trials(self, study: optuna.Study) -> None:
        """Trials an earlier attempt of this job left RUNNING: its worker is gone."""
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("job_id") == self.ctx.job_id:
                self.ctx.log(f"trial {t.number} was left running by an earlier attempt; queued again", "warning")
                self._requeue(study, t._trial_id)

    def take_waiting(self, study: optuna.Study) -> int | None:
        for t in self.storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
            try:
                if self.storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                    return t._trial_id
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None

    def run_trial(self, study: optuna.Study, data, trial_id: int) -> None:
        from app.search.pruning import TrialPruningCallback
        from app.training.fitting import fit_and_evaluate
        from app.training.recipe import resolve_recipe

        beat = _Heartbeat(self.storage, trial_id)
        trial = optuna.Trial(study, trial_id)
        trial.set_user_attr("worker", self.worker)
        trial.set_user_attr("job_id", self.ctx.job_id)
        self.trials_run += 1
        try:
            params = suggest(trial, self.space, self.p.base)
            self.ctx.log(f"trial {trial.number}: {params}")
            pruning = TrialPruningCallback(trial, self.p.metric, data.classes, data.multilabel)
            try:
                recipe = resolve_recipe({**self.p.base, **params}, self.task, multilabel=data.multilabel)
                result = fit_and_evaluate(
                    data, recipe, callbacks=[pruning],
                    is_cancelled=lambda: pruning.pruned or self.cancelled(),
                )
            except JobCancelled:
                if not pruning.pruned:
                    trial.set_user_attr("interrupted", True)
                    self._requeue(study, trial_id)
                    raise
                study.tell(trial, state=TrialState.PRUNED)
                self.ctx.log(f"trial {trial.number} pruned after epoch {pruning.step}")
                return
            except Exception as exc:
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
                study.tell(trial, state=TrialState.FAIL)
                self.ctx.log(f"trial {trial.number} failed: {type(exc).__name__}: {exc}", "warning")
                log.warning("search trial %s failed", trial.number, exc_info=True)
                return
            if self.p.metric == "valid_loss":
                last = [e.get("valid_loss") for e in result.history if e.get("valid_loss") is not None]
                value = float(last[-1]) if last else None
            else:
                value = result.value("valid", self.p.metric)
            trial.set_user_attr("lr", result.lr)
            trial.set_user_attr("epochs_run", pruning.step)
            for split in ("valid", "test"):
                m = result.metrics.get(split)
                if m is not None:
                    trial.set_user_attr(split, {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]})
            if value is None or not math.isfinite(value):
                trial.set_user_attr("error", f"{self.p.metric} is not a number (training diverged)")
                study.tell(trial, state=TrialState.FAIL)
                return
            study.tell(trial, value)
            self.ctx.log(f"trial {trial.number}: {self.p.metric} {value:.4f}")
        finally:
            beat.stop()

    # --- the job -----------------------------------------------------------------------

    def report(self, study: optuna.Study) -> dict[str, Any]:
        result = summary(study._study_id, self.storage, self.p)
        c = result["counts"]
        best = result["best"]
        msg = f"{c['finished']}/{self.p.n_trials} trials"
        if c["pruned"]:
            msg += f", {c['pruned']} pruned"
        if best is not None:
            msg += f"; best {self.p.metric} {best['value']:.4f} (trial {best['number']})"
        self.ctx.progress(min(1.0, c["finished"] / self.p.n_trials), msg)
        return result

    def run(self) -> dict[str, Any]:
        data = self.data
        if len(data.split("valid", labelled=True)) == 0:
            raise ValueError("a search measures every trial on the valid split, and this dataset has no labelled valid samples")
        study = self.open_study()
        started = float(study.user_attrs.get("started_at", time.time()))
        deadline = started + self.p.timeout_s if self.p.timeout_s else None
        self.recover_own_trials(study)
        timed_out = False
        try:
            while True:
                if self.cancelled():
                    raise JobCancelled()
                if deadline is not None and time.time() >= deadline:
                    timed_out = True
                    self.ctx.log(f"timeout of {self.p.timeout_s:g}s reached; no more trials start")
                    break
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)
                trial_id = self.take_waiting(study)
                if trial_id is None:
                    if self.report(study)["counts"]["running"] == 0:
                        break
                    time.sleep(POLL_SECONDS)  # the last trials run elsewhere: wait for the study's end
                    continue
                self.run_trial(study, data, trial_id)
                self.report(study)
        except JobCancelled:
            shutdown = getattr(self.ctx, "shutdown", False) and not getattr(self.ctx, "cancel_requested", False)
            if self.p.parent_job is None and not shutdown:
                self.cancel_extra_jobs(study)
            raise
        result = self.report(study)
        result["timed_out"] = timed_out
        result["trials_run_here"] = self.trials_run
        result["jobs"] = study.user_attrs.get("jobs", [self.owner_id])
        return result


def run_search_job(ctx: JobContext, params: SearchJobParams, data: TrainingData) -> dict:
    """Run trials of the search's study until none is left to take (or the timeout, or a cancel)."""
    return SearchRun(ctx, params, data).run()
