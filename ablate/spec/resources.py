"""What a trial reserves (``resources``) and the DeepSpeed settings of multi-worker trials (``deepspeed``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ablate.spec.base import Strict


class ResourceAmounts(Strict):
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


class DeepSpeedSettings(Strict):
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
