"""The training step loop: one obvious place where a step happens.

``sequence_logps`` turns a padded batch into per-sequence summed response log-probs, with the LM
head applied to response positions only. ``train`` runs AdamW with linear warmup
and cosine decay, gradient accumulation and clipping, and calls back every ``log_every`` steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, get_cosine_schedule_with_warmup

from ablate.data import IGNORE_INDEX
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
    history: list[dict[str, float]] = field(default_factory=list)


def adamw(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with the fused kernel where torch has one (CPU and CUDA floating-point parameters): one
    kernel per step instead of a dozen small ops per parameter tensor."""
    fused = (
        all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        and len({p.device for p in params}) <= 1
    )
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def train(
    model: torch.nn.Module,
    make_batches: Callable[[int], Sequence[dict[str, torch.Tensor]]],
    loss_fn: LossFn,
    settings: TrainSettings,
    on_log: Callable[[int, dict[str, float], dict], None] | None = None,
    start_step: int = 0,
    optimizer_state: dict | None = None,
    before_step: Callable[[int], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    compute_dtype: torch.dtype = torch.float32,
) -> TrainResult:
    """Train ``model`` in place. ``make_batches(epoch)`` gives that epoch's micro-batches.

    ``on_log(step, metrics, state)`` gets the averaged step statistics and the optimizer and
    scheduler state (for checkpoints); ``start_step``/``optimizer_state`` resume from one.
    ``before_step(step)`` runs before each step (the fault-injection hook of ``ablate.faults``).
    ``on_step(step)`` runs after every optimizer step (cheap hooks only: timing, progress).
    ``compute_dtype`` bf16/fp16: forward and backward under autocast, the weights and AdamW stay in
    their own (float32) dtype; fp16 adds loss scaling.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(params, settings.learning_rate, settings.weight_decay)
    device = params[0].device
    amp = Precision(device, compute_dtype)
    first_epoch = make_batches(0)
    per_epoch = math.ceil(len(first_epoch) / settings.grad_accum)
    total = per_epoch * settings.epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total), total)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state["optimizer"])
        scheduler.load_state_dict(optimizer_state["scheduler"])

    result = TrainResult(steps=start_step)
    window: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for epoch in range(settings.epochs):
        batches = first_epoch if epoch == 0 else make_batches(epoch)
        for first in range(0, len(batches), settings.grad_accum):
            step = epoch * per_epoch + first // settings.grad_accum + 1
            if step <= start_step:  # resumed from a checkpoint: skip steps already taken
                continue
            group = batches[first : first + settings.grad_accum]
            if before_step is not None:
                before_step(step)
            try:
                stats = _step(group, loss_fn, optimizer, scheduler, params, settings.max_grad_norm, amp)
            except Diverged as e:
                e.step = step
                e.metrics = _average(window) if window else None
                raise
            result.steps = step
            if on_step is not None:
                on_step(step)
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


class Precision:
    """Where the forward runs (``ablate.models.compute_context``) and, for fp16 only, dynamic loss scaling."""

    def __init__(self, device: torch.device, compute: torch.dtype):
        self.device, self.compute = device, compute
        self.scaler = torch.amp.GradScaler(device.type, enabled=compute == torch.float16)

    def context(self):
        return compute_context(self.device, self.compute)


def _step(group, loss_fn, optimizer, scheduler, params, max_grad_norm, amp: Precision) -> dict[str, float]:
    """One optimizer step over a group of accumulated micro-batches."""
    totals: dict[str, float] = {}
    for batch in group:
        with amp.context():
            loss, stats = loss_fn(batch)
        if not torch.isfinite(loss):
            raise Diverged(f"loss became {loss.item()}")
        amp.scaler.scale(loss / len(group)).backward()
        for k, v in stats.items():
            totals[k] = totals.get(k, 0.0) + v / len(group)
    amp.scaler.unscale_(optimizer)  # clip the true gradients (a no-op without fp16 scaling)
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    amp.scaler.step(optimizer)  # skips the step if fp16 gradients overflowed
    amp.scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return totals
