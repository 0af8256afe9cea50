"""Per-example evidence of a trial's metrics, for the verdicts' example-level variance (ablate.verdicts.compare).

A trial's held-out metrics are means (or, for the length/log-likelihood Spearman, a statistic) over
examples it records one by one in ``heldout.json``: held-out *pairs* (reward accuracy, margin,
reward/likelihood agreement, average log-likelihoods, the Spearman correlation) and *prompts*
(generation length, oracle win rate and reward, each judge's raw win rate). Every trial of a task
scores the same pairs and answers the same prompts, so one resampled set of examples serves every
trial of a comparison: ``replicates`` recomputes the metric of many trials on the same bootstrap
draws of examples, vectorised with numpy index arrays (no Python loop over draws)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ablate.judging import winrate
from ablate.readout import judgments
from ablate.readout.loader import load_heldout

PAIR, PROMPT = "pair", "prompt"
# Metrics that are the mean of one value per held-out pair.
PAIR_MEANS = {
    "reward_accuracy": lambda p: (p["chosen_reward"] > p["rejected_reward"]).astype(float),
    "reward_margin": lambda p: p["chosen_reward"] - p["rejected_reward"],
    "reward_likelihood_agreement": lambda p: (
        np.sign(p["chosen_reward"] - p["rejected_reward"]) == np.sign(p["chosen_avg_logp"] - p["rejected_avg_logp"])
    ).astype(float),
    "chosen_avg_logp": lambda p: p["chosen_avg_logp"],
    "rejected_avg_logp": lambda p: p["rejected_avg_logp"],
}
SPEARMAN = "length_logp_spearman"  # over the pooled chosen and rejected responses of the pairs drawn
PAIR_KEYS = ("chosen_len", "rejected_len", "chosen_avg_logp", "rejected_avg_logp")


def _pairs(record: dict) -> dict[str, np.ndarray] | None:
    pairs = record.get("pairs") or {}
    keys = ("chosen_reward", "rejected_reward", *PAIR_KEYS)
    if not all(k in pairs for k in keys):
        return None
    return {k: np.asarray(pairs[k], float) for k in keys}


def _prompt_values(record: dict, row: pd.Series, metric: str, cache: dict) -> np.ndarray | None:
    gen = record.get("generations") or {}
    if metric == "gen_length" and gen.get("length"):
        return np.asarray(gen["length"], float)
    if metric in ("oracle_win_rate", "oracle_reward") and gen.get("oracle_reward") and gen.get("sft_oracle_reward"):
        if metric == "oracle_reward":
            return np.asarray(gen["oracle_reward"], float)
        return winrate.preferences(gen["oracle_reward"], gen["sft_oracle_reward"])
    if metric.startswith("win_rate@"):
        got = judgments.judged(row, metric.split("@", 1)[1], cache)
        return None if got is None else got[0]
    return None


def unit_values(row: pd.Series, metric: str, cache: dict | None = None) -> tuple[str, np.ndarray] | None:
    """(unit, per-example values) of ``metric`` in one trial: values (n,) for a mean metric, (n, 4)
    for the Spearman correlation; None where the trial recorded no per-example data for it."""
    cache = {} if cache is None else cache
    path = row.get("heldout")
    if path not in cache:
        cache[path] = load_heldout(path)
    record = cache[path]
    if record is None:
        return None
    if metric in PAIR_MEANS or metric == SPEARMAN:
        pairs = _pairs(record)
        if pairs is None:
            return None
        if metric == SPEARMAN:
            return PAIR, np.column_stack([pairs[k] for k in PAIR_KEYS])
        return PAIR, PAIR_MEANS[metric](pairs)
    got = _prompt_values(record, row, metric, cache)
    return None if got is None or len(got) == 0 else (PROMPT, got)


def has_examples(metric: str) -> bool:
    """Whether ``metric`` can come from per-example records at all."""
    return (
        metric in PAIR_MEANS
        or metric in (SPEARMAN, "gen_length", "oracle_win_rate", "oracle_reward")
        or metric.startswith("win_rate@")
    )


def replicates(values: list[np.ndarray], idx: np.ndarray) -> np.ndarray:
    """The metric of every trial (one ``values`` array each, same examples) on every draw of
    examples ``idx`` (draws × n indices): an array draws × trials."""
    counts = _counts(idx, len(values[0]))  # draws × n: how often each example was drawn
    if values[0].ndim == 1:
        return counts @ np.column_stack(values) / idx.shape[1]
    return np.column_stack([_spearman_draws(v, counts) for v in values])


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    flat = (idx + n * np.arange(idx.shape[0])[:, None]).ravel()
    return np.bincount(flat, minlength=idx.shape[0] * n).reshape(idx.shape[0], n).astype(float)


def _weighted_ranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average ranks of ``x`` (one value per element) in each draw's multiset, element i counted
    ``w[draw, i]`` times: ties share the mean of their ranks, as ``scipy.stats.rankdata``."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    group = np.cumsum(np.r_[True, xs[1:] != xs[:-1]]) - 1  # tie group of each sorted element
    c = np.add.reduceat(w[:, order], starts, axis=1)  # draws × groups
    r = np.cumsum(c, axis=1) - (c - 1) / 2
    out = np.empty_like(w)
    out[:, order] = r[:, group]
    return out


def _spearman_draws(v: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Spearman's ρ between length and average log-likelihood of the pooled chosen and rejected
    responses of each draw of pairs (``counts``: draws × pairs), as ``ablate.trial.evaluate.spearman``."""
    lengths, avg = np.r_[v[:, 0], v[:, 1]], np.r_[v[:, 2], v[:, 3]]
    w = np.hstack([counts, counts])  # a pair drawn k times brings both its responses k times
    a, b = _weighted_ranks(lengths, w), _weighted_ranks(avg, w)
    total = w.sum(axis=1, keepdims=True)
    a -= (w * a).sum(axis=1, keepdims=True) / total
    b -= (w * b).sum(axis=1, keepdims=True) / total
    den = np.sqrt((w * a * a).sum(axis=1) * (w * b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (w * a * b).sum(axis=1) / den, math.nan)
