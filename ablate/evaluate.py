"""Held-out metrics: reward accuracy and margins, likelihood/length statistics, reward/likelihood
agreement, and greedy generations scored by the task's oracle against the SFT model's.

``evaluate_policy`` is the one evaluation step of a trial, whatever its backend: the backend computes
log-probs and generations (split between workers or not), the metrics are computed here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ablate import losses, shared_prompt
from ablate.data import TokenizedPair, collate_pairs
from ablate.synthetic import oracle_reward
from ablate.train import sequence_logps

if TYPE_CHECKING:
    from ablate.backends import Backend
    from ablate.trial_config import TrialConfig
    from ablate.worker_cache import Splits


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
    computed once where the model allows it (``ablate.shared_prompt``), returned in the order of ``pairs``."""
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
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        batch = {k: v.to(device) for k, v in collate([pairs[i] for i in idx], pad_id).items()}
        summed, counts = logps_of(model, batch)
        logps[:, idx] = summed.float().cpu().view(2, -1)
        lengths[:, idx] = counts.float().cpu().view(2, -1)
    model.train(was_training)
    return PairLogps(logps[0], logps[1], lengths[0], lengths[1])


def implicit_rewards(
    method: str, hparams: dict, policy: PairLogps, ref: PairLogps | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The method's implicit rewards of the held-out chosen and rejected responses."""
    _, r_w, r_l = losses.preference_loss(
        method,
        policy.chosen,
        policy.rejected,
        policy.chosen_len,
        policy.rejected_len,
        ref_chosen_logps=None if ref is None else ref.chosen,
        ref_rejected_logps=None if ref is None else ref.rejected,
        **hparams,
    )
    return r_w, r_l


def spearman(x, y) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks (ties share theirs), NaN for a
    constant input; as ``scipy.stats.spearmanr``. By numpy, which torch has loaded already: importing
    ``scipy.stats`` (or pandas) here would cost a worker's first trial ~25 MB and ~0.5 s, after the
    trial's peak, where ``ablate.memory`` cannot tell it from the worker's (docs/benchmarks.md)."""
    ranks = []
    for v in (np.asarray(x, dtype=float), np.asarray(y, dtype=float)):
        _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
        ranks.append((np.cumsum(counts) - (counts - 1) / 2.0)[inverse])
    if ranks[0].std() == 0 or ranks[1].std() == 0:
        return float("nan")
    return float(np.corrcoef(ranks[0], ranks[1])[0, 1])


def preference_metrics(
    method: str, hparams: dict, policy: PairLogps, ref: PairLogps | None
) -> dict[str, float]:
    """Reward accuracy/margin under the method's own implicit reward, and likelihood statistics."""
    r_w, r_l = implicit_rewards(method, hparams, policy, ref)
    avg_w = policy.chosen / policy.chosen_len.clamp(min=1)
    avg_l = policy.rejected / policy.rejected_len.clamp(min=1)
    avg = torch.cat([avg_w, avg_l])
    lengths = torch.cat([policy.chosen_len, policy.rejected_len])
    rho = spearman(avg.numpy(), lengths.numpy())
    # Ranking agreement: does the reward order the pair the same way as average log-likelihood?
    agree = (torch.sign(r_w - r_l) == torch.sign(avg_w - avg_l)).float().mean()
    return {
        "reward_accuracy": (r_w > r_l).float().mean().item(),
        "reward_margin": (r_w - r_l).mean().item(),
        "chosen_avg_logp": avg_w.mean().item(),
        "rejected_avg_logp": avg_l.mean().item(),
        "length_logp_spearman": float(rho),
        "reward_likelihood_agreement": agree.item(),
    }


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int,
    device,
    **generate_kwargs,
) -> tuple[list[str], list[int]]:
    """Greedy completions of tokenized prompts (left-padded batches): texts and token counts (EOS excluded).

    ``generate_kwargs`` go to ``model.generate`` (e.g. ``synced_gpus=True`` under ZeRO-3)."""
    was_training = model.training
    model.eval()
    texts: list[str] = []
    counts: list[int] = []
    pad = tokenizer.pad_token_id
    for s in range(0, len(prompts), batch_size):
        chunk = prompts[s : s + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
            **generate_kwargs,
        )
        for row in out[:, width:].tolist():
            if tokenizer.eos_token_id in row:
                row = row[: row.index(tokenizer.eos_token_id)]
            texts.append(tokenizer.decode(row, skip_special_tokens=True).strip())
            counts.append(len(row))
    model.train(was_training)
    return texts, counts


def generation_metrics(
    prompts: list[str], generations: list[str], lengths: list[int], baseline: list[str] | None
) -> dict[str, float]:
    """Mean generated length (tokens); oracle reward and win rate against the SFT model (ties count half)."""
    metrics = {"gen_length": sum(lengths) / len(lengths)}
    if baseline is not None:
        ours = [oracle_reward(p, g) for p, g in zip(prompts, generations, strict=True)]
        theirs = [oracle_reward(p, b) for p, b in zip(prompts, baseline, strict=True)]
        wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(ours, theirs, strict=True)]
        metrics["oracle_win_rate"] = sum(wins) / len(wins)
        metrics["oracle_reward"] = sum(ours) / len(ours)
    return metrics


def heldout_records(
    method: str,
    hparams: dict,
    policy: PairLogps,
    ref: PairLogps | None,
    generations: tuple[list[str], list[str], list[int], list[str] | None] | None = None,
) -> dict:
    """Per-response held-out data for the report's scatter and contingency figures (``heldout.json``).

    ``pairs``: per held-out pair, the average log-likelihoods, lengths and implicit rewards of chosen
    and rejected. ``generations`` (prompts, texts, token counts, SFT baseline texts): per prompt, the
    generation's length and, on the built-in task, its and the SFT answer's oracle rewards."""
    r_w, r_l = implicit_rewards(method, hparams, policy, ref)

    def rounded(t: torch.Tensor) -> list[float]:
        return [round(float(v), 5) for v in t.tolist()]

    out: dict = {
        "pairs": {
            "chosen_avg_logp": rounded(policy.chosen / policy.chosen_len.clamp(min=1)),
            "rejected_avg_logp": rounded(policy.rejected / policy.rejected_len.clamp(min=1)),
            "chosen_len": [int(v) for v in policy.chosen_len.tolist()],
            "rejected_len": [int(v) for v in policy.rejected_len.tolist()],
            "chosen_reward": rounded(r_w),
            "rejected_reward": rounded(r_l),
        }
    }
    if generations is not None:
        prompts, texts, counts, baseline = generations
        out["generations"] = {"length": list(counts)}
        if baseline is not None:  # the built-in task: its oracle scores any text
            out["generations"]["oracle_reward"] = [
                round(oracle_reward(p, g), 5) for p, g in zip(prompts, texts, strict=True)
            ]
            out["generations"]["sft_oracle_reward"] = [
                round(oracle_reward(p, b), 5) for p, b in zip(prompts, baseline, strict=True)
            ]
    return out


def held_out_preference(
    cfg: TrialConfig, backend: Backend, policy, ref_logps: PairLogps | None, pairs: list[TokenizedPair], pad_id: int
) -> dict[str, float]:
    """Reward accuracy and margin on the held-out pairs, without generation: cheap enough to report
    during training (``evaluation.every_steps``) for an early-stopping scheduler."""
    pol = backend.pair_logps(policy, pairs, cfg.evaluation.batch_size, pad_id)
    m = preference_metrics(cfg.method, cfg.hparams, pol, ref_logps)
    return {"reward_accuracy": m["reward_accuracy"], "reward_margin": m["reward_margin"]}


def evaluate_policy(
    cfg: TrialConfig, backend: Backend, policy, ref_logps: PairLogps | None, tokenizer, splits: Splits
) -> tuple[dict[str, float], dict]:
    """The trial's held-out metrics, and its per-response records (``heldout_records``)."""
    ev, pad = cfg.evaluation, tokenizer.pad_token_id
    pol = backend.pair_logps(policy, splits.held_out, ev.batch_size, pad)
    metrics = preference_metrics(cfg.method, cfg.hparams, pol, ref_logps)
    generations = None
    if ev.generate:
        n = ev.num_prompts
        prompts = [p.prompt_ids for p in splits.held_out[:n]]
        texts, counts = backend.generate(policy, tokenizer, prompts, ev.max_new_tokens, ev.batch_size)
        baseline = json.loads(Path(cfg.start.baseline).read_text()) if cfg.start.baseline else None
        prompt_texts = [r["prompt"] for r in splits.held_out_rows[:n]]
        metrics.update(generation_metrics(prompt_texts, texts, counts, baseline))
        generations = (prompt_texts, texts, counts, baseline)
    return metrics, heldout_records(cfg.method, cfg.hparams, pol, ref_logps, generations)
