"""Preference-optimization objectives: SimPO and the baselines of the SimPO paper's Table 3.

Every objective maps per-pair sequence log-probabilities to an *unreduced* per-pair loss and the
method's implicit rewards for the chosen and the rejected response::

    losses, chosen_rewards, rejected_rewards = preference_loss(
        "simpo", chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, beta=2.0, gamma=1.0
    )
    loss = losses.mean()

Conventions (x prompt, y_w chosen, y_l rejected, all tensors of shape [B]):

* ``*_logps`` are log π(y|x), summed over the response tokens (prompt tokens masked out).
* ``*_lengths`` are |y|, the response token counts (int or float); they are clamped to >= 1 before
  any division, so an empty response cannot produce inf/nan.
* avg(y) = log π(y|x) / |y| is the token-averaged log-likelihood, NLL_avg(y_w) = -avg(y_w).
* Where a paper writes an SFT term "-λ·log π(y_w|x)" it is implemented as λ·NLL_avg(y_w), the
  token-averaged negative log-likelihood of the chosen response, as TRL and the CPO/ORPO reference
  code do. A zero weight skips the term entirely.
* Rewards are each method's implicit reward r(x, y), used for held-out reward accuracy
  (fraction of pairs with r(x, y_w) > r(x, y_l)). They never contain a margin (γ, δ, 1/(2τ),
  R-DPO's α|y|), and they are detached from the graph.
* Arithmetic is float32 (inputs are cast with ``.float()``), so bf16 inputs are safe; all
  returned tensors are float32.
"""

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
from ablate.losses.registry import (
    LOSSES,
    METHOD_NAMES,
    LossSpec,
    accepted,
    needs_reference,
    preference_loss,
    validate_hparams,
)

__all__ = [
    "LOSSES",
    "METHOD_NAMES",
    "LossOutput",
    "LossSpec",
    "accepted",
    "cpo_loss",
    "dpo_loss",
    "ipo_loss",
    "kto_loss",
    "needs_reference",
    "orpo_loss",
    "preference_loss",
    "rdpo_loss",
    "rrhf_loss",
    "sft_loss",
    "simpo_loss",
    "slic_hf_loss",
    "validate_hparams",
]
