"""The sweep file's schema: pydantic models of every section, frozen once validated.

Knows nothing of Ray and reads no file; ``ablate.spec.load`` reads and validates a sweep file,
``ablate.spec.checks`` checks what the schema alone cannot, ``ablate.spec.expand`` turns a spec
into trial configs. ``ablate.trial.config`` reuses these section models, so every default lives here.
"""

from __future__ import annotations

import difflib
import itertools
import json
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ablate import losses
from ablate.data.synthetic import TaskConfig
from ablate.spec.base import Space, Strict, Value  # noqa: F401 (Space: re-exported)
from ablate.spec.claims import Claim
from ablate.spec.evaluation import EvalConfig
from ablate.spec.model import LoraConfig, LoraSection, LoraValue, ModelConfig, SweepModelConfig  # noqa: F401
from ablate.spec.onpolicy import OnPolicyConfig
from ablate.spec.resources import (  # noqa: F401
    DeepSpeedSection,
    DeepSpeedSettings,
    ResourceAmounts,
    Resources,
)
from ablate.spec.tracking import TrackingConfig

DISPLAY = {
    "simpo": "SimPO", "dpo": "DPO", "ipo": "IPO", "cpo": "CPO", "kto": "KTO", "orpo": "ORPO",
    "rdpo": "R-DPO", "rrhf": "RRHF", "slic_hf": "SLiC-HF", "sft": "SFT",
}  # fmt: skip


class DataConfig(Strict):
    source: str = Field(
        "builtin:synthetic",
        description="builtin:synthetic, a .jsonl/.json/.parquet file, a directory written by `datasets`' "
        "save_to_disk, or a hub id. Also {train: FILE, eval: FILE}: short for source + eval_source.",
    )
    eval_source: str | None = Field(
        None,
        description="Where the held-out pairs come from when they are not in `source`: a local file or "
        "save_to_disk directory (its `eval_split` if it has splits), or a hub id. Default: `source`'s "
        "`eval_split`, or, for a single file or table, its last tenth.",
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
    on_policy: OnPolicyConfig | None = Field(
        None, description="Train on pairs built from the start point's own judged answers (ablate.onpolicy.build)."
    )

    @model_validator(mode="before")
    @classmethod
    def _train_eval_pair(cls, v: Any) -> Any:
        # `source: {train: a.jsonl, eval: b.jsonl}` is short for `source: a.jsonl, eval_source: b.jsonl`.
        if isinstance(v, dict) and isinstance(v.get("source"), dict):
            pair = dict(v["source"])
            if set(pair) != {"train", "eval"}:
                raise ValueError("source as a mapping takes exactly `train` and `eval` (file or directory each)")
            if v.get("eval_source") is not None:
                raise ValueError("give the held-out file once: `source: {train, eval}` or `eval_source`")
            v = {**v, "source": pair["train"], "eval_source": pair["eval"]}
        return v

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


class SFTConfig(Strict):
    """Training of the start point (built-in model only; real users pass an SFT checkpoint)."""

    epochs: int = Field(6, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    seed: int = 0


class TrainingConfig(Strict):
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


class SchedulerConfig(Strict):
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


class MethodEntry(Strict):
    method: str
    name: str | None = Field(None, description="Label in reports; defaults to the method's display name.")
    hparams: dict[str, Value] = Field(default_factory=dict)
    reference: Literal["online", "precomputed"] = "precomputed"
    training: dict[str, Value] = Field(
        default_factory=dict, description="Overrides of the shared training settings."
    )
    lora: dict[str, LoraValue] | bool | None = Field(
        None,
        description="This entry's LoRA adapter: overrides of `model.lora` (values or spaces), true for "
        "`model.lora` or the defaults, false for full fine-tuning. Default: as `model.lora`.",
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


class StageFrom(Strict):
    """Where a stage's fixed values come from: an earlier stage's best settings of each method entry."""

    stage: str | None = Field(None, description="The earlier stage to take winners from (default: the previous one).")
    top_k: int = Field(
        1, ge=1, description="How many of each method entry's best settings carry over (1: `from: best`)."
    )


def one_folder(name: str) -> str:
    """A sweep's or a stage's name is its folder: one path component that stays where it is put, so
    ``--overwrite`` can never reach a parent (``..``) or every sweep at once (``.``)."""
    if name.strip(".") == "":
        raise ValueError(
            f"{name!r} is not a folder name of its own (it names the storage or its parent); use letters, "
            "digits, `_`, `-` or `.`, e.g. `gamma`"
        )
    return name


class Stage(Strict):
    """One stage of a staged sweep (``stages:``): what it searches, where the rest comes from, and its
    own search settings (each defaults to the sweep's). ``ablate.spec.stages`` turns it into a sweep."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$", description="The stage's folder under <storage>/<sweep>/; unique."
    )

    _one_folder = field_validator("name")(lambda cls, v: one_folder(v))
    params: list[str] = Field(
        default_factory=list,
        description="What this stage searches: hyperparameter or training names (beta, learning_rate), "
        "`hparams` (every hyperparameter given as a grid or space) or `training` (every training override "
        "given as one). Other grids and spaces are held at the winner of `from`, else at their default.",
    )
    from_: StageFrom | None = Field(
        None,
        alias="from",
        description="`best`, `{top_k: 3}` or `{stage: NAME, top_k: 1}`: each method entry's best "
        "setting(s) of an earlier stage by that stage's metric (seed mean); none on the first stage.",
    )
    training: dict[str, Value] = Field(
        default_factory=dict,
        description="Training values or spaces for every method entry in this stage, e.g. "
        "{learning_rate: {grid: [...]}}; an entry's own training value wins.",
    )
    seeds: list[int] | None = Field(None, min_length=1, description="Default: the sweep's `seeds`.")
    search: Literal["grid", "random", "optuna"] | None = Field(None, description="Default: the sweep's.")
    num_samples: int | None = Field(None, ge=1, description="random / optuna: trials per method entry.")
    search_seed: int | None = None
    scheduler: SchedulerConfig | None = None
    metric: str | None = Field(None, description="Selects this stage's winners (default: the sweep's).")
    mode: Literal["max", "min"] | None = None
    max_concurrent: int | None = Field(None, ge=1)

    @field_validator("from_", mode="before")
    @classmethod
    def _from_shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v != "best":
                raise ValueError(
                    f"{v!r} is not a stage reference; write `from: best`, `from: {{top_k: 3}}` or "
                    "`from: {stage: NAME}`"
                )
            return {}
        return v

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler_shorthand(cls, v: Any) -> Any:
        return {"type": v} if isinstance(v, str) else v


class AdaptiveSeeds(Strict):
    """``seeds: {start: 2, max: 8}``: every setting starts with seeds 0..start-1; after each round only
    the settings of claims still undecided get one more seed, up to ``max`` (ablate.sweep.adaptive)."""

    start: int = Field(ge=1, description="Seeds every setting runs in the first round.")
    max: int = Field(ge=1, description="Most seeds of any setting.")

    @model_validator(mode="after")
    def _max_at_least_start(self) -> AdaptiveSeeds:
        if self.max < self.start:
            raise ValueError(f"max ({self.max}) is below start ({self.start}); write max >= start")
        return self


class SweepSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="The sweep's folder under `storage`.")
    storage: str = Field("results", description="Local path or URI (s3://, gs://) where results go.")
    cache_dir: str = Field(
        ".cache/ablate", description="Where the SFT start point and tokenized data are cached."
    )
    methods: list[MethodEntry] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    model: SweepModelConfig = Field(default_factory=SweepModelConfig)
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
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig,
        description="Log every trial to MLflow, Weights & Biases and/or TensorBoard (needs the `tracking` "
        "extra: pip install 'ablate[tracking]').",
    )
    reuse_workers: bool = Field(
        True,
        description="Run trial after trial in the same worker process (imports, start point and tokenized "
        "data loaded once per worker). false: a fresh process per trial (~4 s more per trial), so nothing "
        "carries over and Ray cannot move a waiting trial onto another node's free worker.",
    )
    stages: list[Stage] = Field(
        default_factory=list,
        description="A staged sweep: stages run in order, each its own Ray Tune experiment under "
        "<storage>/<name>/<stage>/, later ones starting from earlier ones' winners (`from`).",
    )
    order: Literal["interleaved", "file"] = Field(
        "interleaved",
        description="Run order of a grid sweep's trials. interleaved: each method's trials (settings and seeds) "
        "in a seeded random order, spread evenly over the sweep, so no method runs systematically later "
        "(costs measured on a shared or warming machine stay comparable); file: in the order of the file's "
        "expansion (method entries, then grid points, then seeds).",
    )
    order_seed: int = Field(0, description="Seed of the interleaved order (`order: interleaved`).")
    claims: list[Claim] = Field(
        default_factory=list,
        description="Your own claims, tested in the report with the paper's findings (docs/reports.md#verdicts).",
    )

    adaptive_seeds: AdaptiveSeeds | None = Field(
        None, description="Set from `seeds: {start: 2, max: 8}` (adaptive seeds; `seeds` then holds the first round's)."
    )

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler_shorthand(cls, v: Any) -> Any:
        return {"type": v} if isinstance(v, str) else v

    _one_folder = field_validator("name")(lambda cls, v: one_folder(v))

    @model_validator(mode="before")
    @classmethod
    def _adaptive_seeds(cls, data: Any) -> Any:
        """``seeds: {start, max}`` → ``adaptive_seeds`` and the first round's seeds (0..start-1)."""
        if not isinstance(data, dict) or not isinstance(data.get("seeds"), dict):
            return data
        try:
            adaptive = AdaptiveSeeds.model_validate(data["seeds"])
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'seeds'}: {x['msg']}" for x in e.errors())
            raise ValueError(f"seeds: {problems}. Adaptive seeds are `seeds: {{start: 2, max: 8}}` (integers, "
                             "1 <= start <= max); or give a list of seeds, e.g. `seeds: [0, 1, 2]`") from None  # fmt: skip
        return {**data, "seeds": list(range(adaptive.start)), "adaptive_seeds": adaptive.model_dump()}

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
        if self.adaptive_seeds and (self.stages or self.search != "grid"):
            raise ValueError("seeds: adaptive seeds ({start, max}) run a grid sweep without stages; give a list of "
                             "seeds for a staged or random / optuna sweep")  # fmt: skip
        return self


def json_schema() -> str:
    schema = SweepSpec.model_json_schema()
    # `scheduler: asha` is accepted as short for `scheduler: {type: asha}`.
    scheduler = schema["properties"]["scheduler"]
    ref = scheduler.pop("$ref", None)
    scheduler["anyOf"] = [{"$ref": ref} if ref else scheduler.pop("allOf")[0], {"enum": ["none", "asha"]}]
    # A stage's `from: best` is short for `from: {top_k: 1}`; its `scheduler` takes the shorthand too.
    stage = schema["$defs"]["Stage"]["properties"]
    stage["from"]["anyOf"].append({"const": "best"})
    stage["scheduler"]["anyOf"].append({"enum": ["none", "asha"]})
    # `data.source: {train: FILE, eval: FILE}` is accepted as short for source + eval_source.
    source = schema["$defs"]["DataConfig"]["properties"]["source"]
    pair = {"type": "object", "properties": {"train": {"type": "string"}, "eval": {"type": "string"}},
            "required": ["train", "eval"], "additionalProperties": False}  # fmt: skip
    source["anyOf"] = [{"type": source.pop("type")}, pair]
    # `seeds: {start, max}`: adaptive seeds (stored in `adaptive_seeds`).
    seeds = schema["properties"]["seeds"]
    schema["properties"]["seeds"] = {"anyOf": [seeds, {"$ref": "#/$defs/AdaptiveSeeds"}], "description": "Seeds "
                                     "of every setting, or `{start, max}`: adaptive seeds (docs/sweep-files.md)."}  # fmt: skip
    return json.dumps(schema, indent=2)
