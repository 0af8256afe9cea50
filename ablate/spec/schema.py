"""The sweep file's schema: pydantic models of every section, frozen once validated.

Knows nothing of Ray and reads no file; ``ablate.spec.load`` reads and validates a sweep file,
``ablate.spec.checks`` checks what the schema alone cannot, ``ablate.spec.expand`` turns a spec
into trial configs. ``ablate.trial_config`` reuses these section models, so every default lives here.
"""

from __future__ import annotations

import difflib
import itertools
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ablate import losses
from ablate.models import TinyModelConfig
from ablate.synthetic import TaskConfig

DISPLAY = {
    "simpo": "SimPO", "dpo": "DPO", "ipo": "IPO", "cpo": "CPO", "kto": "KTO", "orpo": "ORPO",
    "rdpo": "R-DPO", "rrhf": "RRHF", "slic_hf": "SLiC-HF", "sft": "SFT",
}  # fmt: skip


class _Strict(BaseModel):
    # Frozen: a validated spec is a value; changes go through ``model_copy(update=...)``.
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class ResourceAmounts(_Strict):
    """What a trial reserves; ``Resources`` adds the sweep file's check of which fields were written."""

    cpus: float = Field(1, gt=0, description="CPUs per trial.")
    gpus: float = Field(0, ge=0, description="GPUs per trial.")
    workers: int = Field(
        1,
        ge=1,
        description="Ray Train workers per trial; more than 1, or a `deepspeed` section, trains with DeepSpeed.",
    )
    cpus_per_worker: float = Field(1, gt=0, description="CPUs per worker (DeepSpeed trials).")
    gpus_per_worker: float = Field(0, ge=0, description="GPUs per worker (DeepSpeed trials).")


class Resources(ResourceAmounts):
    def check_kind(self, deepspeed: bool) -> None:
        """cpus/gpus size a single-process trial, *_per_worker a DeepSpeed one (``workers > 1``, or a
        ``deepspeed`` section); writing the other kind's fields is a mistake."""
        if deepspeed and {"cpus", "gpus"} & self.model_fields_set:
            raise ValueError(
                "a DeepSpeed trial (workers > 1 or a deepspeed section) takes per-worker resources "
                "(cpus_per_worker, gpus_per_worker) instead of cpus/gpus"
            )
        if not deepspeed and {"cpus_per_worker", "gpus_per_worker"} & self.model_fields_set:
            raise ValueError(
                "cpus_per_worker/gpus_per_worker apply to DeepSpeed trials (workers > 1, or a deepspeed "
                "section); for a single-process trial use cpus/gpus"
            )


class DeepSpeedSettings(_Strict):
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
    def _offload_needs_zero(self) -> DeepSpeedSettings:
        if self.offload == "all" and self.stage != 3:
            raise ValueError("offload: all (parameters too) needs stage: 3")
        if self.offload == "optimizer" and self.stage == 0:
            raise ValueError("offload: optimizer needs ZeRO stage 1, 2 or 3")
        return self


class DeepSpeedSection(DeepSpeedSettings):
    @model_validator(mode="after")
    def _own_file_or_generated(self) -> DeepSpeedSection:
        if self.config is not None and {"stage", "offload"} & self.model_fields_set:
            raise ValueError("give either config (your own DeepSpeed JSON) or stage/offload, not both")
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
    order: Literal["interleaved", "file"] = Field(
        "interleaved",
        description="Run order of a grid sweep's trials. interleaved: each method's trials (settings and seeds) "
        "in a seeded random order, spread evenly over the sweep, so no method runs systematically later "
        "(costs measured on a shared or warming machine stay comparable); file: in the order of the file's "
        "expansion (method entries, then grid points, then seeds).",
    )
    order_seed: int = Field(0, description="Seed of the interleaved order (`order: interleaved`).")

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler_shorthand(cls, v: Any) -> Any:
        return {"type": v} if isinstance(v, str) else v

    @property
    def uses_deepspeed(self) -> bool:
        """Trials run on Ray Train workers with DeepSpeed: several workers, or one with a deepspeed
        section (e.g. ZeRO-3 with CPU offload on one GPU)."""
        return self.resources.workers > 1 or self.deepspeed is not None

    @model_validator(mode="after")
    def _resources_fit_the_trial(self) -> SweepSpec:
        try:
            self.resources.check_kind(self.uses_deepspeed)
        except ValueError as e:
            raise ValueError(f"resources: {e}") from None
        return self


def json_schema() -> str:
    schema = SweepSpec.model_json_schema()
    # `scheduler: asha` is accepted as short for `scheduler: {type: asha}`.
    scheduler = schema["properties"]["scheduler"]
    ref = scheduler.pop("$ref", None)
    scheduler["anyOf"] = [{"$ref": ref} if ref else scheduler.pop("allOf")[0], {"enum": ["none", "asha"]}]
    return json.dumps(schema, indent=2)
