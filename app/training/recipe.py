"""The training recipe: every knob of a train job, validated, with per-task defaults.

This module imports neither torch nor fastai, so the web process can validate job params.
`Recipe` is the train job's params model: validated with a "task" in the context (as the job
registry does) it comes out resolved for that task, as `resolve_recipe` returns it.
The fastai piece behind each option name lives in app.training.options (LOSSES, OPTIMIZERS,
SCHEDULES ...) or app.training.adapters (IMAGE_ARCHS, TEXT_ARCHS): a new option is a name
here and an entry there.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from app.errors import Invalid

# Option names; app.training.options and app.training.adapters map each to its fastai piece.
IMAGE_ARCHS = ("resnet18", "resnet34", "resnet50", "densenet121", "squeezenet1_1")
TEXT_ARCHS = ("awd_lstm",)
TABULAR_ARCHS = ("mlp",)
ARCHS = {"image": IMAGE_ARCHS, "text": TEXT_ARCHS, "tabular": TABULAR_ARCHS}
LOSS_NAMES = ("cross_entropy", "weighted_cross_entropy", "focal", "label_smoothing")
OPTIMIZER_NAMES = ("adamw", "adam", "ranger", "radam", "sgd")
SCHEDULE_NAMES = ("one_cycle", "flat_cos", "sgdr")
SAMPLING_NAMES = ("none", "oversample", "weighted")
PRECISION_NAMES = ("auto", "fp32", "bf16", "fp16")
LR_RULES = ("valley", "steep", "minimum")
MONITORS = ("valid_loss", "accuracy", "f1")

DEFAULT_LABEL_SMOOTHING = 0.1
MAX_DEVICES = 64
DEFAULT_FOCAL_GAMMA = 2.0
DEFAULT_CYCLE_LEN = 1

# Per-task defaults, chosen so the default recipe trains a good model on a laptop CPU in minutes.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    # 8x8 to a few hundred pixels: 32 px is the smallest size at which every stage of a
    # ResNet (total stride 32) still sees a feature map, and costs ~1/49 of 224 px.
    # freeze_epochs and lr_mult are fastai's fine_tune defaults (one epoch on the new head,
    # then the body at 1/100 of the head's rate).
    "image": {"arch": "resnet18", "epochs": 8, "batch_size": 64, "image_size": 32, "augment": True, "pretrained": True,
              "freeze_epochs": 1, "lr_mult": 100.0, "tta": False},
    "text": {"arch": "awd_lstm", "epochs": 6, "batch_size": 32, "seq_len": 72, "pretrained": True,
             "freeze_epochs": 1, "lr_mult": 100.0},
    "tabular": {"arch": "mlp", "epochs": 10, "batch_size": 64, "layers": [200, 100]},
}
TASK_FIELDS = {
    "image": ("image_size", "augment", "pretrained", "freeze_epochs", "lr_mult", "tta"),
    "text": ("seq_len", "pretrained", "freeze_epochs", "lr_mult"),
    "tabular": ("layers",),
}
TASK_ONLY_FIELDS = {f for fields in TASK_FIELDS.values() for f in fields}


def _int_or_word(value: Any, word: str, low: int, high: int) -> Any:
    """A count given as a number or as `word` ("all", "auto"): JSON sends a number or the word,
    the form sends text. Raises ValueError naming the range otherwise."""
    if isinstance(value, str) and value.strip().lower() == word:
        return word
    number = value
    if isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
        raise ValueError(f"an integer from {low} to {high}, or '{word}'; got {value!r}")
    return number

class RecipeError(Invalid):
    """Invalid train job params (a 422); `errors` lists {"field", "message"}."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("invalid training params: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                         errors=errors)


class Recipe(BaseModel):
    """Train job params (docs/rest.md); None means "the default for this task" until resolved."""

    model_config = ConfigDict(extra="forbid")

    arch: str | None = Field(default=None, description="model architecture; default per task")
    epochs: int | None = Field(default=None, ge=1, le=1000)
    lr: float | None = Field(default=None, gt=0, le=10, description="null: found with lr_find")
    batch_size: int | Literal["auto"] | None = Field(
        default=None, description="samples per step, 2..65536, or 'auto': from the gradient noise scale"
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    scoring: Literal["out_of_fold", "in_sample"] = "out_of_fold"
    folds: int = Field(default=5, ge=2, le=20)
    oof_repeats: int = Field(
        default=1, ge=1, le=10, description="out-of-fold passes, each with its own fold split; their probabilities are averaged"
    )
    # Class imbalance: how batches draw samples, and how the loss weighs classes.
    sampling: Literal[SAMPLING_NAMES] = "none"  # type: ignore[valid-type]
    loss: Literal[LOSS_NAMES] | None = None  # type: ignore[valid-type]
    label_smoothing: float | None = Field(default=None, gt=0, lt=1)
    focal_gamma: float | None = Field(default=None, ge=0, le=10, description="focal loss focusing parameter")
    focal_alpha: Literal["balanced"] | list[float] | None = Field(
        default=None, description="focal loss class weights: 'balanced' or one weight per class"
    )
    # Optimisation.
    optimizer: Literal[OPTIMIZER_NAMES] = "adamw"  # type: ignore[valid-type]
    eps: float | None = Field(default=None, gt=0, le=1, description="optimizer epsilon; null: its default")
    weight_decay: float | None = Field(default=None, ge=0, le=1, description="null: the optimizer's default")
    schedule: Literal[SCHEDULE_NAMES] = "one_cycle"  # type: ignore[valid-type]
    cycle_len: int | None = Field(default=None, ge=1, le=1000, description="epochs per SGDR cycle")
    lr_rule: Literal[LR_RULES] = "valley"  # type: ignore[valid-type]
    precision: Literal[PRECISION_NAMES] = "auto"  # type: ignore[valid-type]
    accumulate: int | None = Field(default=None, ge=2, le=1048576, description="effective batch size in samples")
    torch_compile: bool = Field(default=False, description="compile the model with torch.compile (pays a compile "
                                "time up front; docs/gpu.md says when it pays off)")
    # When to stop and which weights to keep.
    early_stopping: int | None = Field(default=None, ge=1, le=1000, description="patience in epochs on `monitor`")
    monitor: Literal[MONITORS] = "valid_loss"  # type: ignore[valid-type]
    keep_best: bool = False
    retrain_best_epochs: bool = False
    # Ensembles: what predicts the valid, test and unlabelled samples.
    ensemble: bool = False
    snapshot_ensemble: int | None = Field(default=None, ge=2, le=100, description="average the last n epochs' weights")
    # Task-specific knobs; each is null for the other tasks.
    image_size: int | None = Field(default=None, ge=16, le=1024)
    augment: bool | None = None
    pretrained: bool | None = Field(default=None, description="try pretrained weights (falls back to none offline)")
    seq_len: int | None = Field(default=None, ge=8, le=4096)
    layers: list[int] | None = Field(default=None, min_length=1, max_length=8)
    freeze_epochs: int | None = Field(default=None, ge=0, le=1000, description="epochs on the new head of a pretrained model")
    lr_mult: float | None = Field(default=None, ge=1, le=1e6, description="head lr / first layers' lr once unfrozen")
    tta: bool | None = None
    # Data-parallel training (docs/gpu.md): processes that train each model together.
    devices: int | Literal["all"] = Field(
        default=1, description="processes (one per GPU, or CPU processes on gloo) that train each model: 1..64 or 'all'"
    )
    fold_parallelism: Literal["auto", "folds", "data"] = Field(
        default="auto", description="with devices > 1: 'folds' trains the fold models one per device at once, 'data' "
        "each on every device in turn, 'auto' picks the faster for the job"
    )

    @field_validator("devices", mode="before")
    @classmethod
    def _devices(cls, value: Any) -> Any:
        return _int_or_word(value, "all", 1, MAX_DEVICES)

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: Any) -> Any:
        return None if value is None else _int_or_word(value, "auto", 2, 65536)

    @field_validator("focal_alpha", mode="before")
    @classmethod
    def _alpha_from_text(cls, value: Any) -> Any:
        # The form sends one text input: "balanced" or comma-separated weights.
        if isinstance(value, str) and value.strip() != "balanced":
            parts = value.replace(",", " ").split()
            try:
                return [float(p) for p in parts]
            except ValueError:
                raise ValueError("'balanced' or one number per class, comma-separated") from None
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _resolve_for_task(cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Recipe:
        # With a task in the context: the recipe resolved for it (RecipeError names the field).
        context = info.context or {}
        task = context.get("task")
        if task is None or isinstance(data, Recipe):
            return handler(data)
        multilabel = context.get("multilabel")
        if multilabel is None and context.get("dataset") is not None:
            multilabel = bool(getattr(context["dataset"], "multilabel", False))
        return resolve_recipe(data, task, multilabel=bool(multilabel))

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if self.loss == "cross_entropy" and self.label_smoothing is not None:
            raise ValueError("label_smoothing needs loss 'label_smoothing' (or leave loss unset)")
        if self.layers is not None and any(n < 1 or n > 65536 for n in self.layers):
            raise ValueError("layers must be sizes between 1 and 65536")
        if self.loss not in (None, "focal") and (self.focal_gamma is not None or self.focal_alpha is not None):
            raise ValueError("focal_gamma and focal_alpha need loss 'focal'")
        if isinstance(self.focal_alpha, list) and (not self.focal_alpha or any(not 0 < a <= 1e6 for a in self.focal_alpha)):
            raise ValueError("focal_alpha weights must be positive numbers, one per class")
        if self.loss in ("weighted_cross_entropy", "focal") and self.label_smoothing is not None:
            raise ValueError(f"label_smoothing needs loss 'label_smoothing', not {self.loss!r}")
        if self.optimizer == "sgd" and self.eps is not None:
            raise ValueError("eps does not apply to sgd (it has no denominator to stabilise)")
        if self.cycle_len is not None and self.schedule != "sgdr":
            raise ValueError("cycle_len needs schedule 'sgdr'")
        if self.lr is not None and self.lr_rule != "valley":
            raise ValueError("lr_rule picks lr_find's suggestion: leave lr empty to use it")
        watching = self.early_stopping is not None or self.keep_best or self.retrain_best_epochs
        if self.monitor != "valid_loss" and not watching:
            raise ValueError("monitor needs early_stopping, keep_best or retrain_best_epochs")
        if self.retrain_best_epochs and self.scoring != "out_of_fold":
            raise ValueError("retrain_best_epochs needs out_of_fold scoring: the fold models find the epoch count")
        if self.oof_repeats > 1 and self.scoring != "out_of_fold":
            raise ValueError("oof_repeats needs out_of_fold scoring: it repeats the fold models")
        if self.fold_parallelism != "auto" and self.scoring != "out_of_fold":
            raise ValueError("fold_parallelism needs out_of_fold scoring: it places the fold models")
        if self.ensemble and self.scoring != "out_of_fold":
            raise ValueError("ensemble needs out_of_fold scoring: it averages the fold models")
        if self.snapshot_ensemble is not None and self.keep_best:
            raise ValueError("keep_best and snapshot_ensemble choose different weights: pick one")
        if self.snapshot_ensemble is not None and self.epochs is not None and self.snapshot_ensemble > self.epochs:
            raise ValueError(f"snapshot_ensemble {self.snapshot_ensemble} is more than the {self.epochs} epochs")
        if self.accumulate is not None and isinstance(self.batch_size, int) and self.accumulate <= self.batch_size:
            raise ValueError(f"accumulate (effective batch size) must be larger than batch_size {self.batch_size}")
        return self


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    out = []
    for e in exc.errors():
        msg = e["msg"].removeprefix("Value error, ")
        loc = ".".join(str(p) for p in e["loc"])
        if not loc:
            # A rule across fields: name the field its message starts with.
            first = msg.split(" ", 1)[0]
            loc = first if first in Recipe.model_fields else "params"
        if e["type"] == "extra_forbidden":
            msg = f"unknown parameter; known: {', '.join(Recipe.model_fields)}"
        out.append({"field": loc, "message": msg})
    return out


def _multilabel_errors(recipe: Recipe) -> list[dict[str, str]]:
    """The options a multi-label model (a sigmoid per class, app.training.multilabel) cannot take."""
    errors = []
    if recipe.loss == "label_smoothing":
        errors.append({"field": "loss", "message": "label_smoothing is a softmax cross-entropy and does not apply to "
                       "multi-label datasets; one of cross_entropy, weighted_cross_entropy, focal"})
    if recipe.label_smoothing is not None:
        errors.append({"field": "label_smoothing", "message": "does not apply to multi-label datasets (each class "
                       "is a binary decision)"})
    return errors


def resolve_recipe(params: dict[str, Any] | None, task: str, multilabel: bool = False) -> Recipe:
    """Validate params and fill every default for `task` (and a multi-label dataset, whose model
    takes fewer options); raises RecipeError naming the field."""
    if task not in TASK_DEFAULTS:
        raise RecipeError([{"field": "task", "message": f"unknown task {task!r}"}])
    params = dict(params or {})
    try:
        recipe = Recipe.model_validate(params)
    except ValidationError as exc:
        raise RecipeError(_errors(exc)) from None
    errors = []
    for name in TASK_ONLY_FIELDS - set(TASK_FIELDS[task]):
        if getattr(recipe, name) is not None:
            errors.append({"field": name, "message": f"does not apply to {task} datasets"})
    if recipe.arch is not None and recipe.arch not in ARCHS[task]:
        errors.append({"field": "arch", "message": f"for {task} datasets one of {', '.join(ARCHS[task])}"})
    if multilabel:
        errors += _multilabel_errors(recipe)
    if errors:
        raise RecipeError(errors)
    values = recipe.model_dump()
    for name, default in TASK_DEFAULTS[task].items():
        if values.get(name) is None:
            values[name] = default
    if values["loss"] is None:
        focal = values["focal_gamma"] is not None or values["focal_alpha"] is not None
        if focal and values["label_smoothing"] is not None:
            raise RecipeError([{"field": "loss", "message": "label_smoothing and focal_gamma/focal_alpha belong to "
                                "different losses: choose one"}])
        values["loss"] = "focal" if focal else "label_smoothing" if values["label_smoothing"] is not None else "cross_entropy"
    if values["loss"] == "label_smoothing" and values["label_smoothing"] is None:
        values["label_smoothing"] = DEFAULT_LABEL_SMOOTHING
    if values["loss"] == "focal" and values["focal_gamma"] is None:
        values["focal_gamma"] = DEFAULT_FOCAL_GAMMA
    if values["schedule"] == "sgdr" and values["cycle_len"] is None:
        values["cycle_len"] = DEFAULT_CYCLE_LEN
    if task == "image" and values["tta"] and not values["augment"]:
        raise RecipeError([{"field": "tta", "message": "test-time augmentation needs augment on: "
                            "without augmentations every pass sees the same image"}])
    try:
        # The cross-field rules again, now that defaults (epochs, batch size) are known.
        return Recipe.model_validate(values)
    except ValidationError as exc:
        raise RecipeError(_errors(exc)) from None


# The jobs besides `train` that take a recipe train each model in one process, so a recipe's
# `devices` is a train job's alone: what each of them trains, for the message that says so.
ONE_PROCESS_JOBS = {
    "search": "a search trains each trial in one process",
    "seeds": "a seeds job trains each seed's model in one process",
    "prune": "a prune job trains each of its models in one process",
}


def one_process_recipe(raw: dict[str, Any], kind: str) -> tuple[dict[str, Any], str | None]:
    """(the recipe params without `devices`, why its `devices` is refused or None) for a `kind`
    job in ONE_PROCESS_JOBS: only 1 (or leaving it out) is accepted; 2 and up or "all" would
    be ignored there, so they are refused rather than dropped in silence."""
    if "devices" not in raw:
        return raw, None
    rest = {k: v for k, v in raw.items() if k != "devices"}
    try:
        if _int_or_word(raw["devices"], "all", 1, MAX_DEVICES) == 1:
            return rest, None
    except ValueError:
        pass
    return rest, (f"must be 1, not {raw['devices']!r}: {ONE_PROCESS_JOBS[kind]}; data-parallel training "
                  "(devices above 1 or 'all') is for train jobs")
