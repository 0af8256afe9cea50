"""Held-out metrics: reward accuracy and margins, likelihood/length statistics, reward/likelihood
agreement, and generations judged against the start point's (``ablate.judging.generations``, ``ablate.judging.scoring``).

``evaluate_policy`` is the one evaluation step of a trial, whatever its backend: the backend computes
log-probs and generations (split between workers or not), the metrics are computed here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ablate import losses, progress
from ablate.data.synthetic import oracle_reward
from ablate.data.tokens import TokenizedPair
from ablate.judging.generations import GenerationSet
from ablate.trial import reference
from ablate.trial.logps import PairLogps

if TYPE_CHECKING:
    from ablate.trial.backends import Backend
    from ablate.trial.config import TrialConfig
    from ablate.trial.worker_cache import Splits


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
    trial's peak, where ``ablate.trial.memory_probe`` cannot tell it from the worker's (docs/benchmarks.md)."""
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
    sampling: dict | None = None,
    **generate_kwargs,
) -> tuple[list[str], list[int]]:
    """Completions of tokenized prompts: texts and token counts (the stop token excluded), in the order
    of ``prompts``. Batches of similar prompt lengths (sorted, so little padding), left-padded, with
    the KV cache. ``sampling`` (``ablate.judging.generations.sampling``): ``temperature`` (0: greedy), ``top_p``
    and ``stop_token_ids`` that end a generation besides EOS.

    ``generate_kwargs`` go to ``model.generate`` (e.g. ``synced_gpus=True`` under ZeRO-3)."""
    sampling = dict(sampling or {})
    stops = [tokenizer.eos_token_id, *sampling.pop("stop_token_ids", [])]
    temperature = sampling.pop("temperature", 0.0)
    # Sampling as vLLM does it by default (the paper's generations): no top-k cut unless asked for.
    decoding = (
        {"do_sample": True, "temperature": temperature, "top_k": 0, **sampling}
        if temperature > 0
        else {"do_sample": False}
    )
    was_training = model.training
    model.eval()
    texts: list[str] = [""] * len(prompts)
    counts: list[int] = [0] * len(prompts)
    pad = tokenizer.pad_token_id
    shown = progress.loop(len(prompts), "prompts")  # shown only inside a progress.label (a long step)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        chunk = [prompts[i] for i in idx]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad,
            eos_token_id=stops if len(stops) > 1 else stops[0],
            use_cache=True,  # also for a policy trained with gradient checkpointing (which turns it off)
            **decoding,
            **generate_kwargs,
        )
        for i, row in zip(idx, out[:, width:].tolist(), strict=True):
            end = next((k for k, t in enumerate(row) if t in stops), len(row))
            texts[i] = tokenizer.decode(row[:end], skip_special_tokens=True).strip()
            counts[i] = end
        shown.advance(len(chunk))
    shown.close()
    model.train(was_training)
    return texts, counts


def generation_metrics(
    prompts: list[str], generations: list[str], lengths: list[int], baseline: list[str] | None
) -> dict[str, float]:
    """Mean generated length (tokens); with ``baseline`` (the built-in task's SFT answers), the oracle
    reward and win rate against the SFT model (ties count half)."""
    metrics = {"gen_length": sum(lengths) / len(lengths)}
    if baseline is not None:
        ours = [oracle_reward(p, g) for p, g in zip(prompts, generations, strict=True)]
        theirs = [oracle_reward(p, b) for p, b in zip(prompts, baseline, strict=True)]
        wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(ours, theirs, strict=True)]
        metrics["oracle_win_rate"] = sum(wins) / len(wins)
        metrics["oracle_reward"] = sum(ours) / len(ours)
    return metrics


@dataclass
class GenerationRecord:
    """A trial's judged generations, for ``heldout.json``: its own set, the baseline's (stored once, in
    its cache file), the judges' scores of both, and whether the oracle applies (built-in task)."""

    ours: GenerationSet
    baseline: GenerationSet
    baseline_file: str
    judged: dict[str, dict]
    oracle: bool


def heldout_records(
    method: str,
    hparams: dict,
    policy: PairLogps,
    ref: PairLogps | None,
    generations: GenerationRecord | None = None,
) -> dict:
    """Per-response held-out data for the report's figures and for re-judging (``heldout.json``).

    ``pairs``: per held-out pair, the average log-likelihoods, lengths and implicit rewards of chosen
    and rejected. ``generations``: per evaluation prompt, the prompt, the answer, its token count and
    the judges' scores of it and of the baseline's answer (``judges``), the baseline's file (its texts
    are stored once per sweep) and, on the built-in task, the oracle rewards of both answers."""
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
        g = generations
        out["generations"] = {
            "length": list(g.ours.lengths), "prompt": list(g.ours.prompts), "text": list(g.ours.texts),
            "baseline_length": list(g.baseline.lengths), "baseline_chars": [len(t) for t in g.baseline.texts],
            "baseline_file": g.baseline_file,
            "baseline_key": Path(g.baseline_file).stem, "judges": g.judged,
        }  # fmt: skip
        if g.oracle:  # the built-in task: its oracle scores any text
            out["generations"]["oracle_reward"] = [
                round(oracle_reward(p, t), 5) for p, t in zip(g.ours.prompts, g.ours.texts, strict=True)
            ]
            out["generations"]["sft_oracle_reward"] = [
                round(oracle_reward(p, b), 5) for p, b in zip(g.baseline.prompts, g.baseline.texts, strict=True)
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


@dataclass
class StartEval:
    """What evaluation compares the trained policy with, taken from the start point: its answers to the
    evaluation prompts (the baseline) and its held-out log-probs (for ``chosen_logp_change``)."""

    baseline: GenerationSet | None = None
    baseline_file: Path | None = None
    logps: PairLogps | None = None


def before_training(cfg: TrialConfig, backend: Backend, policy, tokenizer, splits: Splits) -> StartEval:
    """``StartEval`` from the policy before its first step, which is the start point then: a reference-free
    trial loads no second model for it. Nothing for a DeepSpeed trial (its sharded policy generates only
    inside its engine; evaluation asks the start point then), a resumed one, or without generation."""
    from ablate.judging import generations as gen_mod

    if not cfg.evaluation.generate or cfg.distributed:
        return StartEval()
    with backend.compute():
        prompts, prompt_ids = gen_mod.eval_prompts(cfg, splits, tokenizer)
        base, path = gen_mod.baseline(cfg, backend, tokenizer, prompts, prompt_ids, start_model=policy)
        logps = None
        if cfg.reference is None:  # methods with a reference have the start point's log-probs anyway
            logps = backend.pair_logps(policy, splits.held_out, cfg.evaluation.batch_size, tokenizer.pad_token_id)
    return StartEval(base, path, logps)


def evaluate_policy(
    cfg: TrialConfig, backend: Backend, policy, ref_logps: PairLogps | None, tokenizer, splits: Splits,
    start: StartEval | None = None,
) -> tuple[dict[str, float], dict]:  # fmt: skip
    """The trial's held-out metrics, and its per-response records (``heldout_records``): preference
    metrics on the held-out pairs; with ``evaluation.generate``, generations on the evaluation prompts,
    the baseline's (``ablate.judging.generations``), collapse diagnostics and every judge's win rates
    (``ablate.judging.scoring``; judged by the main worker)."""
    from ablate.judging import generations as gen_mod
    from ablate.judging import judges
    from ablate.judging import scoring as judging
    ev, pad = cfg.evaluation, tokenizer.pad_token_id
    pol = backend.pair_logps(policy, splits.held_out, ev.batch_size, pad)
    metrics = preference_metrics(cfg.method, cfg.hparams, pol, ref_logps)
    if not ev.generate:
        return metrics, heldout_records(cfg.method, cfg.hparams, pol, ref_logps)
    prompts, prompt_ids = gen_mod.eval_prompts(cfg, splits, tokenizer)
    ours = gen_mod.generate_set(backend, policy, tokenizer, prompts, prompt_ids, ev)
    start = start or StartEval()
    if start.baseline is not None:
        base, base_file = start.baseline, start.baseline_file
    else:
        base, base_file = gen_mod.baseline(cfg, backend, tokenizer, prompts, prompt_ids)
    # The start point's held-out log-probs: the reference's, or the untrained policy's, or (DeepSpeed,
    # reference-free) computed once per sweep by the start point and cached.
    start_logps = ref_logps or start.logps or reference.precomputed(cfg, backend, splits.held_out, "eval", pad)
    oracle = judges.oracle_applies(ev, cfg.data)
    metrics.update(generation_metrics(prompts, ours.texts, ours.lengths, base.texts if oracle else None))
    metrics.update(gen_mod.collapse_metrics(ours.texts, ours.lengths, ev.new_tokens))
    change = (pol.chosen / pol.chosen_len.clamp(min=1)).mean() - (
        start_logps.chosen / start_logps.chosen_len.clamp(min=1)
    ).mean()
    metrics.update(chosen_logp_change=float(change), chosen_logp_fell=float(change < 0))
    judged = judging.Judged()
    specs = judges.effective(ev, cfg.data)
    if specs and backend.is_main:
        ctx = judges.Context(backend.device, cfg.cache_dir, cfg.start.path, cfg.data.model_dump(), log=lambda *_: None,
                             paths=(cfg.provenance or {}).get("judge_paths"))  # fmt: skip
        judged = judging.judge_generations(specs, ctx, ours, base, base_file.stem, splits.held_out_rows,
                                           oracle_truth=cfg.data.source == "builtin:synthetic")  # fmt: skip
    metrics.update(judged.metrics)
    record = GenerationRecord(ours, base, str(base_file), judged.records, oracle)
    return metrics, heldout_records(cfg.method, cfg.hparams, pol, ref_logps, record)
