"""The reference model's log-probs (DPO-family methods): online, from a frozen copy of the start point
that runs every step, or precomputed once per data split and cached on disk for the sweep's other
trials, single-process and multi-worker alike. Reference-free methods (SimPO, ...) load nothing.

A LoRA policy's online reference is the policy itself with its adapter switched off
(``ablate.trial.lora.adapter_off``): the frozen start point, with no second model in memory."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ablate import progress
from ablate.cache import atomic_torch_save, cache_key
from ablate.data.tokens import TokenizedPair
from ablate.trial import lora
from ablate.trial.backends import Backend
from ablate.trial.config import TrialConfig
from ablate.trial.logps import PairLogps


def cache_path(cfg: TrialConfig, split: str, dtype: torch.dtype) -> Path:
    """Where the reference log-probs of a data split are cached; ``dtype``, the one they were computed
    in, is part of the key (bf16 numbers differ from float32)."""
    key = cache_key({"start": cfg.start.path, "data": cfg.data.model_dump(), "split": split, "dtype": str(dtype)})
    return Path(cfg.cache_dir).expanduser() / "reference" / f"{key}.pt"


def precomputed(
    cfg: TrialConfig, backend: Backend, pairs: list[TokenizedPair], split: str, pad_id: int
) -> PairLogps:
    """The reference log-probs of ``pairs`` from the cache, or computed by ``backend`` (each worker on
    its share) and written by its main worker; a concurrent trial reads the whole file or none."""
    path = cache_path(cfg, split, backend.dtype)
    if backend.all_true(path.is_file()):  # every worker agrees, or every worker computes (a collective)
        return PairLogps(**torch.load(path, weights_only=True))
    model = backend.load_reference(cfg)
    with progress.label(f"precomputing reference log-probs of the {split} split ({len(pairs)} pairs)"):
        out = backend.pair_logps(model, pairs, cfg.evaluation.batch_size, pad_id)
    del model
    if backend.is_main:
        atomic_torch_save(vars(out), path)
    backend.barrier()
    return out


@dataclass
class Reference:
    """A trial's reference: the online model, or the precomputed log-probs of the training split."""

    cfg: TrialConfig
    backend: Backend
    pad_id: int
    model: torch.nn.Module | None = None
    train: PairLogps | None = None
    adapter_off: bool = False  # online, as the LoRA policy with its adapter switched off

    def online(
        self, policy: torch.nn.Module
    ) -> tuple[torch.nn.Module | None, Callable[[], contextlib.AbstractContextManager]]:
        """The model an online reference runs on, given the policy as the stepper holds it, and the
        context it runs in (the adapter switched off for a LoRA policy)."""
        if self.adapter_off:
            return policy, lambda: lora.adapter_off(policy)
        return self.model, contextlib.nullcontext

    def held_out(self, pairs: list[TokenizedPair], policy: torch.nn.Module | None = None) -> PairLogps | None:
        """The reference log-probs of the held-out pairs (None for a reference-free method); ``policy``:
        the trained policy, whose switched-off adapter is a LoRA trial's online reference."""
        if self.adapter_off:
            assert policy is not None, "a LoRA policy's online reference is the policy without its adapter"
            with lora.adapter_off(policy):
                return self.backend.pair_logps(policy, pairs, self.cfg.evaluation.batch_size, self.pad_id)
        if self.model is not None:
            return self.backend.pair_logps(self.model, pairs, self.cfg.evaluation.batch_size, self.pad_id)
        if self.cfg.reference == "precomputed":
            return precomputed(self.cfg, self.backend, pairs, "eval", self.pad_id)
        return None


def prepare(cfg: TrialConfig, backend: Backend, train_pairs: list[TokenizedPair], pad_id: int) -> Reference:
    if cfg.reference == "online" and cfg.lora is not None:
        return Reference(cfg, backend, pad_id, adapter_off=True)
    if cfg.reference == "online":
        return Reference(cfg, backend, pad_id, model=backend.load_reference(cfg))
    if cfg.reference == "precomputed":
        return Reference(cfg, backend, pad_id, train=precomputed(cfg, backend, train_pairs, "train", pad_id))
    return Reference(cfg, backend, pad_id)
