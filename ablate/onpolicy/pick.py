"""From judged samples to preference pairs (SimPO v0.2's ``post_process.py`` and
``reward_model_annotate.py``): per prompt, drop empty and (``dedupe``) repeated answers, keep the best as
``chosen`` and the worst (``best_worst``) or a seeded random other answer (``best_random``) as
``rejected``; drop the prompt when fewer than two answers are left, on a tie, or under ``min_margin``.
And the built data set's summary: pairs kept and dropped by reason, the margin's distribution, and chosen
vs rejected length (the length bias the judge brings in)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from statistics import mean

import numpy as np

from ablate.cache import cache_key

# Why a prompt gives no pair, in the order they are checked.
DROP_REASONS = ("empty", "duplicates", "ties", "margin")


def pick(record: dict, how: str, min_margin: float, dedupe: bool) -> dict | str:
    """One prompt's pair from its judged samples (``record``: a shard line), or the reason it has none.
    Ties between equal scores go to the earlier sample, so the choice is deterministic."""
    samples = [s for s in record["samples"] if s["text"].strip()]
    if len(samples) < 2:
        return "empty"
    if dedupe:
        seen: dict[str, dict] = {}
        for s in samples:
            seen.setdefault(s["text"], s)
        samples = list(seen.values())
        if len(samples) < 2:
            return "duplicates"
    best = max(samples, key=lambda s: s["score"])  # max/min keep the first of equal scores
    if how == "best_worst":
        worst = min(samples, key=lambda s: s["score"])
    else:  # best_random: any other answer, drawn with a seed of the prompt's own (resumable, reproducible)
        rng = random.Random(cache_key(["best_random", record["prompt_index"]]))
        worst = rng.choice([s for s in samples if s is not best])
    if best is worst or best["score"] == worst["score"] or best["text"] == worst["text"]:
        return "ties"
    if best["score"] - worst["score"] < min_margin:
        return "margin"
    return {
        "prompt": record["prompt"],
        "chosen": best["text"],
        "rejected": worst["text"],
        "chosen_score": best["score"],
        "rejected_score": worst["score"],
        "chosen_id": best["id"],
        "rejected_id": worst["id"],
        "chosen_tokens": best["tokens"],
        "rejected_tokens": worst["tokens"],
        "prompt_index": record["prompt_index"],
    }


def pairs_of(records: Iterable[dict], how: str, min_margin: float, dedupe: bool) -> tuple[list[dict], dict[str, int]]:
    """The pairs of every prompt, in prompt order, and how many prompts were dropped for each reason."""
    pairs, dropped = [], dict.fromkeys(DROP_REASONS, 0)
    for record in records:
        out = pick(record, how, min_margin, dedupe)
        if isinstance(out, str):
            dropped[out] += 1
        else:
            pairs.append(out)
    return pairs, dropped


def summary(pairs: list[dict], dropped: dict[str, int], prompts: int, samples: int) -> dict:
    """What the report shows of a built data set."""
    out: dict = {"prompts": prompts, "samples": samples, "kept": len(pairs), "dropped": dict(dropped)}
    if not pairs:
        return out
    margins = np.array([p["chosen_score"] - p["rejected_score"] for p in pairs])
    q = np.quantile(margins, [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
    out["margin"] = {"mean": float(margins.mean()), **{k: float(v) for k, v in
                     zip(("min", "p10", "p25", "median", "p75", "p90", "max"), q, strict=True)}}  # fmt: skip
    chosen = [p["chosen_tokens"] for p in pairs]
    rejected = [p["rejected_tokens"] for p in pairs]
    out["length"] = {
        "chosen_mean_tokens": mean(chosen),
        "rejected_mean_tokens": mean(rejected),
        # The judge's length bias: how often the longer answer wins (0.5: none).
        "chosen_longer_rate": mean(float(c > r) for c, r in zip(chosen, rejected, strict=True)),
        "chosen_shorter_rate": mean(float(c < r) for c, r in zip(chosen, rejected, strict=True)),
    }
    return out


def describe(s: dict) -> str:
    """One paragraph for the CLI and the report."""
    d = s["dropped"]
    text = (f"{s['kept']} pairs kept of {s['prompts']} prompts x {s['samples']} samples; dropped: "
            f"{d['empty']} empty, {d['duplicates']} duplicates, {d['ties']} ties, {d['margin']} under the margin")  # fmt: skip
    if "margin" in s:
        m, n = s["margin"], s["length"]
        text += (f". Score margin: median {m['median']:.3g} (p10 {m['p10']:.3g}, p90 {m['p90']:.3g}). Length: "
                 f"chosen {n['chosen_mean_tokens']:.1f} vs rejected {n['rejected_mean_tokens']:.1f} tokens on average; "
                 f"chosen is the longer answer in {n['chosen_longer_rate']:.0%} of pairs, the shorter in "
                 f"{n['chosen_shorter_rate']:.0%}")  # fmt: skip
    return text
