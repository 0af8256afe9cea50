"""A model's summed response log-probs over preference pairs (``PairLogps``): what the reference, the
held-out metrics and the backends compute and pass around."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ablate import progress
from ablate.data import shared_prompt
from ablate.data.tokens import TokenizedPair, collate_pairs
from ablate.trial.train import sequence_logps


@dataclass
class PairLogps:
    """Summed response log-probs and lengths of chosen and rejected, one entry per pair."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_len: torch.Tensor
    rejected_len: torch.Tensor


@torch.no_grad()
def pair_logps(model, pairs: list[TokenizedPair], batch_size: int, pad_id: int, device) -> PairLogps:
    """Per-pair log-probs, computed in batches of similar lengths (little padding), with each prompt
    computed once where the model allows it (``ablate.data.shared_prompt``), returned in the order of ``pairs``."""
    was_training = model.training
    model.eval()
    share = shared_prompt.usable(model, pairs)
    collate, logps_of = (
        (shared_prompt.collate, shared_prompt.pair_logps) if share else (collate_pairs, sequence_logps)
    )
    order = sorted(
        range(len(pairs)), key=lambda i: shared_prompt.row_length(pairs[i]) if share else pairs[i].length
    )
    logps = torch.empty(2, len(pairs))
    lengths = torch.empty(2, len(pairs))
    with progress.loop(len(order), "pairs") as shown:  # shown only inside a progress.label (a long step)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            batch = {k: v.to(device) for k, v in collate([pairs[i] for i in idx], pad_id).items()}
            summed, counts = logps_of(model, batch)
            logps[:, idx] = summed.float().cpu().view(2, -1)
            lengths[:, idx] = counts.float().cpu().view(2, -1)
            shown.advance(len(idx))
    model.train(was_training)
    return PairLogps(logps[0], logps[1], lengths[0], lengths[1])
