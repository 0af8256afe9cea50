"""The sweep file's ``model`` section: the policy to start from, and the LoRA adapter trained instead of
the whole policy (``ablate.trial.lora``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ablate.models import TinyModelConfig
from ablate.spec.base import Space, Strict, Value


class ModelConfig(Strict):
    name_or_path: str = Field("builtin:tiny", description="Hub id, local directory, or builtin:tiny.")
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False


class LoraConfig(Strict):
    """A LoRA adapter (peft) trained instead of the whole policy; the start point stays frozen."""

    r: int = Field(16, ge=1, description="Rank of the adapter's two matrices.")
    alpha: float = Field(32, gt=0, description="Scaling: the adapter adds (alpha / r) B A x to a layer's output.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter's input while training.")
    target_modules: str | list[str] = Field(
        "all-linear",
        description="Layers that get an adapter: all-linear (every linear layer but the output head) or a list "
        "of module names, e.g. [q_proj, v_proj].",
    )


LoraValue = Value | list[str]


class LoraSection(Strict):
    """``model.lora`` in the sweep file: a ``LoraConfig`` whose fields may be search spaces."""

    r: int | Space = Field(16, description="Rank of the adapter's two matrices.")
    alpha: float | Space = Field(32, description="Scaling: the adapter adds (alpha / r) B A x.")
    dropout: float | Space = Field(0.0, description="Dropout on the adapter's input while training.")
    target_modules: str | list[str] | Space = Field(
        "all-linear", description="all-linear (every linear layer but the output head) or module names."
    )

    def values(self) -> dict[str, LoraValue]:
        return {k: getattr(self, k) for k in LoraSection.model_fields}


class SweepModelConfig(ModelConfig):
    """The sweep file's ``model``: a trial's ``ModelConfig`` plus the LoRA adapter of every method entry
    (an entry's own ``lora`` overrides it; ``lora: false`` trains the whole policy)."""

    lora: LoraSection | None = Field(
        None,
        description="Train a LoRA adapter (peft) instead of the whole policy: {r, alpha, dropout, target_modules}; "
        "each may be a search space. Default: none (full fine-tuning).",
    )
