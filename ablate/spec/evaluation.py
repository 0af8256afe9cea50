"""The sweep file's ``evaluation`` section: held-out metrics, what is generated, and by whom it is judged."""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ablate.spec.base import Strict

BUILTIN_JUDGES = ("builtin:oracle", "builtin:reward-model")


class JudgeSpec(Strict):
    """One judge of the generations (``evaluation.judges``); a plain string is short for ``{name: ...}``."""

    name: str = Field(
        description="builtin:oracle, builtin:reward-model, or a sequence-classification reward model "
        "(hub id or local directory)."
    )
    label: str | None = Field(
        None, description="Name in metric names (win_rate@<label>); default: the name (a local directory's folder name)."
    )
    trust_remote_code: bool = Field(
        False, description="Run the judge's own model code (ArmoRM-style judges); only for code you have read."
    )
    max_length: int = Field(4096, ge=8, description="Tokens per judged prompt+response; longer inputs are left-truncated and counted.")
    batch_size: int = Field(8, ge=1)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    @field_validator("name")
    @classmethod
    def _known_builtin(cls, v: str) -> str:
        if v.startswith("builtin:") and v not in BUILTIN_JUDGES:
            hint = difflib.get_close_matches(v, BUILTIN_JUDGES, n=1)
            raise ValueError(
                f"unknown judge {v!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; built-in judges: {', '.join(BUILTIN_JUDGES)}, or give a reward model's hub id or directory"
            )
        return v

    @property
    def id(self) -> str:
        """The judge's name in metric names and files."""
        if self.label:
            return self.label
        if self.name.startswith(("/", ".", "~")):
            return self.name.rstrip("/").rsplit("/", 1)[-1]
        return self.name


class GenerationConfig(Strict):
    """How trials and the baseline generate on the evaluation prompts (the same settings for both)."""

    temperature: float = Field(0.0, ge=0, description="0: greedy; > 0: sampling at this temperature.")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1, description="Default: evaluation.max_new_tokens.")
    stop_token_ids: list[int] = Field(default_factory=list, description="Token ids that end a generation, besides EOS.")
    seed: int = Field(0, description="Seed of sampling (the same for every trial and the baseline).")


class EvalConfig(Strict):
    batch_size: int = Field(64, ge=1)
    generate: bool = True
    num_prompts: int = Field(128, ge=1, description="Evaluation prompts to generate on (the first ones).")
    max_new_tokens: int = Field(16, ge=1)
    prompts: str = Field(
        "held_out",
        description="held_out (the held-out pairs' prompts), or a .jsonl/.json/.parquet file, hf:// file or hub "
        "dataset with an instruction field (e.g. AlpacaEval's 805 instructions).",
    )
    prompt_field: str = Field("instruction", description="The prompt field of `prompts` (not held_out).")
    prompt_split: str = Field("eval", description="The split of a hub dataset given as `prompts`.")
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    judges: list[JudgeSpec] | None = Field(
        None,
        description="Judges of the generations against the start point's: win_rate@<judge> and "
        "lc_win_rate@<judge> per judge. Default: [builtin:oracle] on the built-in task, none elsewhere.",
    )
    every_steps: int | None = Field(
        None,
        ge=1,
        description="Also report held-out reward_accuracy and reward_margin (no generation) at the first "
        "logging step at or after every multiple of this many training steps; needed by `scheduler: asha` "
        "on those metrics.",
    )

    @field_validator("judges", mode="before")
    @classmethod
    def _judge_shorthand(cls, v: Any) -> Any:
        return [{"name": j} if isinstance(j, str) else j for j in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _distinct_judges(self) -> EvalConfig:
        ids = [j.id for j in self.judges or []]
        if len(set(ids)) != len(ids):
            raise ValueError(f"judges: two judges share a name ({', '.join(ids)}); give one a `label`")
        return self

    @property
    def new_tokens(self) -> int:
        """The generation budget: generation.max_new_tokens, else max_new_tokens."""
        return self.generation.max_new_tokens or self.max_new_tokens
