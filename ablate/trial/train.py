"""The training step loop: one obvious place where a step happens.

``sequence_logps`` turns a padded batch into per-sequence summed response log-probs, with the LM
head applied to response positions only. ``train`` runs AdamW with linear warmup
and cosine decay, gradient accumulation and clipping, and calls back every ``log_every`` steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, get_cosine_schedule_with_warmup

from ablate.data.tokens import IGNORE_INDEX
from ablate.models import compute_context

LossFn = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


class Diverged(RuntimeError):
    """The loss became NaN or infinite; the trial stops with its last finite metrics.

    ``train`` sets ``step`` (the step whose loss was not finite) and ``metrics`` (the averaged
    statistics of the finite steps since the last log, or None if there were none)."""

    step: int | None = None
    metrics: dict[str, float] | None = None


# Config fields of models whose logits are not a plain linear map of the last hidden state; such
# models take the generic path through their own forward.
_LOGIT_TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "logits_scaling",
    "output_multiplier",
    "lm_head_multiplier",
)


def response_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Linear] | None:
    """(backbone, lm_head) when the model's logits are ``lm_head(backbone(...).last_hidden_state)``."""
    if not isinstance(model, PreTrainedModel):
        return None
    backbone, head = model.base_model, model.get_output_embeddings()
    if backbone is model or not isinstance(head, torch.nn.Linear):
        return None
    config = model.config.get_text_config()
    if any(getattr(config, name, None) is not None for name in _LOGIT_TRANSFORMS):
        return None
    return backbone, head


def causal_mask(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """``None`` (plain causal attention) for a right-padded batch, else the mask itself.

    Under a causal mask a real token only attends to earlier positions, which in a right-padded row
    are all real, so the padding mask changes nothing that is read: only the outputs at padding
    positions, which no loss uses. Without it, attention takes the causal kernel that skips the
    upper triangle and no per-batch 4-D mask is built."""
    if bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all()):
        return None
    return attention_mask


def sequence_logps(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the labelled (response) tokens of each row, and their counts.

    The LM head runs only on the positions that predict a response token: prompt and padding
    positions never get vocabulary-sized logits (they are most of a batch's positions). Models
    with a transformed head (soft-capping, scaling) fall back to their full forward.
    """
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE_INDEX
    inputs = {"input_ids": batch["input_ids"], "attention_mask": causal_mask(batch["attention_mask"])}
    rows, cols = mask.nonzero(as_tuple=True)
    head = response_head(model)
    if head is None:
        logits = model(**inputs, use_cache=False).logits[:, :-1][rows, cols]
    else:
        backbone, lm_head = head
        logits = lm_head(backbone(**inputs, use_cache=False).last_hidden_state[rows, cols])
    # cross_entropy fuses log-softmax and the pick of the label (much faster than gather minus
    # logsumexp on CPU); only the response positions' logits are ever materialised.
    token_logps = -F.cross_entropy(logits.float(), labels[rows, cols], reduction="none")
    sums = torch.zeros(labels.shape[0], dtype=token_logps.dtype, device=token_logps.device)
    return sums.index_add(0, rows, token_logps), mask.sum(-1)


@dataclass
class TrainSettings:
    learning_rate: float
    epochs: int = 1
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    log_every: int = 10
    checkpoint_every: int = 0  # also call on_log at these steps, so a checkpoint can be saved there


@dataclass
class TrainResult:
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0


@dataclass
class Hooks:
    """What a caller does around the steps, each optional: ``before_step(step)`` (the fault-injection
    hook of ``ablate.faults``), ``after_step(step)`` (cheap: timing, progress) and ``on_log(step,
    metrics)`` with the averaged statistics since the last log (reports, checkpoints, evaluation)."""

    before_step: Callable[[int], None] | None = None
    after_step: Callable[[int], None] | None = None
    on_log: Callable[[int, dict[str, float]], None] | None = None


class Stepper(Protocol):
    """How one optimizer step runs: over a group of accumulated micro-batches (what ``batches_of``
    yields), returning its statistics and the tokens it processed; raises ``Diverged`` on a loss that
    is not finite. ``AdamWStepper`` is one process's; ``ablate.trial.backends.deepspeed`` has the other."""

    model: torch.nn.Module  # the policy as the stepper trains it (to evaluate, to checkpoint)

    def step(self, group: list) -> tuple[dict[str, float], int]: ...

    def lr(self) -> float: ...

    def average(self, window: list[dict[str, float]]) -> dict[str, float]: ...


def steps_per_epoch(batches: Sequence, settings: TrainSettings) -> int:
    return math.ceil(len(batches) / settings.grad_accum)


def total_steps(batches_of: Callable[[int], Sequence], settings: TrainSettings) -> int:
    """The optimizer steps of a whole run (every epoch has as many micro-batches as the first)."""
    return steps_per_epoch(batches_of(0), settings) * settings.epochs


def train(
    stepper: Stepper,
    batches_of: Callable[[int], Sequence],
    settings: TrainSettings,
    hooks: Hooks | None = None,
    start_step: int = 0,
) -> TrainResult:
    """Run every optimizer step of every epoch; ``batches_of(epoch)`` gives that epoch's micro-batches,
    ``settings.grad_accum`` of them make a step. Steps up to ``start_step`` (a resumed checkpoint's) are
    skipped. ``hooks.on_log`` runs every ``log_every`` steps, at the last step and at checkpoint steps."""
    hooks = hooks or Hooks()
    first_epoch = batches_of(0)
    per_epoch = steps_per_epoch(first_epoch, settings)
    total = per_epoch * settings.epochs
    result = TrainResult(steps=start_step)
    window: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for epoch in range(settings.epochs):
        batches = first_epoch if epoch == 0 else batches_of(epoch)
        for first in range(0, len(batches), settings.grad_accum):
            step = epoch * per_epoch + first // settings.grad_accum + 1
            if step <= start_step:  # resumed from a checkpoint: skip steps already taken
                continue
            if hooks.before_step is not None:
                hooks.before_step(step)
            try:
                stats, tokens = stepper.step(list(batches[first : first + settings.grad_accum]))
            except Diverged as e:
                e.step = step
                e.metrics = stepper.average(window) if window else None
                raise
            result.steps, result.tokens = step, result.tokens + tokens
            if hooks.after_step is not None:
                hooks.after_step(step)
            window.append(stats)
            checkpoint = settings.checkpoint_every > 0 and step % settings.checkpoint_every == 0
            if step % settings.log_every == 0 or step == total or checkpoint:
                logged = {**stepper.average(window), "lr": stepper.lr()}
                window = []
                if hooks.on_log is not None:
                    hooks.on_log(step, logged)
    result.seconds = time.perf_counter() - t0
    return result


def mean_stats(window: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(s[k] for s in window) / len(window) for k in window[0]}


class Precision:
    """Where the forward runs (``ablate.models.compute_context``) and, for fp16 only, dynamic loss scaling."""

    def __init__(self, device: torch.device, compute: torch.dtype):
        self.device, self.compute = device, compute
        self.scaler = torch.amp.GradScaler(device.type, enabled=compute == torch.float16)

    def context(self):
        return compute_context(self.device, self.compute)


def adamw(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with the fused kernel where torch has one (CPU and CUDA floating-point parameters): one
    kernel per step instead of a dozen small ops per parameter tensor."""
    fused = (
        all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        and len({p.device for p in params}) <= 1
    )
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


class AdamWStepper:
    """One process's optimizer step: AdamW with linear warmup and cosine decay over ``total_steps``,
    gradient accumulation and clipping. ``collate`` turns a micro-batch of ``batches_of`` into the
    tensors ``loss_fn`` takes. ``compute_dtype`` bf16/fp16: forward and backward under autocast, the
    weights and AdamW stay in their own (float32) dtype; fp16 adds loss scaling. ``state`` (from
    ``state()``, e.g. a checkpoint's) resumes the optimizer and the schedule."""

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        settings: TrainSettings,
        total_steps: int,
        collate: Callable[[Any], dict[str, torch.Tensor]] = lambda batch: batch,
        compute_dtype: torch.dtype = torch.float32,
        state: dict | None = None,
    ) -> None:
        self.model, self.loss_fn, self.collate = model, loss_fn, collate
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = adamw(self.params, settings.learning_rate, settings.weight_decay)
        warmup = int(settings.warmup_ratio * total_steps)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, warmup, total_steps)
        self.max_grad_norm = settings.max_grad_norm
        self.amp = Precision(self.params[0].device, compute_dtype)
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])

    def step(self, group: list) -> tuple[dict[str, float], int]:
        totals: dict[str, float] = {}
        tokens = 0
        for micro in group:
            batch = self.collate(micro)
            with self.amp.context():
                loss, stats = self.loss_fn(batch)
            if not torch.isfinite(loss):
                raise Diverged(f"loss became {loss.item()}")
            self.amp.scaler.scale(loss / len(group)).backward()
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + v / len(group)
            tokens += int(batch["attention_mask"].sum())
        self.amp.scaler.unscale_(self.optimizer)  # clip the true gradients (a no-op without fp16 scaling)
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.amp.scaler.step(self.optimizer)  # skips the step if fp16 gradients overflowed
        self.amp.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return totals, tokens

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def average(self, window: list[dict[str, float]]) -> dict[str, float]:
        return mean_stats(window)

    def state(self) -> dict:
        """The optimizer and schedule state, for a checkpoint (``ablate.trial.checkpoint``)."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
