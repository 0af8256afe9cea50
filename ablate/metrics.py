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
    "trial_s", "trainable_params", "total_params", "peak_memory_growth_mb", "runtime_cpu_s",
)  # fmt: skip

# Also once at the end, but only with ``evaluation.generate`` (oracle ones: only on the built-in task).
# The collapse diagnostics (ablate.judging.generations): repeated 4-grams, distinct bigrams, generations cut
# at max_new_tokens, and the change of the held-out chosen responses' average log-likelihood.
GENERATION = ("gen_length", "repeat_4gram_rate", "distinct_2", "hit_max_tokens_rate", "chosen_logp_change",
              "chosen_logp_fell")  # fmt: skip
ORACLE = ("oracle_win_rate", "oracle_reward")

# Per judge of ``evaluation.judges`` (ablate.judging.scoring), named ``<metric>@<judge>``, e.g.
# ``lc_win_rate@builtin:reward-model``; reported once at the end, with generation.
PER_JUDGE = ("win_rate", "lc_win_rate", "lc_win_rate_se", "length_coef", "judge_accuracy", "judge_truncated")


def judge_metric(metric: str, judge: str) -> str:
    return f"{metric}@{judge}"


def split_judge_metric(name: str) -> tuple[str, str] | None:
    """``("lc_win_rate", "builtin:oracle")`` for ``lc_win_rate@builtin:oracle``; None for other names."""
    metric, at, judge = name.partition("@")
    return (metric, judge) if at and metric in PER_JUDGE and judge else None

# Smaller is better for these; every other metric is "max" by default.
MINIMIZED = ("train_loss", "runtime_s", "peak_memory_mb", "trial_s", "lr", "peak_memory_growth_mb", "runtime_cpu_s")

ALL = tuple(dict.fromkeys(TRAINING + PERIODIC_EVAL + FINAL + GENERATION + ORACLE))


def natural_mode(metric: str) -> str:
    judged = split_judge_metric(metric)
    if judged and judged[0] in ("lc_win_rate_se", "judge_truncated"):
        return "min"
    return "min" if metric in MINIMIZED else "max"
