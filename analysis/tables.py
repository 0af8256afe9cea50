"""Aggregation of trials into paper-style tables (plain pandas)."""

from __future__ import annotations

import pandas as pd

TABLE_METRICS = [
    "reward_accuracy", "reward_margin", "oracle_win_rate", "gen_length", "length_logp_spearman",
    "reward_likelihood_agreement", "chosen_avg_logp", "rejected_avg_logp", "train_loss",
    "runtime_s", "peak_memory_mb", "tokens_per_s",
]  # fmt: skip


def finished(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "finished"]


def setting_summary(df: pd.DataFrame, metrics: list[str] = TABLE_METRICS) -> pd.DataFrame:
    """Mean and std over seeds of each (method label, setting); ``n`` is the number of seeds."""
    done = finished(df)
    metrics = [m for m in metrics if m in done.columns]
    keys = ["label", "setting"]
    grouped = done.groupby(keys, sort=False)
    mean = grouped[metrics].mean()
    std = grouped[metrics].std(ddof=1).fillna(0.0)
    out = pd.concat({"mean": mean, "std": std}, axis=1)
    out[("n", "seeds")] = grouped.size()
    return out


def format_mean_std(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``mean ± std`` strings, one column per metric, plus ``n``."""
    metrics = list(summary["mean"].columns)
    table = pd.DataFrame(index=summary.index)
    for m in metrics:
        table[m] = [
            f"{a:.{digits}f} ± {b:.{digits}f}"
            for a, b in zip(summary["mean"][m], summary["std"][m], strict=True)
        ]
    table["n"] = summary[("n", "seeds")].astype(int)
    return table.reset_index()
