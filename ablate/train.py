"""The training step loop: one obvious place where a step happens.

``sequence_logps`` turns a padded batch into per-sequence summed response log-probs (gather
minus logsumexp, so no full log-softmax tensor is kept). ``train`` runs AdamW with linear warmup
and cosine decay, gradient accumulation and clipping, and calls back every ``log_every`` steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import get_cosine_schedule_with_warmup

from ablate.data import IGNORE_INDEX

LossFn = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


class Diverged(RuntimeError):
    """The loss became NaN or infinite; the trial stops with its last finite metrics.

    ``train`` sets ``step`` (the step whose loss was not finite) and ``metrics`` (the averaged
    statistics of the finite steps since the last log, or None if there were none)."""

    step: int | None = None
    metrics: dict[str, float] | None = None


def sequence_logps(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the labelled (response) tokens of each row, and their counts."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE_INDEX
    logits = logits.float()
    picked = logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    token_logps = picked - torch.logsumexp(logits, dim=-1)
    return (token_logps * mask).sum(-1), mask.sum(-1)


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
    history: list[dict[str, float]] = field(default_factory=list)


def train(
    model: torch.nn.Module,
    make_batches: Callable[[int], Sequence[dict[str, torch.Tensor]]],
    loss_fn: LossFn,
    settings: TrainSettings,
    on_log: Callable[[int, dict[str, float], dict], None] | None = None,
    start_step: int = 0,
    optimizer_state: dict | None = None,
    before_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place. ``make_batches(epoch)`` gives that epoch's micro-batches.

    ``on_log(step, metrics, state)`` gets the averaged step statistics and the optimizer and
    scheduler state (for checkpoints); ``start_step``/``optimizer_state`` resume from one.
    ``before_step(step)`` runs before each step (the fault-injection hook of ``ablate.faults``).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    per_epoch = math.ceil(len(make_batches(0)) / settings.grad_accum)
    total = per_epoch * settings.epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total), total)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state["optimizer"])
        scheduler.load_state_dict(optimizer_state["scheduler"])

    result = TrainResult(steps=start_step)
    window: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for epoch in range(settings.epochs):
        batches = make_batches(epoch)
        for first in range(0, len(batches), settings.grad_accum):
            step = epoch * per_epoch + first // settings.grad_accum + 1
            if step <= start_step:  # resumed from a checkpoint: skip steps already taken
                continue
            group = batches[first : first + settings.grad_accum]
            if before_step is not None:
                before_step(step)
            try:
                stats = _step(model, group, loss_fn, optimizer, scheduler, params, settings.max_grad_norm)
            except Diverged as e:
                e.step = step
                e.metrics = _average(window) if window else None
                raise
            result.steps = step
            result.tokens += sum(int(b["attention_mask"].sum()) for b in group)
            window.append(stats)
            checkpoint = settings.checkpoint_every > 0 and step % settings.checkpoint_every == 0
            if step % settings.log_every == 0 or step == total or checkpoint:
                logged = _average(window)
                logged["lr"] = scheduler.get_last_lr()[0]
                result.history.append({"step": step, **logged})
                window = []
                if on_log is not None:
                    on_log(
                        step,
                        logged,
                        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                    )
    result.seconds = time.perf_counter() - t0
    return result


def _average(window: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(s[k] for s in window) / len(window) for k in window[0]}


def _step(model, group, loss_fn, optimizer, scheduler, params, max_grad_norm) -> dict[str, float]:
    """One optimizer step over a group of accumulated micro-batches."""
    totals: dict[str, float] = {}
    for batch in group:
        loss, stats = loss_fn(batch)
        if not torch.isfinite(loss):
            raise Diverged(f"loss became {loss.item()}")
        (loss / len(group)).backward()
        for k, v in stats.items():
            totals[k] = totals.get(k, 0.0) + v / len(group)
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return totals
