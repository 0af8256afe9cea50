"""Seed summaries of a sweep's settings (plain pandas/scipy): the numbers a staged sweep's selection,
the verdicts and the report all take a setting's seeds by.

* ``seed_summary``: one row per setting (``config_key``) with, per metric, the mean, sample std,
  a Student-t confidence interval and the count over its finished seeds.
* ``t_interval``: a Student-t interval of a mean.
* ``direction``: whether a metric is maximised or minimised.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as st

from ablate.readout.loader import FINISHED

SETTING_COLUMNS = ["label", "method", "setting", "reference", "config_key", "task_key"]
CONFIDENCE = 0.95
# Config columns of a setting's parameters: hyperparameters, training overrides, a LoRA adapter's fields.
PARAM_PREFIXES = ("hp_", "tr_", "lora_")
LOWER_IS_BETTER = {"train_loss", "runtime_s", "peak_memory_mb", "trial_s", "peak_memory_growth_mb", "runtime_cpu_s"}


def finished(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == FINISHED]


def metric_columns(df: pd.DataFrame) -> list[str]:
    """Numeric result columns (everything the trials reported at the end)."""
    skip = {"seed", "failures", "last_step", "length_bias", "stage_index"}
    return [
        c
        for c in df.columns
        if c not in skip
        and not c.startswith(PARAM_PREFIXES)
        and pd.api.types.is_numeric_dtype(df[c])
        and not pd.api.types.is_bool_dtype(df[c])
    ]


def t_interval(values, level: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided Student-t interval of the mean; (nan, nan) with fewer than two finite values."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    mean, sem = x.mean(), st.sem(x)
    if sem == 0:
        return float(mean), float(mean)
    low, high = st.t.interval(level, len(x) - 1, loc=mean, scale=sem)
    return float(low), float(high)


def aggregate(values: pd.Series) -> dict[str, float]:
    x = values.dropna().astype(float)
    low, high = t_interval(x)
    return {
        "mean": float(x.mean()) if len(x) else math.nan,
        "std": float(x.std(ddof=1)) if len(x) > 1 else math.nan,
        "ci_low": low,
        "ci_high": high,
        "n": int(len(x)),
    }


def seed_summary(df: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per setting of the finished trials: setting columns, ``hp_*``/``tr_*`` values,
    ``seeds`` (their number) and, per metric, ``<m>_mean``, ``<m>_std`` (sample std, ddof=1),
    ``<m>_ci_low``/``<m>_ci_high`` (95 % t-interval) and ``<m>_n`` (seeds with a value)."""
    done = finished(df)
    metrics = metric_columns(done) if metrics is None else [m for m in metrics if m in done.columns]
    rows = []
    param_cols = [c for c in done.columns if c.startswith(PARAM_PREFIXES)]
    for key, group in done.groupby("config_key", sort=False):
        first = group.iloc[0]
        row = {c: first[c] for c in SETTING_COLUMNS if c in group.columns}
        row.update({c: first[c] for c in param_cols})
        row["config_key"] = key
        row["seeds"] = int(len(group))
        row["seed_list"] = ",".join(str(s) for s in sorted(group["seed"].tolist()))
        row["sweeps"] = ",".join(sorted(set(group["sweep"])))
        for m in metrics:
            row.update({f"{m}_{k}": v for k, v in aggregate(group[m]).items()})
        rows.append(row)
    out = pd.DataFrame(rows)
    return _disambiguate_settings(out) if not out.empty else out


def _disambiguate_settings(summary: pd.DataFrame) -> pd.DataFrame:
    """Two configs that share a label and setting name (e.g. the same grid point in two sweeps
    with different data) get the name of the sweeps they came from appended."""
    summary = summary.copy()
    for _, group in summary.groupby(["label", "setting"], sort=False):
        if len(group) > 1:
            summary.loc[group.index, "setting"] = [
                f"{s} [{w}]" for s, w in zip(group["setting"], group["sweeps"], strict=True)
            ]
    return summary


def direction(metric: str, mode: str | None = None) -> str:
    """``max`` or ``min``: the mode given, else ``min`` for costs and losses, else ``max``."""
    if mode in ("max", "min"):
        return mode
    return "min" if metric in LOWER_IS_BETTER else "max"
