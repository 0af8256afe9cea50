"""A trial's training checkpoint on disk, and atomic file writes.

A checkpoint is one file, ``state.pt``, written with ``torch.save`` and read back with
``torch.load(weights_only=True)`` (tensors and plain containers only: loading a checkpoint cannot
run code). It holds the model weights, the optimizer and scheduler state, the step, the torch and
Python RNG states, the last logged training metrics and the training time so far. Ray-free:
``ablate.tune`` hands the directory to Ray Tune, which copies it into the trial's storage.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch

STATE_FILE = "state.pt"
FORMAT = 1


def _atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Run ``write`` on a temporary file beside ``path``, flush it to disk, rename it over ``path``
    (``os.replace`` is atomic on POSIX within one file system): a kill leaves the old file or the new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a kill at any moment leaves the old file or the new one."""
    _atomic_write(path, lambda f: f.write(data))


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """``torch.save`` with the same old-or-new guarantee as ``atomic_write_bytes``."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def save(
    directory: str | Path,
    model: torch.nn.Module,
    train_state: dict,
    step: int,
    last_metrics: dict[str, float],
    runtime_s: float,
) -> Path:
    """Write the checkpoint of a trial at ``step`` into ``directory``; ``train_state`` is what
    ``ablate.train.train`` hands to ``on_log`` (optimizer and scheduler state dicts)."""
    state = {
        "format": FORMAT,
        "step": step,
        "model": model.state_dict(),
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


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
