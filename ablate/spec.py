"""The sweep file: its schema (pydantic), loading with errors that name file, field and fix,
and expansion of methods x grids x seeds into trial configs. Knows nothing of Ray."""

from __future__ import annotations

import difflib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ablate import data as data_mod
from ablate import dsconfig, losses, metrics
from ablate.models import TinyModelConfig, is_builtin, model_exists
from ablate.synthetic import TaskConfig

DISPLAY = {
    "simpo": "SimPO", "dpo": "DPO", "ipo": "IPO", "cpo": "CPO", "kto": "KTO", "orpo": "ORPO",
    "rdpo": "R-DPO", "rrhf": "RRHF", "slic_hf": "SLiC-HF", "sft": "SFT",
}  # fmt: skip


class SpecError(ValueError):
    """An invalid sweep file. ``str()`` is the one-paragraph message shown to the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Space(_Strict):
    """A search space for one value: exactly one of the keys."""

    grid: list[Any] | None = None
    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Space:
        given = [
            k for k in ("grid", "choice", "uniform", "loguniform", "randint") if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError("a search space has exactly one of grid, choice, uniform, loguniform, randint")
        values = getattr(self, given[0])
        if given[0] in ("grid", "choice") and not values:
            raise ValueError(f"{given[0]} is empty; list at least one value")
        if given[0] in ("uniform", "loguniform", "randint") and not values[0] < values[1]:
            raise ValueError(f"{given[0]} needs [low, high] with low < high, got {list(values)}")
        if given[0] == "loguniform" and values[0] <= 0:
            raise ValueError("loguniform needs low > 0")
        return self

    @property
    def kind(self) -> str:
        return next(
            k for k in ("grid", "choice", "uniform", "loguniform", "randint") if getattr(self, k) is not None
        )

    @property
    def values(self) -> Any:
        return getattr(self, self.kind)


Value = float | int | bool | str | Space


class ModelConfig(_Strict):
    name_or_path: str = Field("builtin:tiny", description="Hub id, local directory, or builtin:tiny.")
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False


class DataConfig(_Strict):
    source: str = Field(
        "builtin:synthetic", description="builtin:synthetic, a .jsonl/.json/.parquet file, or a hub id."
    )
    task: TaskConfig = Field(default_factory=TaskConfig)
    train_split: str = "train"
    eval_split: str = "test"
    fields: tuple[str, str, str] = ("prompt", "chosen", "rejected")
    max_length: int = Field(48, ge=4)
    max_prompt_length: int = Field(16, ge=1)
    chat_template: bool = False
    task_grid: dict[str, list[float | int]] = Field(
        default_factory=dict,
        description="Built-in task knobs to sweep, e.g. {length_bias: [0, 0.5, 1, 2]}: every trial runs once per "
        "value (grid search), each value overriding `task`.",
    )

    @model_validator(mode="after")
    def _lengths(self) -> DataConfig:
        if self.max_prompt_length >= self.max_length:
            raise ValueError("max_prompt_length must be smaller than max_length")
        return self

    @model_validator(mode="after")
    def _task_grid(self) -> DataConfig:
        for key, values in self.task_grid.items():
            if key not in TaskConfig.model_fields or key == "version":
                allowed = [k for k in TaskConfig.model_fields if k != "version"]
                raise ValueError(f"task_grid: {key!r} is not a task knob; sweepable: {', '.join(allowed)}")
            if not values:
                raise ValueError(f"task_grid.{key} is empty; list at least one value")
        for point in task_points(self):
            TaskConfig.model_validate(point)  # each point must be a valid task
        return self


def task_points(data: DataConfig) -> list[dict[str, Any]]:
    """The task configs a sweep runs on: ``task`` alone, or one per point of ``task_grid``."""
    base = data.task.model_dump()
    keys = list(data.task_grid)
    return [
        {**base, **dict(zip(keys, combo, strict=True))}
        for combo in itertools.product(*data.task_grid.values())
    ]


class SFTConfig(_Strict):
    """Training of the start point (built-in model only; real users pass an SFT checkpoint)."""

    epochs: int = Field(6, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    seed: int = 0


class TrainingConfig(_Strict):
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(16, ge=1, description="Pairs per micro-batch (per worker).")
    grad_accum: int = Field(1, ge=1)
    epochs: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    log_every: int = Field(10, ge=1)
    group_by_length: bool = True
    checkpoint_every: int = Field(
        50,
        ge=0,
        description="Steps between checkpoints (model, optimizer, scheduler, step, RNG) that a retried or "
        "resumed trial restarts from; 0: no checkpoints.",
    )


class EvalConfig(_Strict):
    batch_size: int = Field(64, ge=1)
    generate: bool = True
    num_prompts: int = Field(128, ge=1, description="Held-out prompts to generate on (greedy).")
    max_new_tokens: int = Field(16, ge=1)
    every_steps: int | None = Field(
        None,
        ge=1,
        description="Also report held-out reward_accuracy and reward_margin (no generation) at the first "
        "logging step at or after every multiple of this many training steps; needed by `scheduler: asha` "
        "on those metrics.",
    )


class Resources(_Strict):
    cpus: float = Field(1, gt=0, description="CPUs per trial.")
    gpus: float = Field(0, ge=0, description="GPUs per trial.")
    workers: int = Field(
        1,
        ge=1,
        description="Ray Train workers per trial; more than 1 trains with DeepSpeed (see `deepspeed`).",
    )
    cpus_per_worker: float = Field(1, gt=0, description="CPUs per worker (workers > 1).")
    gpus_per_worker: float = Field(0, ge=0, description="GPUs per worker (workers > 1).")

    @model_validator(mode="after")
    def _per_trial_or_per_worker(self) -> Resources:
        # cpus/gpus size a single-process trial, *_per_worker a multi-worker one; mixing them is a mistake.
        if self.workers > 1 and {"cpus", "gpus"} & self.model_fields_set:
            raise ValueError(
                "with workers > 1 give per-worker resources (cpus_per_worker, gpus_per_worker) instead of cpus/gpus"
            )
        if self.workers == 1 and {"cpus_per_worker", "gpus_per_worker"} & self.model_fields_set:
            raise ValueError(
                "cpus_per_worker/gpus_per_worker apply when workers > 1; for one worker use cpus/gpus"
            )
        return self


class DeepSpeedSection(_Strict):
    """DeepSpeed settings of multi-worker trials (``resources.workers`` > 1)."""

    stage: Literal[0, 1, 2, 3] = Field(3, description="ZeRO stage: 0 (plain data parallel), 1, 2 or 3.")
    offload: Literal["none", "optimizer", "all"] = Field(
        "none", description="Offload to CPU memory: the optimizer state, or (stage 3) parameters too."
    )
    config: str | None = Field(
        None,
        description='Your own DeepSpeed JSON file (relative to the sweep file), used instead of stage/offload; "auto" values are filled from the sweep.',
    )
    save_model: bool = Field(
        True, description="Save the trained policy (Hugging Face format) as the trial's Ray Train checkpoint."
    )

    @model_validator(mode="after")
    def _consistent(self) -> DeepSpeedSection:
        if self.config is not None and {"stage", "offload"} & self.model_fields_set:
            raise ValueError("give either config (your own DeepSpeed JSON) or stage/offload, not both")
        if self.offload == "all" and self.stage != 3:
            raise ValueError("offload: all (parameters too) needs stage: 3")
        if self.offload == "optimizer" and self.stage == 0:
            raise ValueError("offload: optimizer needs ZeRO stage 1, 2 or 3")
        return self


class SchedulerConfig(_Strict):
    """Early stopping of unpromising trials; ``scheduler: asha`` is short for ``{type: asha}``."""

    type: Literal["none", "asha"] = "none"
    metric: str | None = Field(
        None,
        description="Metric compared at each rung; must be reported during training (default: the sweep's "
        "`metric`).",
    )
    mode: Literal["max", "min"] | None = Field(
        None, description="Default: the sweep's `mode` for its metric, else the metric's natural direction."
    )
    grace_period: int = Field(
        10, ge=1, description="Training steps every trial runs before it can be stopped."
    )
    reduction_factor: float = Field(2.0, gt=1, description="Keep the best 1/reduction_factor at each rung.")


class MethodEntry(_Strict):
    method: str
    name: str | None = Field(None, description="Label in reports; defaults to the method's display name.")
    hparams: dict[str, Value] = Field(default_factory=dict)
    reference: Literal["online", "precomputed"] = "precomputed"
    training: dict[str, Value] = Field(
        default_factory=dict, description="Overrides of the shared training settings."
    )

    @field_validator("method")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in losses.LOSSES:
            hint = difflib.get_close_matches(v, losses.METHOD_NAMES, n=1)
            raise ValueError(
                f"unknown method {v!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; known methods: {', '.join(losses.METHOD_NAMES)}"
            )
        return v

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        label = DISPLAY[self.method]
        if self.method == "simpo" and self.hparams.get("length_normalize") is False:
            label += " w/o LN"
        return label


class SweepSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    storage: str = Field("results", description="Local path or URI (s3://, gs://) where results go.")
    cache_dir: str = Field(
        ".cache/ablate", description="Where the SFT start point and tokenized data are cached."
    )
    methods: list[MethodEntry] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvalConfig = Field(default_factory=EvalConfig)
    resources: Resources = Field(default_factory=Resources)
    deepspeed: DeepSpeedSection | None = Field(
        None, description="DeepSpeed settings (resources.workers > 1)."
    )
    search: Literal["grid", "random", "optuna"] = Field(
        "grid",
        description="grid: every grid point x seed; random / optuna: `num_samples` draws per method entry "
        "(Optuna's RandomSampler / TPESampler through Ray Tune's OptunaSearch).",
    )
    num_samples: int | None = Field(
        None, ge=1, description="Trials per method entry for search: random / optuna (required there)."
    )
    search_seed: int = Field(0, description="Seed of the random / optuna sampler.")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    metric: str = Field("reward_accuracy", description="Metric that selects each method's best setting.")
    mode: Literal["max", "min"] = "max"
    max_concurrent: int | None = Field(None, ge=1)
    max_failures: int = Field(0, ge=0, description="Retries of a failing trial.")
    reuse_workers: bool = Field(
        True,
        description="Run trial after trial in the same worker process (imports, start point and tokenized "
        "data loaded once per worker). false: a fresh process per trial (~4 s more per trial), so nothing "
        "carries over and Ray cannot move a waiting trial onto another node's free worker.",
    )

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler_shorthand(cls, v: Any) -> Any:
        return {"type": v} if isinstance(v, str) else v


def _field_path(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) if loc else "(top level)"


VALUE_HELP = (
    "a number, true/false, a string, or a search space: {grid: [..]}, {choice: [..]}, "
    "{uniform: [low, high]}, {loguniform: [low, high]} or {randint: [low, high]}"
)
_SCALAR_TAGS = ("float", "int", "bool", "str")


def _union_member(loc: tuple) -> tuple[tuple, str | None]:
    """Pydantic reports a failed union (a hyperparameter is a number, bool, string or search space) once
    per member, tagged in the path; return the path without the tag, and the member's name."""
    for i, part in enumerate(loc):
        if isinstance(part, str) and (part in _SCALAR_TAGS or "[" in part):
            return loc[:i] + loc[i + 1 :], ("Space" if "Space" in part else part)
    return loc, None


def _format_validation(
    path: Path, err: ValidationError, prefix: tuple = (), keys_at: tuple | None = None
) -> str:
    """One paragraph: every error's field path (``prefix`` + pydantic's), what is wrong and what to write.
    ``keys_at``: where in the sweep file the validated model sits, for the did-you-mean of unknown keys."""
    lines = []
    for e in err.errors():
        loc, member = _union_member(tuple(e["loc"]))
        if member in _SCALAR_TAGS:
            continue  # "not a number", "not a string", ...: the search-space member's error says more
        where = _field_path(prefix + loc)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            allowed = (
                list(Space.model_fields)
                if member == "Space"
                else _allowed_keys((prefix if keys_at is None else keys_at) + loc[:-1])
            )
            hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            msg = (
                "unknown key"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
                + f" Allowed here: {', '.join(allowed)}"
            )
        elif e["type"] == "missing":
            msg = "this field is required"
        elif member == "Space" and e["type"] == "model_type":
            msg = f"expected {VALUE_HELP}"
        line = f"{where}: {msg}"
        if line not in lines:
            lines.append(line)
    return f"{path}: invalid sweep file. " + "; ".join(lines) + ". See `python -m ablate.run --schema`."


def _allowed_keys(loc: tuple) -> list[str]:
    model: Any = SweepSpec
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args, *(getattr(a, "__args__", ()) for a in args)]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; every problem raises ``SpecError`` with file, field and fix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(
            f"{path}: cannot read the sweep file ({e}). Pass the path of a YAML sweep file."
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(
            f"{path}: not valid YAML ({str(e).splitlines()[0]}). Fix the syntax at the line shown."
        ) from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a sweep file is a YAML mapping with at least `name` and `methods`.")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(_format_validation(path, e)) from None
    check_semantics(path, spec)
    return spec


def check_semantics(path: Path, spec: SweepSpec) -> None:
    """What the schema alone cannot check: each method's hyperparameters, the spaces against the search,
    metric names against what trials report, and that the model and data file exist."""
    for i, entry in enumerate(spec.methods):
        for point in _grid_points(entry.hparams):
            try:
                losses.validate_hparams(entry.method, point)
            except ValueError as e:
                raise SpecError(
                    f"{path}: methods.{i}.hparams: {e}. Fix the value or remove the key."
                ) from None
        for point in _grid_points(entry.training):
            try:
                TrainingConfig.model_validate({**spec.training.model_dump(), **point})
            except ValidationError as e:
                raise SpecError(
                    _format_validation(path, e, ("methods", i, "training"), keys_at=("training",))
                ) from None
        _check_spaces(path, spec, i, entry)
    _check_search(path, spec)
    _check_metrics(path, spec)
    check_deepspeed(path, spec)
    if not is_builtin(spec.model.name_or_path) and not model_exists(spec.model.name_or_path):
        raise SpecError(
            f"{path}: model.name_or_path: {spec.model.name_or_path!r} is not a model directory (no config.json). "
            "Give a local directory saved with save_pretrained, a hub id, or builtin:tiny."
        )
    _check_data_file(path, spec.data)


def _check_spaces(path: Path, spec: SweepSpec, i: int, entry: MethodEntry) -> None:
    for section in ("hparams", "training"):
        for key, value in getattr(entry, section).items():
            if not isinstance(value, Space):
                continue
            where = f"{path}: methods.{i}.{section}.{key}"
            if spec.search == "grid" and value.kind not in ("grid", "choice"):
                raise SpecError(
                    f"{where}: a {value.kind} range cannot be enumerated by grid search. "
                    "Use `grid: [...]` or set `search: random` / `search: optuna` with `num_samples`."
                )
            if (
                section == "training"
                and value.kind in ("uniform", "loguniform")
                and TrainingConfig.model_fields[key].annotation is not float
            ):
                raise SpecError(
                    f"{where}: training.{key} takes whole numbers, which a {value.kind} range does not draw. "
                    f"Write `randint: [{int(value.values[0])}, {int(value.values[1])}]` (both ends included)."
                )
            if spec.search != "grid" and value.kind == "grid":
                raise SpecError(
                    f"{where}: `grid` enumerates values for `search: grid`; with `search: {spec.search}` "
                    f"write `choice: {list(value.values)}` to sample among them, or set `search: grid`."
                )


def _check_search(path: Path, spec: SweepSpec) -> None:
    if spec.data.task_grid and spec.search != "grid":
        raise SpecError(
            f"{path}: data.task_grid: sweeping task knobs needs `search: grid`; run one {spec.search} sweep per "
            "task value instead (set data.task.<knob>)."
        )
    if spec.data.task_grid and not spec.data.source.startswith("builtin:"):
        raise SpecError(f"{path}: data.task_grid: task knobs exist only for data.source: builtin:synthetic.")
    if spec.search == "grid":
        if spec.num_samples is not None:
            raise SpecError(
                f"{path}: num_samples: grid search runs every grid point once per seed, so num_samples "
                "does not apply. Remove it (repeat with `seeds: [0, 1, 2]`), or set `search: random` / "
                "`search: optuna`."
            )
        return
    if spec.num_samples is None:
        raise SpecError(
            f"{path}: num_samples: `search: {spec.search}` needs the number of trials per method entry, "
            "e.g. `num_samples: 16`."
        )
    if not any(e.spaces for e in search_plan(spec)):
        raise SpecError(
            f"{path}: search: `search: {spec.search}` but no hyperparameter is a range or choice. Give one, "
            "e.g. `hparams: {beta: {uniform: [1.0, 4.0]}}`, or set `search: grid`."
        )


def _metric_problem(spec: SweepSpec, metric: str, during_training: bool) -> str | None:
    """Why no trial of this sweep reports ``metric`` (at the time it is needed), or None."""
    reported = set(metrics.TRAINING)
    if spec.evaluation.every_steps:
        reported |= set(metrics.PERIODIC_EVAL)
    if during_training:
        if metric in reported:
            return None
        if metric in metrics.PERIODIC_EVAL:
            return (
                f"{metric!r} is reported during training only with held-out evaluation every few steps; "
                "add `evaluation: {every_steps: 10}`"
            )
        if metric in metrics.ALL:
            return (
                f"{metric!r} is reported only when a trial ends, so early stopping cannot compare trials on "
                f"it; use one reported during training: {', '.join(sorted(reported | set(metrics.PERIODIC_EVAL)))}"
                + ("" if spec.evaluation.every_steps else " (reward_* with `evaluation.every_steps`)")
            )
    else:
        if metric in metrics.GENERATION + metrics.ORACLE and not spec.evaluation.generate:
            return f"{metric!r} is reported only with `evaluation.generate: true`"
        if metric in metrics.ORACLE and spec.data.source != "builtin:synthetic":
            return f"{metric!r} needs the built-in task's oracle (`data.source: builtin:synthetic`)"
        if metric in metrics.ALL:
            return None
    hint = difflib.get_close_matches(metric, metrics.ALL, n=1)
    return (
        f"no trial reports {metric!r}"
        + (f" (did you mean {hint[0]!r}?)" if hint else "")
        + f"; metrics: {', '.join(metrics.ALL)}"
    )


def scheduler_metric(spec: SweepSpec) -> tuple[str, str]:
    """The metric and mode the early-stopping scheduler compares trials on."""
    s = spec.scheduler
    metric = s.metric or spec.metric
    mode = s.mode or (spec.mode if metric == spec.metric else metrics.natural_mode(metric))
    return metric, mode


def _check_metrics(path: Path, spec: SweepSpec) -> None:
    problem = _metric_problem(spec, spec.metric, during_training=False)
    if problem:
        raise SpecError(f"{path}: metric: {problem}. Write one of the metrics a trial reports.")
    if spec.scheduler.type != "none":
        metric, _ = scheduler_metric(spec)
        problem = _metric_problem(spec, metric, during_training=True)
        if problem:
            field = "scheduler.metric" if spec.scheduler.metric else "scheduler.metric (default: `metric`)"
            raise SpecError(f"{path}: {field}: {problem}.")


def _check_data_file(path: Path, data: DataConfig) -> None:
    """A local data file must exist and have the prompt/chosen/rejected fields: checked before launching."""
    source = Path(data.source).expanduser()
    if data.source.startswith("builtin:") or source.suffix not in data_mod.LOCAL_FORMATS:
        return  # the built-in task, or a hub id (not checked offline)
    if not source.is_file():
        raise SpecError(
            f"{path}: data.source: {data.source!r} does not exist. Give an existing .jsonl/.json/.parquet "
            "file, a hub dataset id, or builtin:synthetic."
        )
    try:
        columns = data_mod.file_columns(source)
    except data_mod.DataError as e:
        raise SpecError(f"{path}: data.source: {e}.") from None
    missing = [f for f in data.fields if f not in columns]
    if missing:
        raise SpecError(
            f"{path}: data.source: {data.source} has no field(s) {missing}; its fields are {columns}. "
            "Rename the columns, or map them with `data.fields: [<prompt>, <chosen>, <rejected>]`."
        )


def check_deepspeed(path: Path, spec: SweepSpec) -> None:
    """A ``deepspeed`` section needs several workers; a user's DeepSpeed file must exist and agree with the sweep."""
    if spec.deepspeed is None:
        return
    if spec.resources.workers == 1:
        raise SpecError(
            f"{path}: deepspeed: applies to multi-worker trials, but resources.workers is 1. "
            "Set resources.workers (e.g. 8 with gpus_per_worker: 1) or remove the deepspeed section."
        )
    if spec.deepspeed.config is None:
        return
    file = Path(spec.deepspeed.config).expanduser()
    file = file if file.is_absolute() else path.parent / file
    try:
        user = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SpecError(
            f"{path}: deepspeed.config: cannot read {file} as a JSON DeepSpeed config ({e}). "
            "Give the path of a JSON file, relative to the sweep file or absolute."
        ) from None
    if not isinstance(user, dict):
        raise SpecError(
            f"{path}: deepspeed.config: {file} is not a JSON object. Write a DeepSpeed config object."
        )
    spec.deepspeed.config = str(file.resolve())
    for i, entry in enumerate(spec.methods):
        for point in _grid_points(entry.training):
            training = {**spec.training.model_dump(), **point}
            try:
                dsconfig.merged(
                    user,
                    dsconfig.generated(
                        training, spec.deepspeed.model_dump(), spec.resources.workers, "float32", False
                    ),
                )
            except dsconfig.DeepSpeedConfigError as e:
                raise SpecError(f"{path}: deepspeed.config ({file}, for methods.{i}): {e}.") from None


def deepspeed_settings(spec: SweepSpec) -> dict[str, Any] | None:
    """The trial configs' ``deepspeed`` entry: the section, with the user's JSON file inlined (workers need no file)."""
    if spec.resources.workers == 1:
        return None
    section = spec.deepspeed or DeepSpeedSection()
    user = json.loads(Path(section.config).read_text(encoding="utf-8")) if section.config else None
    return {**section.model_dump(), "user_config": user}


def _grid_points(values: dict[str, Value]) -> list[dict[str, Any]]:
    """Cartesian product of the grid/choice values; fixed values pass through; ranges give both ends
    (only validation sees ranges: grid search refuses them)."""
    keys = list(values)
    options = []
    for k in keys:
        v = values[k]
        if isinstance(v, Space):
            options.append(list(v.values))
        else:
            options.append([v])
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*options)]


def setting_key(hparams: dict[str, Any], training: dict[str, Any]) -> str:
    """A readable, stable name of one setting (hyperparameters and training overrides)."""
    parts = [f"{k}={hparams[k]}" for k in sorted(hparams)] + [f"{k}={training[k]}" for k in sorted(training)]
    return ",".join(parts) or "default"


def expand(spec: SweepSpec) -> list[dict[str, Any]]:
    """Trial configs: every method entry x its grid points x seeds, in file order."""
    trials = []
    shared = {
        "sweep": spec.name,
        "model": spec.model.model_dump(),
        "data": spec.data.model_dump(),
        "evaluation": spec.evaluation.model_dump(),
        "cache_dir": spec.cache_dir,
        "resources": spec.resources.model_dump(),
        "deepspeed": deepspeed_settings(spec),
        "metric": spec.metric,  # recorded for the report's best-setting rule
        "mode": spec.mode,
    }
    data = spec.data.model_dump()
    for task in task_points(spec.data):
        # A swept task knob is part of the setting's name, so the report keeps its values apart.
        knobs = ",".join(f"{k}={task[k]}" for k in spec.data.task_grid)
        for entry in spec.methods:
            for hp in _grid_points(entry.hparams):
                for tr in _grid_points(entry.training):
                    full_hp = losses.validate_hparams(entry.method, hp)
                    full_hp.pop("gamma_beta_ratio", None)  # resolved into gamma; passing both is an error
                    setting = setting_key(hp, tr)
                    if knobs:
                        setting = knobs if setting == "default" else f"{knobs},{setting}"
                    for seed in spec.seeds:
                        trials.append(
                            {
                                **shared,
                                "data": {**data, "task": task},
                                "label": entry.label,
                                "method": entry.method,
                                "hparams": full_hp,
                                "setting": setting,
                                "reference": entry.reference
                                if losses.needs_reference(entry.method)
                                else None,
                                "training": {**spec.training.model_dump(), **tr},
                                "seed": seed,
                                "index": len(trials),
                            }
                        )
    return trials


@dataclass
class SearchEntry:
    """One method entry of a random / optuna sweep: its spaces and how many trials it gets."""

    position: int  # in the sweep file's `methods`
    entry: MethodEntry
    spaces: dict[str, Space]  # "hparams.beta", "training.learning_rate", ... -> its space
    trials: int  # num_samples; one per seed when nothing is searched (a fixed baseline)


def search_plan(spec: SweepSpec) -> list[SearchEntry]:
    plan = []
    for i, entry in enumerate(spec.methods):
        spaces = {
            f"{section}.{key}": value
            for section in ("hparams", "training")
            for key, value in getattr(entry, section).items()
            if isinstance(value, Space)
        }
        plan.append(SearchEntry(i, entry, spaces, (spec.num_samples or 1) if spaces else len(spec.seeds)))
    return plan


def search_order(plan: list[SearchEntry]) -> list[tuple[int, int]]:
    """(plan position, sample number) of each trial in the order they are suggested: entries interleaved,
    so a sweep cut short by a budget or an interruption has tried every method."""
    order = []
    for k in range(max(e.trials for e in plan)):
        order += [(j, k) for j, e in enumerate(plan) if k < e.trials]
    return order


def sampled_seed(spec: SweepSpec, sample_number: int) -> int:
    """Seeds are not searched: draw k of an entry trains with seeds[k mod len(seeds)]."""
    return spec.seeds[sample_number % len(spec.seeds)]


def sampled_trial(
    spec: SweepSpec, entry: SearchEntry, sample: dict[str, Any], sample_number: int, index: int
) -> dict[str, Any]:
    """The trial config of one draw (``sample``: space path -> value), made by ``expand`` like a grid
    trial's. Drawn floats are rounded to 4 significant digits so ``setting`` names the values used."""
    hp, tr = dict(entry.entry.hparams), dict(entry.entry.training)
    for path, value in sample.items():
        section, key = path.split(".", 1)
        if isinstance(value, float):
            value = float(f"{value:.4g}")
        (hp if section == "hparams" else tr)[key] = value
    one = entry.entry.model_copy(update={"hparams": hp, "training": tr})
    trial = expand(spec.model_copy(update={"methods": [one], "seeds": [sampled_seed(spec, sample_number)]}))[
        0
    ]
    trial["index"] = index
    return trial


def json_schema() -> str:
    schema = SweepSpec.model_json_schema()
    # `scheduler: asha` is accepted as short for `scheduler: {type: asha}`.
    scheduler = schema["properties"]["scheduler"]
    ref = scheduler.pop("$ref", None)
    scheduler["anyOf"] = [{"$ref": ref} if ref else scheduler.pop("allOf")[0], {"enum": ["none", "asha"]}]
    return json.dumps(schema, indent=2)
