"""The `seeds` job: one recipe trained with seeds 0..N-1, and how much its numbers move.

Each seed is one fit_and_evaluate (nothing stored but the job's result). The result has every
seed's valid and test numbers and, per metric, mean, standard deviation and standard error,
plus the seed spread of valid macro F1 set against a difference worth judging: the one
between the dataset's last two runs, or the `compare_delta` param (app.health.stats).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationInfo, model_validator
from sqlalchemy import select

from app.db import session_scope
from app.errors import Invalid
from app.formatting import fmt
from app.health.params import ParamsError, check_seeds_params
from app.health.stats import check_spread, spread
from app.jobs.context import JobContext
from app.models import Run, RunStatus
from app.training.recipe import Recipe

if TYPE_CHECKING:
    from app.training.data import TrainingData

SPLITS = ("valid", "test")


def context_task(info: ValidationInfo) -> str:
    """The dataset's task that job params are validated for (the registry puts it in the context)."""
    task = (info.context or {}).get("task")
    if task is None:
        raise ValueError("these params are validated for a dataset's task")
    return task


class SeedsParams(BaseModel):
    """The seeds job's params, as check_seeds_params resolves them for the context's task."""

    recipe: Recipe
    seeds: int
    compare_delta: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any, info: ValidationInfo) -> dict[str, Any]:
        try:
            context = info.context or {}
            multilabel = context.get("multilabel", getattr(context.get("dataset"), "multilabel", False))
            return check_seeds_params(data, context_task(info), bool(multilabel))
        except ParamsError as exc:
            raise Invalid(str(exc), errors=exc.errors) from None


def compact(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """Accuracy, macro F1 and per-class F1 of one split's metrics M (None stays None)."""
    if metrics is None:
        return None
    return {
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "f1": {c: v["f1"] for c, v in metrics["per_class"].items()},
    }


def summarize(per_seed: list[dict[str, Any]], classes: list[str]) -> dict[str, Any]:
    """Per split and metric, spread() over the seeds: accuracy, macro_f1 and f1 per class."""
    out: dict[str, Any] = {}
    for split in SPLITS:
        rows = [r[split] for r in per_seed if r.get(split) is not None]
        if not rows:
            out[split] = None
            continue
        out[split] = {
            "accuracy": spread([r["accuracy"] for r in rows]),
            "macro_f1": spread([r["macro_f1"] for r in rows]),
            "f1": {c: spread([r["f1"][c] for r in rows]) for c in classes},
        }
    return out


def last_two_runs(engine, dataset_id: int) -> tuple[list[int], float] | None:
    """([older, newer] run ids, newer - older valid macro F1) of the last two succeeded runs with valid metrics."""
    with session_scope(engine, readonly=True) as session:
        runs = session.scalars(
            select(Run).where(Run.dataset_id == dataset_id, Run.status == RunStatus.succeeded).order_by(Run.id.desc()).limit(50)
        ).all()
        found = [(r.id, (r.metrics or {}).get("valid") or {}) for r in runs]
    found = [(rid, m["macro_f1"]) for rid, m in found if m.get("macro_f1") is not None][:2]
    if len(found) < 2:
        return None
    (new_id, new), (old_id, old) = found
    return [old_id, new_id], float(new - old)


def fit_many(
    ctx: JobContext,
    data,
    recipe,
    seeds: list[int],
    *,
    train=None,
    done: float = 0.0,
    share: float = 1.0,
    label: str = "seed",
    total_label: int | None = None,
    on_fit: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """fit_and_evaluate once per seed on `train`, reporting progress from `done` over `share`
    of the job; checks cancel between seeds and, through fit_and_evaluate, every batch."""
    from app.training.fitting import fit_and_evaluate
    from app.training.options import total_epochs

    epochs = max(1, total_epochs(recipe, bool(recipe.pretrained)))
    out = []
    for i, seed in enumerate(seeds):
        ctx.check_cancelled()
        base = done + share * i / len(seeds)
        step = share / len(seeds)
        title = f"{label} {seed + 1}/{total_label or len(seeds)}"
        ctx.progress(base, title)

        def on_epoch(entry: dict[str, Any], base=base, step=step, title=title) -> None:
            fraction = min(1.0, entry.get("epoch", 0) / epochs)
            ctx.progress(base + step * fraction, f"{title}, epoch {entry.get('epoch')}/{epochs}")

        fit = fit_and_evaluate(
            data, recipe.model_copy(update={"seed": seed}), train=train, is_cancelled=ctx.is_cancelled, on_epoch=on_epoch
        )
        row = {
            "seed": seed,
            "lr": fit.lr,
            "seconds": fit.seconds,
            **{split: compact(fit.metrics.get(split)) for split in SPLITS},
        }
        for notice in fit.notices:
            ctx.log(notice, "warning")
        ctx.log(f"{title}: valid macro F1 {fmt((row['valid'] or {}).get('macro_f1'))}, "
                f"test macro F1 {fmt((row['test'] or {}).get('macro_f1'))} in {fit.seconds:.0f}s")
        out.append(row)
        if on_fit is not None:
            on_fit(seed, row)
    return out


def run_seeds_job(ctx: JobContext, params: SeedsParams, data: TrainingData) -> dict[str, Any]:
    """Train the recipe with seeds 0..N-1 and report the spread of every metric."""
    recipe, n = params.recipe, params.seeds
    ctx.log(f"{n} seeds of {recipe.arch}, {recipe.epochs} epochs, on {len(data.train)} train / {len(data.valid)} valid samples")
    per_seed = fit_many(ctx, data, recipe, list(range(n)))
    summary = summarize(per_seed, data.classes)

    comparison = None
    valid = summary.get("valid")
    if valid is not None and valid["macro_f1"]["std"] is not None:
        if params.compare_delta is not None:
            check = check_spread(valid["macro_f1"]["std"], params.compare_delta, "the runs compared")
            comparison = {"source": "compare_delta", "run_ids": None, **check.as_dict()}
        else:
            last = last_two_runs(ctx.engine, data.dataset_id)
            if last is None:
                check = check_spread(valid["macro_f1"]["std"], None)
                comparison = {"source": None, "run_ids": None, **check.as_dict()}
            else:
                ids, delta = last
                check = check_spread(valid["macro_f1"]["std"], delta, f"runs #{ids[0]} and #{ids[1]}")
                comparison = {"source": "last_two_runs", "run_ids": ids, **check.as_dict()}
        ctx.log(comparison["message"], "warning" if comparison["warn"] else "info")
    warning = comparison["message"] if comparison and comparison["warn"] else None
    return {
        "seeds": n,
        "recipe": recipe.model_dump(),
        "label_version": data.label_version,
        "sizes": {"train": len(data.train), "valid": len(data.valid)},
        "per_seed": per_seed,
        "summary": summary,
        "comparison": comparison,
        "warning": warning,
    }

