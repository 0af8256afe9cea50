"""The typed, frozen config of one trial, parsed once from the plain dict Ray Tune stores as the
trial's ``params.json`` (made by ``ablate.spec.expand``; the dict stays plain for Ray and for the
analysis). Its sections are the sweep file's own models (``ablate.spec.schema``), so every default is
written once, and a misspelt key fails when the trial starts, not in the middle of it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ablate.spec.schema import (
    DataConfig,
    DeepSpeedSettings,
    EvalConfig,
    LoraConfig,
    ModelConfig,
    ResourceAmounts,
    TrainingConfig,
)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StartPoint(_Frozen):
    """Where the trial starts (``ablate.trial.startpoint.prepare``): the SFT model, and the file of its
    generations on the held-out prompts (the win-rate baseline; built-in task only)."""

    path: str
    baseline: str | None = None


class TrialDeepSpeed(DeepSpeedSettings):
    """The ``deepspeed`` section of a multi-worker trial, with the user's JSON config inlined."""

    user_config: dict[str, Any] | None = None


class TrialConfig(_Frozen):
    sweep: str
    index: int  # in the expanded sweep, or stage (``--dry-run`` shows it); the fault hook targets it
    label: str
    method: str
    hparams: dict[str, float | bool]  # every hyperparameter, defaults filled in (losses.validate_hparams)
    setting: str
    point: dict[str, dict[str, Any]] | None = None  # the sweep file's values `setting` names (spec.expand)
    stage: str | None = None  # a staged sweep's stage (``ablate.sweep.staged``); the fault hook can target it
    replay: str | None = None  # an identical finished trial of an earlier stage, replayed (ablate.trial.record.replay)
    reference: Literal["online", "precomputed"] | None  # None: a reference-free method
    seed: int
    model: ModelConfig
    data: DataConfig
    training: TrainingConfig
    lora: LoraConfig | None = None  # a LoRA adapter instead of full fine-tuning (``ablate.trial.lora``)
    evaluation: EvalConfig
    resources: ResourceAmounts
    deepspeed: TrialDeepSpeed | None = None
    cache_dir: str
    start: StartPoint
    metric: str = "reward_accuracy"
    mode: Literal["max", "min"] = "max"
    claims: list[dict[str, Any]] = []  # the sweep file's claims, for the report (ablate.spec.claims)
    # Where the training and held-out pairs come from and how many (``ablate.data.sources.record``).
    data_split: dict[str, Any] | None = None
    # Pins and fingerprints of the trial's inputs, computed once by the driver (``ablate.provenance``).
    provenance: dict[str, Any] | None = None

    @property
    def distributed(self) -> bool:
        """Trained by Ray Train workers with DeepSpeed (``ablate.trial.backends.deepspeed``)."""
        return self.deepspeed is not None


def parse(cfg: dict | TrialConfig) -> TrialConfig:
    return cfg if isinstance(cfg, TrialConfig) else TrialConfig.model_validate(cfg)
