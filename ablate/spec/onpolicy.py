"""The sweep file's ``data.on_policy`` section: on-policy preference pairs built once per sweep from the
start point's own answers (SimPO v0.2's recipe: sample each prompt several times, judge every answer,
keep the best as chosen and the worst as rejected; ``ablate.onpolicy.build`` builds them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ablate.spec.base import Strict
from ablate.spec.evaluation import JudgeSpec

OFF_POLICY, ON_POLICY = "off_policy", "on_policy"
# How a data variant shows in trial labels: "SimPO [on-policy]".
VARIANT_LABELS = {OFF_POLICY: "off-policy", ON_POLICY: "on-policy"}


class SamplingConfig(Strict):
    """How the start point answers each prompt (SimPO v0.2: temperature 0.8, top_p 0.95, 5 seeds)."""

    temperature: float = Field(0.8, gt=0, description="Sampling temperature (> 0: the samples must differ).")
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int | None = Field(
        None, ge=1, description="Token budget per answer. Default: data.max_length - data.max_prompt_length."
    )
    seed: int = Field(0, description="Sample k of every prompt is drawn with seed `seed + k` (unless `seeds`).")
    seeds: list[int] | None = Field(
        None, description="One seed per sample, e.g. [13, 21, 42, 79, 100] (SimPO v0.2); distinct."
    )
    stop_token_ids: list[int] = Field(default_factory=list, description="Token ids that end an answer, besides EOS.")


class OnPolicyConfig(Strict):
    prompts: str = Field(
        "train",
        description="train (the training split's distinct prompts), or a .jsonl/.json/.parquet file, hf:// file "
        "or hub data set with a prompt field (`prompt_field`).",
    )
    prompt_field: str = Field("prompt", description="The prompt field of `prompts` (not train).")
    prompt_split: str = Field("train", description="The split of a hub data set given as `prompts`.")
    num_prompts: int | None = Field(None, ge=1, description="Use the first N prompts only. Default: all.")
    samples: int = Field(5, ge=2, description="Answers per prompt (at least 2: a pair needs two).")
    generation: SamplingConfig = Field(default_factory=SamplingConfig)
    judge: JudgeSpec = Field(description="Scores every answer: any judge of `evaluation.judges`.")
    pick: Literal["best_worst", "best_random"] = Field(
        "best_worst", description="chosen: the best-scored answer; rejected: the worst (or a random other one)."
    )
    min_margin: float = Field(0.0, ge=0, description="Drop pairs whose chosen and rejected scores differ by less.")
    dedupe: bool = Field(True, description="Drop repeated answers of a prompt before picking.")
    variants: list[Literal["off_policy", "on_policy"]] = Field(
        default_factory=lambda: [ON_POLICY],
        min_length=1,
        description="Data arms of every method entry: on_policy (the built pairs), off_policy (the data set's own "
        "pairs). [off_policy, on_policy] compares them in one sweep.",
    )
    shard_size: int = Field(64, ge=1, description="Prompts per shard (the unit written, resumed and farmed out).")
    batch_size: int = Field(64, ge=1, description="Prompts generated together (KV cache, left-padded).")
    built: str | None = Field(None, description="Set by ablate: the built pairs file a trial trains on.")

    @field_validator("judge", mode="before")
    @classmethod
    def _judge_shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("variants")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("variants: list each of off_policy and on_policy once")
        return v

    @model_validator(mode="after")
    def _seeds(self) -> OnPolicyConfig:
        seeds = self.generation.seeds
        if seeds is not None and (len(seeds) != self.samples or len(set(seeds)) != len(seeds)):
            raise ValueError(f"generation.seeds: give {self.samples} distinct seeds (one per sample), got {seeds}")
        return self

    def sample_seeds(self) -> list[int]:
        return list(self.generation.seeds or [self.generation.seed + k for k in range(self.samples)])
