"""What differs between the two ways a trial runs; everything else is ``ablate.trial.runner``'s.

* ``single.SingleProcess``: the whole trial in one process (a Ray Tune worker, or a test).
* ``deepspeed.DeepSpeedWorker``: one of N Ray Train workers of a multi-worker trial, with DeepSpeed
  ZeRO; every worker runs ``ablate.trial.runner.run_trial`` on its share, in lockstep.

A backend says how models are loaded, how an optimizer step runs (``stepper``), how log-probs and
generations of a list of pairs or prompts are computed (split between the workers and gathered),
and how per-worker numbers are combined (``reduce``). Calls marked *collective* must be made by
every worker at the same point.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from ablate.data.tokens import TokenizedPair
    from ablate.trial.config import TrialConfig
    from ablate.trial.logps import PairLogps
    from ablate.trial.train import LossFn, Stepper, TrainSettings


@dataclass(frozen=True)
class StepperSetup:
    """What a backend's stepper is built from: ``loss_for(model)`` makes the loss of the policy as the
    stepper wraps it, ``collate(indices)`` a micro-batch's tensors; ``state`` resumes the optimizer."""

    loss_for: Callable[[torch.nn.Module], LossFn]
    settings: TrainSettings
    total_steps: int
    collate: Callable[[list[int]], dict[str, torch.Tensor]]
    state: dict | None = None


class Backend(Protocol):
    device: torch.device
    dtype: torch.dtype  # what forward passes compute in
    world: int  # workers training the trial
    is_main: bool  # the worker that writes shared files and reports
    checkpoints: bool  # whether mid-training checkpoints can be taken and resumed from
    # Whether this process goes on to run later trials (a reused Ray Tune worker): then what a trial
    # leaves allocated (caches it filled, modules it imported) is the worker's, not the trial's.
    process_reused: bool

    def compute(self) -> contextlib.AbstractContextManager:
        """Where forward passes run (autocast, attention kernels)."""
        ...

    def load_policy(self, cfg: TrialConfig) -> torch.nn.Module: ...

    def load_reference(self, cfg: TrialConfig) -> torch.nn.Module:
        """The frozen start point, in the compute dtype."""
        ...

    def stepper(self, policy: torch.nn.Module, setup: StepperSetup) -> Stepper:
        """How a step runs; the stepper's ``model`` attribute is the trained policy, to evaluate."""
        ...

    def pair_logps(
        self, model: torch.nn.Module, pairs: list[TokenizedPair], batch_size: int, pad_id: int
    ) -> PairLogps:
        """Log-probs of all ``pairs``, on every worker (collective)."""
        ...

    def generate(
        self, model: torch.nn.Module, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int,
        sampling: dict | None = None,
    ) -> tuple[list[str], list[int]]:
        """Completions of all ``prompts`` (greedy, or ``sampling``: see ``ablate.trial.evaluate.generate``):
        texts and token counts, on every worker (collective)."""
        ...

    def reduce(self, values: list[float], op: str = "sum") -> list[float]:
        """Per-worker numbers summed (or ``op="max"``) over the workers (collective)."""
        ...

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every worker (collective)."""
        ...

    def barrier(self) -> None: ...

    def trial_metrics(self) -> dict:
        """What only this backend knows, for the trial's final record (collective)."""
        ...

    def finish(self, tokenizer) -> dict:
        """After evaluation: save what the backend keeps of the trained policy; extra final metrics."""
        ...
