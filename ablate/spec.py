"""The sweep file: its schema (pydantic), loading with errors that name file, field and fix,
and expansion of methods x grids x seeds into trial configs. Knows nothing of Ray."""

from __future__ import annotations

import difflib
import itertools
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ablate import dsconfig, losses
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

    @model_validator(mode="after")
    def _lengths(self) -> DataConfig:
        if self.max_prompt_length >= self.max_length:
            raise ValueError("max_prompt_length must be smaller than max_length")
        return self


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
    search: Literal["grid"] = "grid"
    metric: str = Field("reward_accuracy", description="Metric that selects each method's best setting.")
    mode: Literal["max", "min"] = "max"
    max_concurrent: int | None = Field(None, ge=1)
    max_failures: int = Field(0, ge=0, description="Retries of a failing trial.")


def _field_path(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) if loc else "(top level)"


def _format_validation(path: Path, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = _field_path(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(e["loc"][:-1])
            hint = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
            msg = (
                "unknown key"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
                + f" Allowed here: {', '.join(allowed)}"
            )
        elif e["type"] == "missing":
            msg = "this field is required"
        lines.append(f"{where}: {msg}")
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
    """What the schema alone cannot check: each method's hyperparameters, and that the model exists."""
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
                    _format_validation(path, e).replace(": invalid", f": methods.{i}.training invalid")
                ) from None
        if spec.search == "grid":
            for key, value in {**entry.hparams, **entry.training}.items():
                if isinstance(value, Space) and value.kind not in ("grid", "choice"):
                    raise SpecError(
                        f"{path}: methods.{i}: {key} is a {value.kind} range, which grid search cannot enumerate. "
                        "Use `grid: [...]` or set `search: random` / `search: optuna`."
                    )
    check_deepspeed(path, spec)
    if not is_builtin(spec.model.name_or_path) and not model_exists(spec.model.name_or_path):
        raise SpecError(
            f"{path}: model.name_or_path: {spec.model.name_or_path!r} is not a model directory (no config.json). "
            "Give a local directory saved with save_pretrained, a hub id, or builtin:tiny."
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
    """Cartesian product of the grid/choice values; fixed values pass through; ranges take their low end."""
    keys = list(values)
    options = []
    for k in keys:
        v = values[k]
        if isinstance(v, Space):
            options.append(list(v.values) if v.kind in ("grid", "choice") else [v.values[0]])
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
    for entry in spec.methods:
        for hp in _grid_points(entry.hparams):
            for tr in _grid_points(entry.training):
                full_hp = losses.validate_hparams(entry.method, hp)
                full_hp.pop("gamma_beta_ratio", None)  # resolved into gamma; passing both is an error
                for seed in spec.seeds:
                    trials.append(
                        {
                            **shared,
                            "label": entry.label,
                            "method": entry.method,
                            "hparams": full_hp,
                            "setting": setting_key(hp, tr),
                            "reference": entry.reference if losses.needs_reference(entry.method) else None,
                            "training": {**spec.training.model_dump(), **tr},
                            "seed": seed,
                            "index": len(trials),
                        }
                    )
    return trials


def json_schema() -> str:
    return json.dumps(SweepSpec.model_json_schema(), indent=2)
