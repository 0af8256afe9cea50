"""A trial's training checkpoint on disk (written atomically, ``ablate.cache``).

A checkpoint is one file, ``state.pt``, written with ``torch.save`` and read back with
``torch.load(weights_only=True)`` (tensors and plain containers only: loading a checkpoint cannot
run code). It holds the model weights (a LoRA policy's adapter only), the optimizer and scheduler state, the step, the torch and
Python RNG states, the last logged training metrics and the training time so far. Ray-free:
``ablate.sweep.tune`` hands the directory to Ray Tune, which copies it into the trial's storage.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from ablate.cache import atomic_torch_save
from ablate.trial import lora

STATE_FILE = "state.pt"
FORMAT = 1


def save(
    directory: str | Path,
    model: torch.nn.Module,
    train_state: dict,
    step: int,
    last_metrics: dict[str, float],
    runtime_s: float,
    adapter_only: bool = False,
) -> Path:
    """Write the checkpoint of a trial at ``step`` into ``directory``; ``train_state`` is the stepper's
    optimizer and scheduler state (``ablate.trial.train.AdamWStepper.state``). ``adapter_only``: a LoRA policy,
    whose frozen start point is not saved again with every checkpoint."""
    state = {
        "format": FORMAT,
        "step": step,
        "model": lora.trainable_state(model) if adapter_only else model.state_dict(),
        "optimizer": train_state["optimizer"],
        "scheduler": train_state["scheduler"],
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
        "last_metrics": dict(last_metrics),
        "runtime_s": float(runtime_s),
    }
    path = Path(directory) / STATE_FILE
    atomic_torch_save(state, path)
    return path


def load(directory: str | Path) -> dict:
    """The state written by ``save`` (weights only: no code runs while loading)."""
    state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT:
        raise ValueError(f"{directory}: checkpoint format {state.get('format')} is not {FORMAT}")
    return state


def restore_model(model: torch.nn.Module, weights: dict, adapter_only: bool = False) -> None:
    """Load a checkpoint's ``model`` weights: all of them, or (``adapter_only``) a LoRA policy's adapter
    into a model with a fresh one."""
    if adapter_only:
        lora.load_trainable_state(model, weights)
    else:
        model.load_state_dict(weights)


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
