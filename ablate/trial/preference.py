"""What a preference-optimisation trial trains on and what it minimises: its epochs' batch order, the
tensors of a micro-batch, and its loss. Ray-free; both trial backends (``ablate.trial.backends``) and the
benchmarks (``bench/``) share these pieces, so a one-worker and an N-worker trial see the same pairs
in the same order."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from ablate import losses
from ablate.data import shared_prompt
from ablate.data import tokens as data_mod
from ablate.data.tokens import TokenizedPair
from ablate.trial.logps import PairLogps
from ablate.trial.train import LossFn, sequence_logps


def batch_order(
    pairs: list[TokenizedPair],
    batch_size: int,
    seed: int,
    epoch: int,
    group_by_length: bool = True,
    min_size: int = 1,
) -> list[list[int]]:
    """The pair indices of each micro-batch of ``epoch`` (grouped by the pair's length whatever the
    layout). A multi-worker trial asks for ``batch_size x workers`` pairs per micro-batch and
    ``min_size = workers`` (every worker needs a pair), and splits each between its workers."""
    lengths = [p.length for p in pairs]
    batches = data_mod.batch_indices(lengths, batch_size, seed * 1000 + epoch, group_by_length)
    return [b for b in batches if len(b) >= min_size]


def collator(
    pairs: list[TokenizedPair], pad_id: int, device: torch.device | str, share_prompt: bool = False
) -> Callable[[list[int]], dict[str, torch.Tensor]]:
    """``collate(indices)``: the batch of those pairs on ``device``, with their ``index`` into ``pairs``
    (for precomputed reference log-probs). With ``share_prompt`` (``ablate.data.shared_prompt.usable``) a
    pair is one row, prompt + chosen + rejected; otherwise two, the chosen rows first."""
    collate_rows = shared_prompt.collate if share_prompt else data_mod.collate_pairs

    def collate(idx: list[int]) -> dict[str, torch.Tensor]:
        batch = {k: v.to(device) for k, v in collate_rows([pairs[i] for i in idx], pad_id).items()}
        batch["index"] = torch.tensor(idx, device=device)
        return batch

    return collate


def loss_function(
    policy: torch.nn.Module,
    method: str,
    hparams: dict,
    ref_model: torch.nn.Module | None = None,
    ref_logps: PairLogps | None = None,
    ref_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> LossFn:
    """The mean per-pair loss of ``method`` on a batch, with the reference log-probs from
    ``ref_model`` (online, run inside ``ref_context()``: a LoRA policy's adapter switched off) or looked
    up in ``ref_logps`` (precomputed) when the method needs them."""

    def loss_fn(batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logps_of = shared_prompt.pair_logps if "segments" in batch else sequence_logps
        logps, lens = logps_of(policy, batch)
        b = logps.shape[0] // 2
        ref_w = ref_l = None
        if ref_model is not None:
            with torch.no_grad(), ref_context():
                ref, _ = logps_of(ref_model, batch)
            ref_w, ref_l = ref[:b], ref[b:]
        elif ref_logps is not None:
            idx = batch["index"].cpu()
            ref_w, ref_l = ref_logps.chosen[idx].to(logps.device), ref_logps.rejected[idx].to(logps.device)
        per_pair, r_w, r_l = losses.preference_loss(
            method, logps[:b], logps[b:], lens[:b], lens[b:], ref_w, ref_l, **hparams
        )
        loss = per_pair.mean()
        return loss, {"train_loss": loss.item(), "train_reward_accuracy": (r_w > r_l).float().mean().item()}

    return loss_fn
