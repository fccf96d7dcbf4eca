"""The prune experiment's rules: its params, which samples it removes, and the decision.

Pure functions (no database, no torch), so the web process checks params with them and the
decision rule is tested on given numbers. The job itself is app.advisor.prune_job.

Decision: the baseline (every train sample) and the pruned arm (without the removed ones)
train with the same seeds, so each seed gives a paired difference pruned - baseline. Over
the seeds, with d the per-seed differences, mean(d) and its standard error sem(d):

- the class holds when mean(d_class) >= -max(MIN_TOLERANCE, sem(d_class));
- the others improve when mean(d_others) > sem(d_others) and mean(d_others) > 0, d_others
  being the change of the mean F1 of every other class;

and pruning is recommended only when both are true.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from app.health.params import ParamsError, check_known, float_param, int_param, recipe_param

PRUNE_PARAMS = ("class", "fraction", "recipe", "seeds")
DEFAULT_FRACTION = 0.3
MAX_FRACTION = 0.9
DEFAULT_SEEDS = 3
MIN_TOLERANCE = 0.01


def check_prune_params(params: dict[str, Any] | None, classes: Sequence[str], task: str,
                       multilabel: bool = False) -> dict[str, Any]:
    """class (one of the dataset's), fraction (0 < f <= 0.9, default 0.3), recipe (train
    params), seeds (2..10, default 3). Raises ParamsError naming each bad field."""
    params = dict(params or {})
    errors: list[dict[str, str]] = []
    check_known(params, PRUNE_PARAMS, errors)
    cls = params.get("class")
    if cls is None:
        errors.append({"field": "class", "message": "required: the class whose train samples to prune"})
    elif not isinstance(cls, str) or cls not in classes:
        errors.append({"field": "class", "message": f"must be one of the dataset's classes {list(classes)}, not {cls!r}"})
    fraction = float_param(params, "fraction", DEFAULT_FRACTION, 0.0, MAX_FRACTION, errors, low_open=True)
    recipe = recipe_param(params, task, errors, multilabel, "prune")
    seeds = int_param(params, "seeds", DEFAULT_SEEDS, 2, 10, errors)
    if errors:
        raise ParamsError("prune", errors)
    return {"class": cls, "fraction": fraction, "recipe": recipe, "seeds": seeds}


@dataclass
class Removal:
    sample_ids: list[int]
    method: str  # self_confidence | random | mixed
    notices: list[str] = field(default_factory=list)


def choose_removed(candidates: Sequence[tuple[int, float | None]], fraction: float, seed: int = 0) -> Removal:
    """The round(fraction * n) easiest of a class's n train samples: highest self_confidence
    first; samples without a score (no run, or relabelled since) are drawn at random after the
    scored ones run out, with a notice. At least one sample always stays."""
    n = len(candidates)
    k = min(max(1, round(fraction * n)), n - 1) if n > 1 else 0
    scored = sorted((c for c in candidates if c[1] is not None), key=lambda c: (-c[1], c[0]))
    unscored = sorted(c[0] for c in candidates if c[1] is None)
    chosen = [c[0] for c in scored[:k]]
    notices = []
    method = "self_confidence"
    if len(chosen) < k:
        extra = random.Random(seed).sample(unscored, k - len(chosen))
        method = "random" if not chosen else "mixed"
        notices.append(
            f"{len(extra)} of the {k} removed samples were drawn at random: "
            + ("no finished run scored this class's train samples" if not scored else
               f"only {len(scored)} of them have a score under their current label")
        )
        chosen += extra
    return Removal(chosen, method, notices)


def _f1(metrics: dict[str, Any], cls: str) -> float:
    """A class's F1 from metrics M ({"per_class": {c: {"f1"}}}) or their compact form ({"f1": {c: f}})."""
    if "f1" in metrics and isinstance(metrics["f1"], dict):
        return float(metrics["f1"][cls])
    return float(metrics["per_class"][cls]["f1"])


def _classes(metrics: dict[str, Any]) -> list[str]:
    return list(metrics["f1"] if isinstance(metrics.get("f1"), dict) else metrics["per_class"])


def _sem(values: Sequence[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


@dataclass
class Arm:
    baseline_mean: float
    pruned_mean: float
    delta_mean: float
    delta_sem: float


@dataclass
class Decision:
    recommend: bool
    reason: str
    cls: str
    seeds: int
    holds: bool
    improves: bool
    tolerance: float
    target: Arm
    others: Arm
    per_class: dict[str, Arm]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["class"] = out.pop("cls")
        return out


def _arm(base: list[float], pruned: list[float]) -> Arm:
    d = [p - b for b, p in zip(base, pruned)]
    return Arm(statistics.fmean(base), statistics.fmean(pruned), statistics.fmean(d), _sem(d))


def decide(baseline: Sequence[dict[str, Any]], pruned: Sequence[dict[str, Any]], cls: str,
           min_tolerance: float = MIN_TOLERANCE) -> Decision:
    """Recommend pruning `cls` only when its F1 holds and the other classes' mean F1 improves
    (module docstring). baseline[i] and pruned[i] are the metrics of seed i in both arms."""
    if len(baseline) != len(pruned):
        raise ValueError(f"baseline has {len(baseline)} seeds, pruned {len(pruned)}: they must pair up")
    if not baseline:
        raise ValueError("no seeds to decide on")
    classes = _classes(baseline[0])
    if cls not in classes:
        raise ValueError(f"class {cls!r} is not among the metrics' classes {classes}")
    others = [c for c in classes if c != cls]
    if not others:
        raise ValueError("pruning needs at least one other class to judge")
    per_class = {c: _arm([_f1(m, c) for m in baseline], [_f1(m, c) for m in pruned]) for c in classes}
    target = per_class[cls]
    other_arm = _arm(
        [statistics.fmean(_f1(m, c) for c in others) for m in baseline],
        [statistics.fmean(_f1(m, c) for c in others) for m in pruned],
    )
    tolerance = max(min_tolerance, target.delta_sem)
    holds = target.delta_mean >= -tolerance
    improves = other_arm.delta_mean > 0 and other_arm.delta_mean > other_arm.delta_sem
    n = len(baseline)
    t = f"{cls} F1 {target.baseline_mean:.3f} -> {target.pruned_mean:.3f} ({target.delta_mean:+.3f} +- {target.delta_sem:.3f})"
    o = (f"mean F1 of the other classes {other_arm.baseline_mean:.3f} -> {other_arm.pruned_mean:.3f} "
         f"({other_arm.delta_mean:+.3f} +- {other_arm.delta_sem:.3f})")
    if holds and improves:
        reason = f"prune: {t} holds within {tolerance:.3f}, and the {o} rises by more than its standard error over {n} seeds"
    elif not holds:
        reason = f"keep: {t} drops by more than {tolerance:.3f}; {o}"
    else:
        reason = f"keep: {t} holds, but the {o} does not rise by more than its standard error over {n} seeds"
    return Decision(
        recommend=holds and improves, reason=reason, cls=cls, seeds=n, holds=holds, improves=improves,
        tolerance=tolerance, target=target, others=other_arm, per_class=per_class,
    )
