"""The registry of objectives: names, hyperparameters with their defaults and checks, dispatch."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class LossSpec:
    """One registered objective: its function, whether it needs π_ref, and its hyperparameters."""

    fn: Callable[..., LossOutput]
    reference: bool
    defaults: dict[str, float | bool]
    doc: str


LOSSES: dict[str, LossSpec] = {
    "simpo": LossSpec(
        simpo_loss,
        False,
        {"beta": 2.0, "gamma": 1.0, "gamma_beta_ratio": 0.5, "length_normalize": True, "sft_weight": 0.0},
        "SimPO: -log σ(β·avg_w - β·avg_l - γ), reference-free, length-normalized reward.",
    ),
    "dpo": LossSpec(dpo_loss, True, {"beta": 0.1}, "DPO: -log σ(β·Δ log-ratio) against π_ref."),
    "ipo": LossSpec(ipo_loss, True, {"tau": 0.1}, "IPO: (Δ summed log-ratio - 1/(2τ))² against π_ref."),
    "cpo": LossSpec(
        cpo_loss, False, {"beta": 0.1, "sft_weight": 1.0}, "CPO: -log σ(β·Δ logp) + λ·NLL_avg(y_w)."
    ),
    "kto": LossSpec(
        kto_loss,
        True,
        {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0},
        "KTO: prospect-theoretic sigmoid losses around a batch KL reference point.",
    ),
    "orpo": LossSpec(
        orpo_loss, False, {"or_weight": 0.1}, "ORPO: NLL_avg(y_w) - λ·log σ(Δ log-odds of avg likelihood)."
    ),
    "rdpo": LossSpec(
        rdpo_loss, True, {"beta": 0.1, "alpha": 0.05}, "R-DPO: DPO with a length term α·(|y_w| - |y_l|)."
    ),
    "rrhf": LossSpec(rrhf_loss, False, {"sft_weight": 1.0}, "RRHF: max(0, avg_l - avg_w) + λ·NLL_avg(y_w)."),
    "slic_hf": LossSpec(
        slic_hf_loss,
        False,
        {"delta": 1.0, "sft_weight": 0.1},
        "SLiC-HF: max(0, δ - logp_w + logp_l) + λ·NLL_avg(y_w).",
    ),
    "sft": LossSpec(sft_loss, False, {}, "SFT: token-averaged NLL of the chosen response."),
}

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


def validate_hparams(method: str, hparams: Mapping[str, Any]) -> dict[str, float | bool]:
    """Check ``hparams`` for ``method`` and return them merged over the method's defaults.

    Numbers are returned as ``float``. For SimPO, ``gamma`` (absolute margin) and
    ``gamma_beta_ratio`` (γ/β, the SimPO repository's convention) are mutually exclusive; the
    one given determines the other through the (merged) β, and if neither is given the default
    absolute γ=1.0 is kept. Raises ``ValueError`` naming the method and the argument.
    """
    spec = _spec(method)
    unknown = [name for name in hparams if name not in spec.defaults]
    if unknown:
        accepted = ", ".join(spec.defaults) or "none"
        raise ValueError(
            f"{method}: unknown hyperparameter {unknown[0]!r}; accepted hyperparameters: {accepted}"
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
    if "gamma_beta_ratio" in merged:
        if "gamma" in hparams and "gamma_beta_ratio" in hparams:
            raise ValueError(
                f"{method}: pass either gamma or gamma_beta_ratio, not both "
                f"(got gamma={hparams['gamma']!r}, gamma_beta_ratio={hparams['gamma_beta_ratio']!r})"
            )
        if "gamma_beta_ratio" in hparams:
            merged["gamma"] = merged["gamma_beta_ratio"] * merged["beta"]
        else:
            merged["gamma_beta_ratio"] = merged["gamma"] / merged["beta"]
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
        **hparams: the method's hyperparameters by their paper names (see ``LOSSES[m].defaults``).

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, float32 tensors of shape [B]; ``losses`` is
        unreduced, the rewards are detached and contain no margin.

    Raises:
        ValueError: unknown method or hyperparameter, invalid value, missing reference log-probs,
            or mismatched shapes; the message names the method and the argument.
    """
    spec = _spec(method)
    params = validate_hparams(method, hparams)
    params.pop("gamma_beta_ratio", None)  # resolved into gamma
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
    return spec.fn(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, *refs, **params)
