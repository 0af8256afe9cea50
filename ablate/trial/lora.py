"""LoRA policies (peft): an adapter injected into the loaded start point, trained instead of it.

``attach`` injects the adapter into the model in place (``peft.inject_adapter_in_model``): the model
stays the Hugging Face model it was, so the trial's fast paths (the LM head on response positions
only, one row per pair) apply unchanged, and only the adapter's weights require gradients. They are
kept in float32, as a full policy's master weights are (``ablate.models.master_dtype``): at
preference-optimisation learning rates a bf16 adapter would drop most updates.

The reference of a LoRA policy is the same model with its adapter switched off (``adapter_off``):
the frozen start point, without a second copy in memory. ``adapter_files`` writes the trained adapter
in peft's format, so ``peft.PeftModel.from_pretrained(start_point, trial_dir)`` loads it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import torch

from ablate.spec.schema import LoraConfig

ADAPTER = "default"  # peft's name of a model's only adapter
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def peft_config(cfg: LoraConfig, base_model: str | None = None):
    """The ``peft.LoraConfig`` of a trial's ``lora`` section."""
    import peft

    return peft.LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model,
    )


def attach(model: torch.nn.Module, cfg: LoraConfig, base_model: str | None = None) -> torch.nn.Module:
    """Inject a fresh adapter (B = 0, so the model still computes the start point) into ``model`` in place;
    freeze everything else. Returns the same model, in train mode."""
    import peft

    model.requires_grad_(False)
    model = peft.inject_adapter_in_model(peft_config(cfg, base_model), model, adapter_name=ADAPTER)
    for p in adapter_parameters(model):
        p.data = p.data.float()  # float32 whatever the frozen weights' dtype
        p.requires_grad_(True)
    checkpointing = getattr(model, "is_activation_checkpointing", None)  # transformers >= 5: the new name
    if checkpointing or (checkpointing is None and getattr(model, "is_gradient_checkpointing", False)):
        # Checkpointed blocks get gradients only if their input needs one; the embeddings are frozen.
        model.enable_input_require_grads()
    return model.train()


def adapter_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if ".lora_" in n]


def has_adapter(model: torch.nn.Module) -> bool:
    """Whether ``attach`` gave the model an adapter (peft records its config on the model); cheap, so a
    full fine-tuning trial never imports peft."""
    return ADAPTER in (getattr(model, "peft_config", None) or {})


def _tuner_layers(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return (m for m in model.modules() if isinstance(m, BaseTunerLayer))


@contextlib.contextmanager
def adapter_off(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` computing the frozen start point: every adapter layer skipped, no gradient. Works on the
    model itself or on a wrapper holding it (a DeepSpeed engine)."""
    layers = list(_tuner_layers(model))
    for layer in layers:
        layer.enable_adapters(False)
    try:
        with torch.no_grad():
            yield model
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def adapter_state(model: torch.nn.Module, state_dict: dict | None = None) -> dict[str, torch.Tensor]:
    """The adapter's weights in peft's naming (``model.layers.0.self_attn.q_proj.lora_A.weight``);
    ``state_dict``: the model's full one when it must be gathered first (ZeRO-3)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, state_dict=state_dict, adapter_name=ADAPTER)
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def adapter_files(model: torch.nn.Module, state_dict: dict | None = None) -> dict[str, bytes]:
    """``adapter_config.json`` and ``adapter_model.safetensors``, as ``peft.PeftModel.save_pretrained``
    writes them (keys prefixed ``base_model.model.``), for ``PeftModel.from_pretrained``."""
    from safetensors.torch import save

    state = {f"base_model.model.{k}": v for k, v in adapter_state(model, state_dict).items()}
    config = model.peft_config[ADAPTER].to_dict()
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    return {
        CONFIG_FILE: json.dumps(config, indent=2, default=str).encode(),
        WEIGHTS_FILE: save(state, metadata={"format": "pt"}),
    }


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint of a LoRA policy keeps: the adapter's weights under the model's own names."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Restore ``trainable_state`` into a model with a fresh adapter (every adapter weight must be there)."""
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in state]
    if missing:
        raise ValueError(f"the checkpoint lacks adapter weights {missing[:3]}...; it is not this trial's")
    model.load_state_dict(state, strict=False)
