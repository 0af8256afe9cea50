"""Does a cost move with the order the trials ran in? The report's check of its own cost figures.

Trials that do the same work (one ``work_key``: the same method, reference, model, data and
training passes; seeds, labels and the objective's hyperparameters aside) should cost the same
whenever they ran. A worker that grows from trial to trial, a machine whose other load changes, or a
cache that warms up make a cost follow the start order instead, and then a comparison of methods
that ran at different times measures the order as much as the methods.

For each cost metric: each trial's value relative to the mean of its work group (groups of two or
more finished trials), against the trial's rank in its sweep's start order; Spearman's rho, its
p-value and the least-squares slope in percent of the group mean per trial. The efficiency section
warns when the trend is both clear and sizeable (``Drift.warns``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as st

from ablate.readout.loader import FINISHED

COSTS = ["runtime_s", "peak_memory_mb", "peak_memory_growth_mb"]
MIN_RHO = 0.3  # the benchmark's target: no trend is |rho| < 0.3 (docs/benchmarks.md)
MAX_P = 0.05
MIN_TRIALS = 6


@dataclass(frozen=True)
class Drift:
    metric: str
    rho: float
    p: float
    slope_pct: float  # percent of the work group's mean, per trial in start order
    trials: int
    groups: int

    @property
    def warns(self) -> bool:
        return self.trials >= MIN_TRIALS and abs(self.rho) >= MIN_RHO and self.p < MAX_P

    def text(self) -> str:
        return (
            f"`{self.metric}` moves with the order the trials started in among trials that do the same work: "
            f"Spearman ρ = {self.rho:+.2f} (p = {self.p:.2g}, {self.trials} trials in {self.groups} groups), "
            f"{self.slope_pct:+.2f} % of the group mean per trial"
        )


def start_times(df: pd.DataFrame) -> pd.Series:
    """When each trial started (Unix time): ``started_at``, or for older records the end of the first
    step minus the time to it; NaN when neither was reported."""
    out = pd.Series(np.nan, index=df.index, dtype=float)
    if "started_at" in df:
        out = df["started_at"].astype(float)
    if {"first_step_at", "first_step_s"} <= set(df.columns):
        out = out.fillna(df["first_step_at"].astype(float) - df["first_step_s"].astype(float))
    return out


def relative_to_group(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Finished trials with a start time and ``metric``, in work groups of two or more: the sweep,
    ``rank`` (start order within the sweep, from 0) and ``rel`` (value / group mean - 1)."""
    done = df[(df["status"] == FINISHED) & df[metric].notna()].copy() if metric in df else df.iloc[0:0]
    if done.empty or "work_key" not in done:
        return done.iloc[0:0]
    done["start"] = start_times(done)
    done = done[done["start"].notna()]
    done["rank"] = done.groupby("sweep")["start"].rank(method="first") - 1
    group = done.groupby(["sweep", "work_key"])[metric]
    done["rel"] = done[metric] / group.transform("mean") - 1
    return done[group.transform("size") >= 2]


def order_drift(df: pd.DataFrame, metrics: list[str] | None = None) -> list[Drift]:
    """One ``Drift`` per cost metric with at least ``MIN_TRIALS`` trials in work groups."""
    out = []
    for m in metrics or COSTS:
        rows = relative_to_group(df, m)
        if len(rows) < MIN_TRIALS or rows["rel"].nunique() < 2 or rows["rank"].nunique() < 2:
            continue
        rho, p = st.spearmanr(rows["rank"], rows["rel"])
        slope = float(np.polyfit(rows["rank"].to_numpy(float), rows["rel"].to_numpy(float), 1)[0]) * 100
        groups = rows.groupby(["sweep", "work_key"]).ngroups
        if math.isfinite(rho):
            out.append(Drift(m, float(rho), float(p), slope, len(rows), groups))
    return out


def warnings(drifts: list[Drift]) -> list[str]:
    """The report's warnings: one per cost metric with a trend."""
    return [
        f"Warning: {d.text()}. Costs of methods that ran at different times are then not comparable; see "
        "docs/reports.md (Efficiency) for what causes such drift and how to rerun."
        for d in drifts
        if d.warns
    ]
