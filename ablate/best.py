"""The one rule that picks a method's best setting: every report table, the findings and the sweep
file's claims, the ablation rows, the on-policy comparison and a staged sweep's selection call it.

A setting's score is the mean of the metric over its finished seeds; the best mean wins (``mode``
``max`` or ``min``); ties go to the lower standard deviation (one seed has none: it loses to any
spread), then to more seeds, then to the setting seen first. Settings without a value are not
eligible. Plain pandas (no torch), so the report can import it; ablate never imports analysis for it.
"""

from __future__ import annotations

import math

import pandas as pd

RULE = (
    "For each method, its best setting is the one with the best mean of `{metric}` over its finished "
    "seeds ({direction} mean wins); ties go to the lower standard deviation, then to more seeds, then to "
    "the setting that ran first. Settings without a value of `{metric}` are not eligible."
)


def rank(summary: pd.DataFrame, metric: str, mode: str = "max", by: str | None = "label") -> pd.DataFrame:
    """The eligible rows of ``summary`` (one per setting: ``<metric>_mean``, ``<metric>_std``, ``seeds``),
    best first within each group of ``by`` (None: one group), by the rule of the module doc."""
    col = f"{metric}_mean"
    if summary.empty or col not in summary.columns:
        return summary.iloc[0:0]
    ok = summary[summary[col].notna()].copy()
    keys = {
        "_key": (-1.0 if mode == "max" else 1.0) * ok[col].astype(float),
        "_std": ok[f"{metric}_std"].astype(float).fillna(math.inf),
        "_seeds": -ok["seeds"].astype(float),
        "_order": range(len(ok)),
    }
    ok = ok.assign(**keys)
    order = ([by] if by is not None else []) + list(keys)
    return ok.sort_values(order, kind="stable").drop(columns=list(keys))


def summarise(trials: pd.DataFrame, metric: str, key: str) -> pd.DataFrame:
    """One row per value of ``key`` (in order of appearance) with the columns ``rank`` reads."""
    g = trials.groupby(key, sort=False)[metric]
    mean = g.mean()
    return pd.DataFrame(
        {
            key: mean.index,
            f"{metric}_mean": mean.to_numpy(float),
            f"{metric}_std": g.std(ddof=1).reindex(mean.index).to_numpy(float),
            "seeds": g.size().reindex(mean.index).to_numpy(),
        }
    )


def best_rows(trials: pd.DataFrame, metric: str, mode: str = "max", key: str | None = None) -> pd.DataFrame:
    """The trials (rows, one per seed) of the best setting among ``trials`` (finished trials of one arm),
    by the rule; ``key`` names a setting (default: ``config_key`` where there is one, else ``setting``).
    Empty when no setting has a value of ``metric``."""
    if trials.empty or metric not in trials.columns:
        return trials.iloc[0:0]
    key = key or ("config_key" if "config_key" in trials.columns else "setting")
    values = trials.assign(**{metric: pd.to_numeric(trials[metric], errors="coerce")})
    ranked = rank(summarise(values, metric, key), metric, mode, by=None)
    if ranked.empty:
        return trials.iloc[0:0]
    return trials[trials[key] == ranked[key].iloc[0]]
