"""Parameters of the experiment jobs (seeds here; prune in app.advisor.prune), checked at
enqueue so a bad value is a 422 naming the field, not a failure in the worker.

Imports neither torch nor fastai: the web process validates with it.
"""

from __future__ import annotations

import math
from typing import Any

from app.training.recipe import RecipeError, one_process_recipe, resolve_recipe


class ParamsError(ValueError):
    """Invalid job params; `errors` lists {"field", "message"}."""

    def __init__(self, kind: str, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__(f"invalid {kind} params: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors))


def check_known(params: dict[str, Any], known: tuple[str, ...], errors: list[dict[str, str]]) -> None:
    for name in params:
        if name not in known:
            errors.append({"field": name, "message": f"unknown parameter; known: {', '.join(known)}"})


def int_param(params: dict[str, Any], name: str, default: int, low: int, high: int, errors: list) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors.append({"field": name, "message": f"must be an integer from {low} to {high}, not {value!r}"})
        return default
    return value


def float_param(
    params: dict[str, Any], name: str, default: float | None, low: float, high: float, errors: list, *, low_open: bool = False
) -> float | None:
    value = params.get(name, default)
    if value is None:
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low < value if low_open else low <= value) and value <= high
    if not ok:
        bound = f"greater than {low}" if low_open else f"from {low}"
        errors.append({"field": name, "message": f"must be a number {bound} up to {high}, not {value!r}"})
        return default
    return float(value)


def recipe_param(params: dict[str, Any], task: str, errors: list[dict[str, str]], multilabel: bool = False,
                 kind: str = "seeds"):
    """The `recipe` param (train job params) resolved for the task (and a multi-label dataset);
    its seed is the job's to set, and a `kind` job trains each model in one process (devices 1)."""
    raw = params.get("recipe", {})
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append({"field": "recipe", "message": "must be an object of train job params"})
        return None
    if "seed" in raw:
        errors.append({"field": "recipe.seed", "message": "the job sets the seed of each model (0, 1, ...); leave it out"})
        raw = {k: v for k, v in raw.items() if k != "seed"}
    raw, why = one_process_recipe(raw, kind)
    if why:
        errors.append({"field": "recipe.devices", "message": why})
    try:
        return resolve_recipe(raw, task, multilabel=multilabel)
    except RecipeError as exc:
        errors.extend({"field": f"recipe.{e['field']}", "message": e["message"]} for e in exc.errors)
        return None


SEEDS_PARAMS = ("recipe", "seeds", "compare_delta")
DEFAULT_SEEDS = 5


def check_seeds_params(params: dict[str, Any] | None, task: str, multilabel: bool = False) -> dict[str, Any]:
    """The seeds job's params with defaults: recipe (train params, resolved), seeds (2..20,
    default 5), compare_delta (optional: a valid macro F1 difference to judge against the
    seed spread instead of the last two runs'). Raises ParamsError naming each bad field."""
    params = dict(params or {})
    errors: list[dict[str, str]] = []
    check_known(params, SEEDS_PARAMS, errors)
    recipe = recipe_param(params, task, errors, multilabel, "seeds")
    seeds = int_param(params, "seeds", DEFAULT_SEEDS, 2, 20, errors)
    delta = float_param(params, "compare_delta", None, 0.0, 1.0, errors)
    if errors:
        raise ParamsError("seeds", errors)
    return {"recipe": recipe, "seeds": seeds, "compare_delta": delta}
