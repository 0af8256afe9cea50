"""The report's findings table: the SimPO paper's findings (ablate.verdicts.paper_claims) and the sweep
file's own claims (ablate.verdicts.sweep_claims), corrected together (ablate.verdicts.claim_tests), a row
per claim, with a warning where a cost moves with the order trials started in (ablate.readout.drift);
and the length-bias table, each method's metric against the labels' length bias."""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from ablate.best import best_rows
from ablate.readout.drift import order_drift
from ablate.readout.summary import direction
from ablate.verdicts import claim_tests as V
from ablate.verdicts import paper_claims as P
from ablate.verdicts import sweep_claims


def findings(df: pd.DataFrame, metric: str = "oracle_win_rate", claims: list | None = None,
             alpha: float = V.ALPHA, mode: str | None = None) -> pd.DataFrame:  # fmt: skip
    """One row per claim (the paper's, then the sweep file's ``claims``): finding, claim, metric,
    what was measured, Δ with its interval, the corrected p-value, the verdict and, for an
    undecided claim, the seeds that would decide it (ablate.verdicts.claim_tests); at family-wise level
    ``alpha`` (an adaptive-seed sweep's look level: ablate.verdicts.decider.look_alpha). Each arm is its
    method's best setting by ``metric`` in ``mode`` (default: the metric's direction), as in every table."""
    tests = P.paper_tests(df, metric, mode=mode) if P.applies(df) else []
    if claims:
        tests += sweep_claims.tests(df, claims, metric, mode=mode)
    V.adjust(tests, alpha)
    table = _with_drift(V.table(tests, alpha), df)
    table.attrs["caption"] = V.caption(tests)
    return table


def _with_drift(table: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """Finding 6's costs with a warning where they move with the order trials started in (ablate.readout.drift)."""
    if table.empty:
        return table
    for d in order_drift(df):
        if d.warns:
            at = (table["finding"].astype(str) == "6") & (table["metric"] == d.metric)
            table.loc[at, "measured"] += (
                f"; warning: {d.metric} drifts with the start order (ρ = {d.rho:+.2f} among trials that do the same "
                "work), see Efficiency"
            )
    return table


def length_bias_table(df: pd.DataFrame, metric: str = "oracle_win_rate", mode: str | None = None) -> pd.DataFrame | None:
    """How each method's ``metric`` (and generation length) moves with the labels' length bias, and
    SimPO's advantage over every other method at each bias (difference of means, Welch 95 % interval).
    None unless the trials span several length-bias values."""
    done = df[df["status"] == "finished"]
    if "length_bias" not in done or done["length_bias"].nunique() < 2:
        return None
    rows = []
    for (label, bias), group in done.groupby(["label", "length_bias"], sort=True):
        best = best_rows(group, metric, direction(metric, mode))  # several settings: its best at this bias
        rows.append({"label": label, "length_bias": bias, metric: str(P.interval(best[metric])),
                     "gen_length": str(P.interval(best["gen_length"])), "_values": best[metric].tolist()})  # fmt: skip
    table = pd.DataFrame(rows)
    simpo = table[table["label"] == "SimPO"].set_index("length_bias")["_values"]
    advantage = []
    for _, r in table.iterrows():
        if r["label"] == "SimPO" or r["length_bias"] not in simpo.index:
            advantage.append("")
            continue
        a, b = pd.Series(simpo[r["length_bias"]], dtype=float), pd.Series(r["_values"], dtype=float)
        diff = a.mean() - b.mean()
        if len(a) < 2 or len(b) < 2:
            advantage.append(f"{diff:+.3f}")
            continue
        se2 = a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)
        dof = (
            se2**2
            / ((a.var(ddof=1) / len(a)) ** 2 / (len(a) - 1) + (b.var(ddof=1) / len(b)) ** 2 / (len(b) - 1))
            if se2 > 0
            else 1
        )
        half = stats.t.ppf(0.975, dof) * math.sqrt(se2)
        advantage.append(f"{diff:+.3f} [{diff - half:+.3f}, {diff + half:+.3f}]")
    table[f"SimPO minus this method ({metric})"] = advantage
    return table.drop(columns=["_values"])
