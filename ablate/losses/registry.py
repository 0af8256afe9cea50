"""The registry of objectives: names, hyperparameters and their checks, dispatch.

A hyperparameter's default is written once, in its objective function's signature (a keyword-only
argument, ``ablate.losses.objectives``); ``LossSpec.defaults`` reads it from there. A sweep's
hyperparameters are checked and resolved once, when the sweep is expanded into trials
(``ablate.spec.expand`` calls :func:`validate_hparams`); :func:`preference_loss`, called on every
micro-batch, takes them resolved and does not check them again."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

from torch import Tensor

from ablate.losses.objectives import (
    LossOutput,
    cpo_loss,
    dpo_loss,
    ipo_loss,
    kto_loss,
    orpo_loss,
    rdpo_loss,
    rrhf_loss,
    sft_loss,
    simpo_loss,
    slic_hf_loss,
)


def signature_defaults(fn: Callable[..., LossOutput]) -> dict[str, float | bool]:
    """An objective's hyperparameters and their defaults: its keyword-only arguments."""
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


@dataclass(frozen=True)
class LossSpec:
    """One registered objective: its function, whether it needs π_ref, and its hyperparameters with
    their defaults (``defaults``, read from the function's signature)."""

    fn: Callable[..., LossOutput]
    reference: bool
    doc: str
    defaults: dict[str, float | bool] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", signature_defaults(self.fn))


LOSSES: dict[str, LossSpec] = {
    "simpo": LossSpec(
        simpo_loss, False, "SimPO: -log σ(β·avg_w - β·avg_l - γ), reference-free, length-normalized reward."
    ),
    "dpo": LossSpec(dpo_loss, True, "DPO: -log σ(β·Δ log-ratio) against π_ref."),
    "ipo": LossSpec(ipo_loss, True, "IPO: (Δ summed log-ratio - 1/(2τ))² against π_ref."),
    "cpo": LossSpec(cpo_loss, False, "CPO: -log σ(β·Δ logp) + λ·NLL_avg(y_w)."),
    "kto": LossSpec(kto_loss, True, "KTO: prospect-theoretic sigmoid losses around a batch KL reference point."),
    "orpo": LossSpec(orpo_loss, False, "ORPO: NLL_avg(y_w) - λ·log σ(Δ log-odds of avg likelihood)."),
    "rdpo": LossSpec(rdpo_loss, True, "R-DPO: DPO with a length term α·(|y_w| - |y_l|)."),
    "rrhf": LossSpec(rrhf_loss, False, "RRHF: max(0, avg_l - avg_w) + λ·NLL_avg(y_w)."),
    "slic_hf": LossSpec(slic_hf_loss, False, "SLiC-HF: max(0, δ - logp_w + logp_l) + λ·NLL_avg(y_w)."),
    "sft": LossSpec(sft_loss, False, "SFT: token-averaged NLL of the chosen response."),
}
# Another way a sweep file may write a hyperparameter: SimPO's margin relative to β (the SimPO
# repository's convention). Resolved into ``gamma`` at expansion; trials and reports know only ``gamma``.
RATIO, MARGIN = "gamma_beta_ratio", "gamma"

METHOD_NAMES: tuple[str, ...] = tuple(LOSSES)

_POSITIVE = ("beta", "tau")
_NON_NEGATIVE = ("sft_weight", "or_weight", "desirable_weight", "undesirable_weight", "delta")
_BOOL = ("length_normalize",)


def _spec(method: str) -> LossSpec:
    try:
        return LOSSES[method]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {method!r}; known methods: {', '.join(METHOD_NAMES)}") from None


def needs_reference(method: str) -> bool:
    """Whether ``method`` needs reference-model log-probs (``ref_chosen_logps``/``ref_rejected_logps``)."""
    return _spec(method).reference


def accepted(method: str) -> dict[str, float | bool]:
    """The names a sweep file may give ``method``'s hyperparameters by, with their defaults: the
    function's keywords, and for SimPO ``gamma_beta_ratio`` (default: the default γ over the default β)."""
    defaults = dict(_spec(method).defaults)
    if MARGIN in defaults:
        defaults[RATIO] = defaults[MARGIN] / defaults["beta"]
    return defaults


def validate_hparams(method: str, hparams: Mapping[str, Any]) -> dict[str, float | bool]:
    """Check ``hparams`` for ``method`` and return them merged over the method's defaults: every
    keyword of its function, nothing else (what the trial records and the loss receives).

    Numbers are returned as ``float``. For SimPO, ``gamma`` (absolute margin) and
    ``gamma_beta_ratio`` (γ/β, the SimPO repository's convention) are mutually exclusive; a ratio
    given is resolved into ``gamma`` through the (merged) β. Raises ``ValueError`` naming the method
    and the argument.
    """
    spec = _spec(method)
    names = accepted(method)
    unknown = [name for name in hparams if name not in names]
    if unknown:
        raise ValueError(
            f"{method}: unknown hyperparameter {unknown[0]!r}; accepted hyperparameters: {', '.join(names) or 'none'}"
        )
    merged: dict[str, float | bool] = dict(spec.defaults)
    for name, value in hparams.items():
        if name in _BOOL:
            if not isinstance(value, bool):
                raise ValueError(f"{method}: {name} must be a bool, got {type(value).__name__} {value!r}")
            merged[name] = value
            continue
        if isinstance(value, bool) or not isinstance(value, Real):
            raise ValueError(f"{method}: {name} must be a number, got {type(value).__name__} {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{method}: {name} must be finite, got {value}")
        if name in _POSITIVE and value <= 0:
            raise ValueError(f"{method}: {name} must be > 0, got {value}")
        if name in _NON_NEGATIVE and value < 0:
            raise ValueError(f"{method}: {name} must be >= 0, got {value}")
        merged[name] = value
    if RATIO in hparams:
        if MARGIN in hparams:
            raise ValueError(
                f"{method}: pass either gamma or gamma_beta_ratio, not both "
                f"(got gamma={hparams['gamma']!r}, gamma_beta_ratio={hparams['gamma_beta_ratio']!r})"
            )
        merged[MARGIN] = merged.pop(RATIO) * merged["beta"]
    return merged


def preference_loss(
    method: str,
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    **hparams: Any,
) -> LossOutput:
    """Per-pair loss and implicit rewards of ``method`` (one of :data:`METHOD_NAMES`).

    Args:
        method: objective name, e.g. ``"simpo"`` or ``"dpo"``.
        chosen_logps, rejected_logps: [B] summed response-token log-probs of the policy.
        chosen_lengths, rejected_lengths: [B] response token counts (int or float).
        ref_chosen_logps, ref_rejected_logps: [B] the same for π_ref; required when
            :func:`needs_reference` is true, ignored otherwise.
        **hparams: the method's hyperparameters by their function's names (``LOSSES[m].defaults``),
            already checked and resolved by :func:`validate_hparams` (a trial's ``hparams``); not
            checked again here, on every micro-batch.

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, float32 tensors of shape [B]; ``losses`` is
        unreduced, the rewards are detached and contain no margin.

    Raises:
        ValueError: unknown method, missing reference log-probs, or mismatched shapes; the message
            names the method and the argument.
    """
    spec = _spec(method)
    tensors = {
        "chosen_logps": chosen_logps,
        "rejected_logps": rejected_logps,
        "chosen_lengths": chosen_lengths,
        "rejected_lengths": rejected_lengths,
    }
    if spec.reference:
        tensors["ref_chosen_logps"] = ref_chosen_logps
        tensors["ref_rejected_logps"] = ref_rejected_logps
    for name, tensor in tensors.items():
        if tensor is None:
            raise ValueError(f"{method}: {name} is required (the method needs reference-model log-probs)")
        if not isinstance(tensor, Tensor):
            raise ValueError(f"{method}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.shape != chosen_logps.shape:
            raise ValueError(
                f"{method}: {name} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(chosen_logps.shape)} like chosen_logps"
            )
    refs = (ref_chosen_logps, ref_rejected_logps)
    return spec.fn(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, *refs, **hparams)
