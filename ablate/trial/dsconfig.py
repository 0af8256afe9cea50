"""The DeepSpeed JSON config of a multi-worker trial, generated from the sweep or taken from the user.

Pure dictionaries, no DeepSpeed or Ray import: ``ablate.spec`` checks a user's file with it and
``ablate.trial.backends.deepspeed`` builds the engines from its output.

Generated (``deepspeed: {stage, offload}``): micro-batch = ``training.batch_size`` pairs per
worker, ``gradient_accumulation_steps`` = ``training.grad_accum``, global batch = micro-batch x
accumulation x workers; bf16/fp16 from the model's dtype; AdamW with the sweep's learning rate and
weight decay (torch's implementation unless the optimizer is offloaded, which needs DeepSpeed's CPU
Adam); gradient clipping = ``training.max_grad_norm``.

User's own (``deepspeed: {config: FILE}``): used as written, except that ``"auto"`` values are
filled from the generated config and the keys in ``FILLED_IF_MISSING`` are added when absent. A
number that contradicts the sweep (e.g. another micro-batch size) is an error, because the global
batch recorded with the results must be the one that was trained.
"""

from __future__ import annotations

import copy
from typing import Any

BATCH_KEYS = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size")
FILLED_IF_MISSING = (*BATCH_KEYS, "optimizer", "bf16", "fp16", "gradient_clipping")
ADAM_BETAS = (0.9, 0.999)  # torch.optim.AdamW's defaults, as the single-process path uses
ADAM_EPS = 1e-8


class DeepSpeedConfigError(ValueError):
    """A user's DeepSpeed config that contradicts the sweep file; the message says which key."""


def zero_section(stage: int, offload: str, on_gpu: bool) -> dict[str, Any]:
    z: dict[str, Any] = {"stage": stage}
    if stage >= 1:
        z["contiguous_gradients"] = True
        z["overlap_comm"] = on_gpu  # overlapping only pays with CUDA streams
    if stage == 3:
        # Lets the trained policy be gathered on rank 0 and saved as one Hugging Face checkpoint.
        z["stage3_gather_16bit_weights_on_model_save"] = True
    if offload in ("optimizer", "all"):
        z["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if offload == "all":
        z["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    return z


def generated(training: dict, deepspeed: dict, workers: int, dtype: str, on_gpu: bool) -> dict[str, Any]:
    """The config a sweep's ``training`` and ``deepspeed`` sections imply (``dtype``: the resolved model dtype)."""
    micro, accum = training["batch_size"], training["grad_accum"]
    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "train_batch_size": micro * accum * workers,
        "gradient_clipping": training["max_grad_norm"],
        "bf16": {"enabled": dtype == "bfloat16"},
        "fp16": {"enabled": dtype == "float16"},
        "zero_optimization": zero_section(deepspeed["stage"], deepspeed["offload"], on_gpu),
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": training["learning_rate"],
                "betas": list(ADAM_BETAS),
                "eps": ADAM_EPS,
                "weight_decay": training["weight_decay"],
                # torch's AdamW needs no compiled op; an offloaded optimizer must be DeepSpeed's CPU Adam.
                "torch_adam": deepspeed["offload"] == "none",
            },
        },
        "steps_per_print": 10**9,  # ablate logs its own metrics
        "wall_clock_breakdown": False,
    }


def _fill_auto(user: Any, gen: Any, path: str) -> Any:
    if isinstance(user, dict):
        return {
            k: _fill_auto(v, gen.get(k) if isinstance(gen, dict) else None, f"{path}.{k}")
            for k, v in user.items()
        }
    if user == "auto":
        if gen is None:
            raise DeepSpeedConfigError(
                f'{path.lstrip(".")} is "auto" but ablate has no value for it; write the value in your DeepSpeed config'
            )
        return copy.deepcopy(gen)
    return user


def merged(user: dict, gen: dict) -> dict[str, Any]:
    """The user's config with ``"auto"`` filled and missing essentials added; contradictions raise."""
    out = _fill_auto(user, gen, "")
    for key in FILLED_IF_MISSING:
        out.setdefault(key, copy.deepcopy(gen[key]))
    for key in BATCH_KEYS:
        if out[key] != gen[key]:
            raise DeepSpeedConfigError(
                f"{key} is {out[key]} in your DeepSpeed config but the sweep implies {gen[key]} "
                "(training.batch_size per worker x training.grad_accum x resources.workers); "
                'set it to "auto" or make the sweep agree'
            )
    return out


def resolve(trial: dict, dtype: str, on_gpu: bool) -> dict[str, Any]:
    """The DeepSpeed config of one trial config (see ``ablate.spec.expand``)."""
    ds = trial["deepspeed"]
    gen = generated(trial["training"], ds, trial["resources"]["workers"], dtype, on_gpu)
    return merged(ds["user_config"], gen) if ds.get("user_config") else gen


def precision(user: dict | None) -> str | None:
    """The dtype a user's config forces (``bfloat16``/``float16``), or None when it leaves it to the sweep."""
    if not user:
        return None
    for key, name in (("bf16", "bfloat16"), ("fp16", "float16")):
        if isinstance(user.get(key), dict) and user[key].get("enabled") is True:
            return name
    return None


def zero_stage(config: dict) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def reference_config(train_config: dict) -> dict[str, Any]:
    """A ZeRO-3 inference config for the frozen reference model: sharded like the policy, no optimizer."""
    zero = {"stage": 3, "stage3_param_persistence_threshold": 0}
    if "offload_param" in train_config.get("zero_optimization", {}):
        zero["offload_param"] = copy.deepcopy(train_config["zero_optimization"]["offload_param"])
    return {
        "train_micro_batch_size_per_gpu": train_config["train_micro_batch_size_per_gpu"],
        "bf16": copy.deepcopy(train_config.get("bf16", {"enabled": False})),
        "fp16": copy.deepcopy(train_config.get("fp16", {"enabled": False})),
        "zero_optimization": zero,
        "steps_per_print": 10**9,
    }
