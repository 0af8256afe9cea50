"""A trial in one process: the policy trained by ``ablate.trial.train.AdamWStepper`` in float32 master
weights (autocast to the compute dtype), models loaded through the worker's cache. A LoRA policy
(``ablate.trial.lora``) keeps the frozen start point in the compute dtype and trains a float32 adapter,
which ``finish`` writes into the trial's directory."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import psutil
import torch

from ablate import models
from ablate.data.tokens import TokenizedPair
from ablate.trial import lora, worker_cache
from ablate.trial.backends import StepperSetup
from ablate.trial.config import TrialConfig
from ablate.trial.evaluate import generate
from ablate.trial.logps import PairLogps, pair_logps
from ablate.trial.train import AdamWStepper

SaveArtifact = Callable[[str, bytes], None]


class SingleProcess:
    world, is_main, checkpoints = 1, True, True
    process_reused = True  # a Ray Tune worker may run trial after trial (reuse_workers: true)

    def __init__(self, cfg: TrialConfig, save_artifact: SaveArtifact | None = None) -> None:
        self.save_artifact = save_artifact  # where ``finish`` writes a LoRA policy's adapter
        self.policy: torch.nn.Module | None = None
        self.device = models.pick_device()
        # ``dtype`` is what the forward passes compute in; the policy's weights stay in ``master_dtype``
        # (float32 under bf16/fp16, mixed precision), frozen reference models are stored in ``dtype``.
        self.dtype = models.pick_dtype(cfg.model.dtype, self.device)
        torch.set_num_threads(max(1, int(cfg.resources.cpus)))

    def compute(self) -> contextlib.AbstractContextManager:
        return models.compute_context(self.device, self.dtype)

    def load_policy(self, cfg: TrialConfig) -> torch.nn.Module:
        m = cfg.model
        if cfg.lora is None:
            self.policy = worker_cache.start_point_model(
                cfg.start.path, self.device, models.master_dtype(self.dtype), m.trust_remote_code, True,
                m.gradient_checkpointing,
            )  # fmt: skip
            return self.policy
        # LoRA: the start point is frozen, so it needs no float32 master copy; the adapter is float32.
        base = worker_cache.start_point_model(
            cfg.start.path, self.device, self.dtype, m.trust_remote_code, True, m.gradient_checkpointing
        )
        self.policy = lora.attach(base, cfg.lora, cfg.start.path)
        return self.policy

    def load_reference(self, cfg: TrialConfig) -> torch.nn.Module:
        return worker_cache.start_point_model(
            cfg.start.path, self.device, self.dtype, cfg.model.trust_remote_code, trainable=False
        )

    def stepper(self, policy: torch.nn.Module, setup: StepperSetup) -> AdamWStepper:
        return AdamWStepper(policy, setup.loss_for(policy), setup.settings, setup.total_steps, setup.collate,
                            self.dtype, setup.state)  # fmt: skip

    def pair_logps(
        self, model: torch.nn.Module, pairs: list[TokenizedPair], batch_size: int, pad_id: int
    ) -> PairLogps:
        return pair_logps(model, pairs, batch_size, pad_id, self.device)

    def generate(
        self, model: torch.nn.Module, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int,
        sampling: dict | None = None,
    ) -> tuple[list[str], list[int]]:
        return generate(model, tokenizer, prompts, max_new_tokens, batch_size, self.device, sampling)

    def reduce(self, values: list[float], op: str = "sum") -> list[float]:
        return list(values)

    def all_true(self, flag: bool) -> bool:
        return flag

    def barrier(self) -> None:
        pass

    def trial_metrics(self) -> dict:
        # With process_started_at: whether the trial ran in a fresh worker process or a reused one.
        return {"process_id": os.getpid(), "process_started_at": psutil.Process().create_time()}

    def finish(self, tokenizer) -> dict:
        if self.save_artifact is not None and self.policy is not None and lora.has_adapter(self.policy):
            for name, data in lora.adapter_files(self.policy).items():  # loads with peft on the start point
                self.save_artifact(name, data)
        return {}
