"""The `prune` job: does removing a class's easiest train samples help the other classes?

Trains the recipe on every train sample (baseline) and on train minus the removed samples
(pruned), with the same seeds, each through fit_and_evaluate; the decision is
app.advisor.prune.decide on the valid metrics (test when the dataset has no valid split).
Nothing is stored but the job's result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationInfo, model_validator
from sqlalchemy import select

from app.advisor.prune import check_prune_params, choose_removed, decide
from app.db import session_scope
from app.errors import Invalid
from app.health.params import ParamsError
from app.health.seeds import context_task, fit_many, summarize
from app.jobs.context import JobContext
from app.models import Prediction
from app.runs.service import latest_run_id
from app.training.recipe import Recipe

if TYPE_CHECKING:
    from app.training.data import TrainingData

MAX_LISTED = 1000


class PruneParams(BaseModel):
    """The prune job's params, as check_prune_params resolves them for the context's task and classes."""

    class_: str = Field(alias="class")
    fraction: float
    recipe: Recipe
    seeds: int

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any, info: ValidationInfo) -> dict[str, Any]:
        task = context_task(info)
        try:
            context = info.context or {}
            multilabel = context.get("multilabel", getattr(context.get("dataset"), "multilabel", False))
            return check_prune_params(data, context.get("classes") or [], task, bool(multilabel))
        except ParamsError as exc:
            raise Invalid(str(exc), errors=exc.errors) from None


def _scores(engine, dataset_id: int, sample_ids: list[int], labels: dict[int, str]) -> tuple[int | None, dict[int, float]]:
    """(run id, self_confidence per sample) from the latest succeeded run, for the samples it
    scored under the label they still have."""
    with session_scope(engine, readonly=True) as session:
        run_id = latest_run_id(session, dataset_id)
        if run_id is None:
            return None, {}
        rows = session.execute(
            select(Prediction.sample_id, Prediction.given_label, Prediction.self_confidence).where(
                Prediction.run_id == run_id, Prediction.sample_id.in_(sample_ids)
            )
        ).all()
    return run_id, {
        sid: float(sc) for sid, given, sc in rows if sc is not None and given == labels.get(sid)
    }


def run_prune_job(ctx: JobContext, params: PruneParams, data: TrainingData) -> dict[str, Any]:
    """Baseline and pruned arms over the same seeds, and the recommendation."""
    cls, fraction, recipe, n_seeds = params.class_, params.fraction, params.recipe, params.seeds

    train = data.train
    # A multi-label dataset's samples of a class are those whose tag set holds it.
    of_class = train[data.targets(train)[:, data.classes.index(cls)] == 1] if data.multilabel else train[train["label"] == cls]
    ids = [int(i) for i in of_class["sample_id"]]
    if len(ids) < 2:
        raise ValueError(f"class {cls!r} has {len(ids)} train samples; pruning needs at least 2")
    run_id, scores = _scores(ctx.engine, data.dataset_id, ids, dict(zip(ids, of_class["label"])))
    removal = choose_removed([(i, scores.get(i)) for i in ids], fraction)
    for notice in removal.notices:
        ctx.log(notice, "warning")
    removed = set(removal.sample_ids)
    pruned_train = train[~train["sample_id"].isin(removed)]
    ctx.log(
        f"pruning {len(removed)} of {len(ids)} train samples of {cls!r} (by {removal.method}"
        + (f", run #{run_id}" if run_id else "") + f"); {n_seeds} seeds per arm"
    )
    seeds = list(range(n_seeds))
    baseline = fit_many(ctx, data, recipe, seeds, done=0.0, share=0.5, label="baseline, seed")
    pruned = fit_many(ctx, data, recipe, seeds, train=pruned_train, done=0.5, share=0.5, label="pruned, seed")

    split = "valid" if all(r["valid"] is not None for r in baseline + pruned) else "test"
    if any(r[split] is None for r in baseline + pruned):
        raise ValueError("the dataset has neither valid nor test samples to judge the prune experiment on")
    decision = decide([r[split] for r in baseline], [r[split] for r in pruned], cls)
    ctx.log(decision.reason, "info")
    return {
        "class": cls,
        "fraction": fraction,
        "seeds": n_seeds,
        "recipe": recipe.model_dump(),
        "label_version": data.label_version,
        "split": split,
        "train": {"before": len(train), "after": len(pruned_train), "class_before": len(ids),
                  "class_after": len(ids) - len(removed)},
        "removed": len(removed),
        "removed_sample_ids": sorted(removed)[:MAX_LISTED],
        "selection": removal.method,
        "scored_by_run": run_id,
        "notices": removal.notices,
        "baseline": baseline,
        "pruned": pruned,
        "summary": {"baseline": summarize(baseline, data.classes), "pruned": summarize(pruned, data.classes)},
        "decision": decision.as_dict(),
        "recommend": decision.recommend,
        "reason": decision.reason,
    }
