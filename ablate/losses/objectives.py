"""The objectives of the SimPO paper's Table 3 (arXiv:2405.14734), one documented function each.

All share one signature so that ``ablate.losses.preference_loss`` can dispatch uniformly;
reference-free objectives accept and ignore the reference log-probs. Conventions: see
``ablate.losses``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

LossOutput = tuple[Tensor, Tensor, Tensor]

# --------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------


def _lengths(lengths: Tensor, like: Tensor) -> Tensor:
    """Response lengths as float32 on ``like``'s device, clamped to >= 1."""
    return lengths.to(device=like.device, dtype=torch.float32).clamp(min=1.0)


def _avg_logps(logps: Tensor, lengths: Tensor) -> Tensor:
    """Token-averaged log-likelihood avg(y) = log π(y|x) / max(|y|, 1), in float32."""
    return logps.float() / _lengths(lengths, logps)


def _log_ratio(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """Summed log-ratio log π(y|x) - log π_ref(y|x), in float32."""
    return logps.float() - ref_logps.float()


def _sigmoid_loss(logits: Tensor) -> Tensor:
    """Bradley-Terry negative log-likelihood -log σ(logits) (numerically stable)."""
    return -F.logsigmoid(logits)


def _add_sft(losses: Tensor, sft_weight: float, chosen_logps: Tensor, chosen_lengths: Tensor) -> Tensor:
    """Add ``sft_weight · NLL_avg(y_w)``; a zero weight adds nothing (not even 0·inf)."""
    if sft_weight == 0:
        return losses
    return losses + sft_weight * -_avg_logps(chosen_logps, chosen_lengths)


def _rewards(chosen: Tensor, rejected: Tensor) -> tuple[Tensor, Tensor]:
    return chosen.detach(), rejected.detach()


# --------------------------------------------------------------------------------------------------
# Objectives. All share one signature so that :func:`preference_loss` can dispatch uniformly;
# reference-free objectives accept and ignore the reference log-probs.
# --------------------------------------------------------------------------------------------------


def simpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    *,
    beta: float = 2.0,
    gamma: float = 1.0,
    length_normalize: bool = True,
    sft_weight: float = 0.0,
) -> LossOutput:
    """SimPO (Meng et al., 2024, arXiv:2405.14734), reference-free::

        r(x, y) = β/|y| · log π(y|x)           (β · log π(y|x) if length_normalize=False: "w/o LN")
        loss    = -log σ( r(x, y_w) - r(x, y_l) - γ ) + sft_weight · NLL_avg(y_w)

    γ is the absolute target reward margin; the SimPO repository's ``gamma_beta_ratio`` is γ/β
    (:func:`validate_hparams` converts it). ``sft_weight`` is the repository's optional SFT term
    (default 0, i.e. pure SimPO); label smoothing is not implemented. Rewards are r without γ.
    """
    if length_normalize:
        chosen_rewards = beta * _avg_logps(chosen_logps, chosen_lengths)
        rejected_rewards = beta * _avg_logps(rejected_logps, rejected_lengths)
    else:
        chosen_rewards = beta * chosen_logps.float()
        rejected_rewards = beta * rejected_logps.float()
    losses = _sigmoid_loss(chosen_rewards - rejected_rewards - gamma)
    losses = _add_sft(losses, sft_weight, chosen_logps, chosen_lengths)
    return (losses, *_rewards(chosen_rewards, rejected_rewards))


def dpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> LossOutput:
    """DPO (Rafailov et al., 2023, arXiv:2305.18290)::

        r(x, y) = β · ( log π(y|x) - log π_ref(y|x) )        (summed log-probs, no length term)
        loss    = -log σ( r(x, y_w) - r(x, y_l) )

    No label smoothing (cDPO) and no length normalization. Lengths are unused.
    """
    chosen_rewards = beta * _log_ratio(chosen_logps, ref_chosen_logps)
    rejected_rewards = beta * _log_ratio(rejected_logps, ref_rejected_logps)
    losses = _sigmoid_loss(chosen_rewards - rejected_rewards)
    return (losses, *_rewards(chosen_rewards, rejected_rewards))


def ipo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    tau: float = 0.1,
) -> LossOutput:
    """IPO (Azar et al., 2023, arXiv:2310.12036)::

        h    = ( log π(y_w|x) - log π_ref(y_w|x) ) - ( log π(y_l|x) - log π_ref(y_l|x) )
        loss = ( h - 1/(2τ) )²

    The log-ratios are *summed* over tokens, as in the SimPO paper's Table 3 and OpenRLHF (TRL's
    ``loss_type="ipo"`` divides each log-ratio by the completion length instead). Rewards are the
    unscaled log-ratios log π(y|x) - log π_ref(y|x) (τ is a regression target, not a reward scale).
    """
    chosen_rewards = _log_ratio(chosen_logps, ref_chosen_logps)
    rejected_rewards = _log_ratio(rejected_logps, ref_rejected_logps)
    losses = (chosen_rewards - rejected_rewards - 1.0 / (2.0 * tau)) ** 2
    return (losses, *_rewards(chosen_rewards, rejected_rewards))


def cpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    *,
    beta: float = 0.1,
    sft_weight: float = 1.0,
) -> LossOutput:
    """CPO (Xu et al., 2024, arXiv:2401.08417), reference-free::

        r(x, y) = β · log π(y|x)                              (summed, not length-normalized)
        loss    = -log σ( r(x, y_w) - r(x, y_l) ) + sft_weight · NLL_avg(y_w)

    ``sft_weight`` is the paper's λ (TRL's ``cpo_alpha``). With sft_weight=0 the loss equals SimPO
    with length_normalize=False, γ=0 and the same β.
    """
    chosen_rewards = beta * chosen_logps.float()
    rejected_rewards = beta * rejected_logps.float()
    losses = _sigmoid_loss(chosen_rewards - rejected_rewards)
    losses = _add_sft(losses, sft_weight, chosen_logps, chosen_lengths)
    return (losses, *_rewards(chosen_rewards, rejected_rewards))


def kto_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> LossOutput:
    """KTO (Ethayarajh et al., 2024, arXiv:2402.01306) on paired data (chosen = desirable, rejected = undesirable)::

        ρ(y)  = log π(y|x) - log π_ref(y|x)                   (summed log-ratio)
        z_ref = β · max(0, mean of the 2B values ρ(y_w), ρ(y_l) in the batch), no gradient
        loss  = λ_D · (1 - σ( β·ρ(y_w) - z_ref )) + λ_U · (1 - σ( z_ref - β·ρ(y_l) ))

    z_ref is the paper's reference point E[β·KL(π‖π_ref)], estimated on the batch's own pairs and
    detached (TRL instead estimates it on mismatched prompt/completion pairs). λ_D, λ_U are
    ``desirable_weight``, ``undesirable_weight``. The SimPO paper's Table 3 prints the undesirable
    term as "+λ_l·σ(z_ref - β·ρ(y_l))", whose minimisation would *raise* the rejected likelihood; we
    follow the original KTO paper (λ_U - v(x, y_l) = λ_U·(1 - σ(z_ref - β·ρ(y_l)))). Each pair's loss
    is the sum of its desirable and its undesirable term. Rewards are β·ρ (without z_ref).
    """
    chosen_ratio = _log_ratio(chosen_logps, ref_chosen_logps)
    rejected_ratio = _log_ratio(rejected_logps, ref_rejected_logps)
    kl = torch.cat([chosen_ratio, rejected_ratio]).mean().clamp(min=0)
    z_ref = (beta * kl).detach()
    chosen_rewards = beta * chosen_ratio
    rejected_rewards = beta * rejected_ratio
    losses = desirable_weight * (1 - torch.sigmoid(chosen_rewards - z_ref)) + undesirable_weight * (
        1 - torch.sigmoid(z_ref - rejected_rewards)
    )
    return (losses, *_rewards(chosen_rewards, rejected_rewards))


def _log_odds(avg_logps: Tensor) -> Tensor:
    """log( p / (1 - p) ) with p = exp(avg), as avg - log(-expm1(avg)); avg clamped to <= -1e-6."""
    avg_logps = avg_logps.clamp(max=-1e-6)
    return avg_logps - torch.log(-torch.expm1(avg_logps))


def orpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    *,
    or_weight: float = 0.1,
) -> LossOutput:
    """ORPO (Hong et al., 2024, arXiv:2403.07691), reference-free::

        p(y|x)  = exp( avg(y) ),  odds(y) = p / (1 - p)
        loss    = NLL_avg(y_w) - λ · log σ( log odds(y_w) - log odds(y_l) )

    λ is ``or_weight`` (TRL calls it ``beta``). log odds = avg - log(1 - exp(avg)) is computed as
    avg - log(-expm1(avg)) with avg clamped to <= -1e-6, which is finite for every avg <= 0 (the
    clamp only bites when a response has probability ~1, where it stops that term's gradient).
    Rewards are the log odds, monotone in avg (TRL logs β·avg instead; the ranking is the same).
    """
    chosen_avg = _avg_logps(chosen_logps, chosen_lengths)
    chosen_rewards = _log_odds(chosen_avg)
    rejected_rewards = _log_odds(_avg_logps(rejected_logps, rejected_lengths))
    losses = -chosen_avg + or_weight * _sigmoid_loss(chosen_rewards - rejected_rewards)
    return (losses, *_rewards(chosen_rewards, rejected_rewards))


def rdpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    alpha: float = 0.05,
) -> LossOutput:
    """R-DPO (Park et al., 2024, arXiv:2403.19159), DPO with a length regularizer::

        r(x, y) = β · ( log π(y|x) - log π_ref(y|x) )
        loss    = -log σ( r(x, y_w) - r(x, y_l) + (α·|y_w| - α·|y_l|) )

    The sign of the length term is the paper's (from the length-penalised reward r - α|y|):
    a longer chosen response already has a larger margin, so the policy is pushed less to
    lengthen it. |y| is the clamped token count. With α=0 this is exactly DPO. Rewards are the DPO
    rewards, without the α·|y| term.
    """
    chosen_rewards = beta * _log_ratio(chosen_logps, ref_chosen_logps)
    rejected_rewards = beta * _log_ratio(rejected_logps, ref_rejected_logps)
    length_term = alpha * (_lengths(chosen_lengths, chosen_logps) - _lengths(rejected_lengths, chosen_logps))
    losses = _sigmoid_loss(chosen_rewards - rejected_rewards + length_term)
    return (losses, *_rewards(chosen_rewards, rejected_rewards))


def rrhf_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    *,
    sft_weight: float = 1.0,
) -> LossOutput:
    """RRHF (Yuan et al., 2023, arXiv:2304.05302) on one pair, reference-free::

        loss = max(0, -avg(y_w) + avg(y_l)) + λ · NLL_avg(y_w)

    The ranking hinge compares length-normalized log-likelihoods, with no margin; λ is
    ``sft_weight``. Rewards are avg(y).
    """
    chosen_rewards = _avg_logps(chosen_logps, chosen_lengths)
    rejected_rewards = _avg_logps(rejected_logps, rejected_lengths)
    losses = F.relu(rejected_rewards - chosen_rewards)
    losses = _add_sft(losses, sft_weight, chosen_logps, chosen_lengths)
    return (losses, *_rewards(chosen_rewards, rejected_rewards))


def slic_hf_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    *,
    delta: float = 1.0,
    sft_weight: float = 0.1,
) -> LossOutput:
    """SLiC-HF (Zhao et al., 2023, arXiv:2305.10425), calibration hinge on *summed* log-probs, reference-free::

        loss = max(0, δ - log π(y_w|x) + log π(y_l|x)) + λ · NLL_avg(y_w)

    δ is the hinge margin (``delta``), λ is ``sft_weight`` (the regularizer is the token-averaged
    NLL of the chosen response rather than of a separate SFT target). Rewards are log π(y|x).
    """
    chosen_rewards = chosen_logps.float()
    rejected_rewards = rejected_logps.float()
    losses = F.relu(delta - chosen_rewards + rejected_rewards)
    losses = _add_sft(losses, sft_weight, chosen_logps, chosen_lengths)
    return (losses, *_rewards(chosen_rewards, rejected_rewards))


def sft_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
) -> LossOutput:
    """Supervised fine-tuning on the chosen responses::

        loss = NLL_avg(y_w) = -log π(y_w|x) / |y_w|

    The rejected response gets no gradient. Rewards are avg(y), so an SFT model's held-out reward
    accuracy (average-likelihood ranking) can still be reported.
    """
    chosen_rewards = _avg_logps(chosen_logps, chosen_lengths)
    rejected_rewards = _avg_logps(rejected_logps, rejected_lengths)
    return (-chosen_rewards, *_rewards(chosen_rewards, rejected_rewards))


# --------------------------------------------------------------------------------------------------
# Registry and validation
# --------------------------------------------------------------------------------------------------
