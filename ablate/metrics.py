"""The names of the metrics a trial reports, and when it reports them (see docs/reports.md).

The sweep file's ``metric`` and ``scheduler.metric`` are checked against these before anything is
launched, so a misspelt or never-reported metric is a clear error, not a sweep that ranks nothing."""

from __future__ import annotations

# Every ``training.log_every`` steps, with ``step``.
TRAINING = ("train_loss", "train_reward_accuracy", "lr")

# Every ``evaluation.every_steps`` steps (when set), with ``step``: cheap held-out metrics, no generation.
PERIODIC_EVAL = ("reward_accuracy", "reward_margin")

# Once, when the trial ends.
FINAL = (
    "reward_accuracy", "reward_margin", "chosen_avg_logp", "rejected_avg_logp", "length_logp_spearman",
    "reward_likelihood_agreement", "train_loss", "runtime_s", "steps", "tokens_per_s", "peak_memory_mb",
    "trial_s", "peak_memory_growth_mb", "runtime_cpu_s",
)  # fmt: skip

# Also once at the end, but only with ``evaluation.generate`` (oracle ones: only on the built-in task).
GENERATION = ("gen_length",)
ORACLE = ("oracle_win_rate", "oracle_reward")

# Smaller is better for these; every other metric is "max" by default.
MINIMIZED = ("train_loss", "runtime_s", "peak_memory_mb", "trial_s", "lr", "peak_memory_growth_mb", "runtime_cpu_s")

ALL = tuple(dict.fromkeys(TRAINING + PERIODIC_EVAL + FINAL + GENERATION + ORACLE))


def natural_mode(metric: str) -> str:
    return "min" if metric in MINIMIZED else "max"
