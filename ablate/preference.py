"""What a preference-optimisation trial trains on and what it minimises: its epochs' batches and
its loss. Ray-free; ``ablate.trial`` and the benchmarks (``bench/``) share these two pieces."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ablate import data as data_mod
from ablate import losses, shared_prompt
from ablate.data import TokenizedPair
from ablate.evaluate import PairLogps
from ablate.train import LossFn, sequence_logps


def batch_maker(
    pairs: list[TokenizedPair],
    pad_id: int,
    batch_size: int,
    seed: int,
    group_by_length: bool,
    device: torch.device | str,
    share_prompt: bool = False,
) -> Callable[[int], list[dict[str, torch.Tensor]]]:
    """``make_batches(epoch)``: that epoch's collated batches, each with the pairs' ``index`` into
    ``pairs`` (for precomputed reference log-probs). With ``share_prompt`` (see
    ``ablate.shared_prompt.usable``) a pair is one row, prompt + chosen + rejected; otherwise two,
    the chosen rows first, then the rejected ones."""
    # Group by the pair's length whatever the layout, so the batches (and the training trajectory) are
    # the same with or without a shared prompt, and the same as a multi-worker trial's.
    lengths = [p.length for p in pairs]
    collate = shared_prompt.collate if share_prompt else data_mod.collate_pairs

    def make_batches(epoch: int) -> list[dict[str, torch.Tensor]]:
        out = []
        for idx in data_mod.batch_indices(lengths, batch_size, seed * 1000 + epoch, group_by_length):
            batch = {k: v.to(device) for k, v in collate([pairs[i] for i in idx], pad_id).items()}
            batch["index"] = torch.tensor(idx, device=device)
            out.append(batch)
        return out

    return make_batches


def loss_function(
    policy: torch.nn.Module,
    method: str,
    hparams: dict,
    ref_model: torch.nn.Module | None = None,
    ref_logps: PairLogps | None = None,
) -> LossFn:
    """The mean per-pair loss of ``method`` on a batch, with the reference log-probs from
    ``ref_model`` (online) or looked up in ``ref_logps`` (precomputed) when the method needs them."""

    def loss_fn(batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logps_of = shared_prompt.pair_logps if "segments" in batch else sequence_logps
        logps, lens = logps_of(policy, batch)
        b = logps.shape[0] // 2
        ref_w = ref_l = None
        if ref_model is not None:
            with torch.no_grad():
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
