"""The SimPO paper's findings (simpo-reference.md, "Findings") checked against a sweep.

Each claim compares 95 % t-intervals over seeds: disjoint in the paper's direction is
*reproduced*, disjoint the other way *not reproduced*, overlapping *inconclusive*. Methods are
found by their report label: ``SimPO`` (its best setting under the selection rule), ``SimPO w/o LN``,
``SimPO gamma=0`` (or SimPO's gamma=0 setting), ``DPO`` (online reference for the cost claims)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats

from analysis.drift import order_drift
from analysis.stats import t_interval

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, MISSING = (
    "reproduced",
    "not reproduced",
    "inconclusive",
    "not measured",
)


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: float
    hi: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.lo:.3f}, {self.hi:.3f}] (n={self.n})"


def interval(values) -> Interval:
    """Mean and 95 % t-interval; with one value the interval is unbounded (nothing is decided)."""
    v = pd.Series(values, dtype=float).dropna()
    if v.empty:
        return Interval(math.nan, math.nan, math.nan, 0)
    if len(v) == 1:
        return Interval(float(v.iloc[0]), -math.inf, math.inf, 1)
    lo, hi = t_interval(v.tolist())
    return Interval(float(v.mean()), lo, hi, len(v))


def verdict(a: Interval, b: Interval, expect: str) -> str:
    """Is ``a`` ``expect`` (">" or "<") ``b``, judged by disjoint intervals?"""
    if a.n == 0 or b.n == 0:
        return MISSING
    above, below = a.lo > b.hi, a.hi < b.lo
    if not (above or below):
        return INCONCLUSIVE
    return REPRODUCED if (above if expect == ">" else below) else NOT_REPRODUCED


def best_setting(df: pd.DataFrame, metric: str, mode: str = "max") -> pd.DataFrame:
    """The rows of the setting with the best mean ``metric`` (ties: lower std)."""
    if df.empty:
        return df
    g = df.groupby("setting")[metric].agg(["mean", "std"]).fillna(0.0)
    g = g.sort_values(["mean", "std"], ascending=[mode == "min", True])
    return df[df["setting"] == g.index[0]]


def _label(done: pd.DataFrame, label: str) -> pd.DataFrame:
    # The loader may suffix a label with its reference mode, e.g. "DPO (online ref.)".
    return done[(done["label"] == label) | done["label"].str.startswith(label + " (")]


def _gamma0(done: pd.DataFrame) -> pd.DataFrame:
    named = _label(done, "SimPO gamma=0")
    if not named.empty:
        return named
    simpo = _label(done, "SimPO")
    return (
        simpo[simpo.get("hp_gamma", pd.Series(dtype=float)) == 0.0]
        if "hp_gamma" in simpo
        else simpo.iloc[0:0]
    )


def quality_metric(df: pd.DataFrame) -> str:
    """What generation quality is measured by: the oracle win rate where there is an oracle, else the first
    judge's length-controlled win rate (analysis.judged)."""
    from analysis import judged

    if "oracle_win_rate" in df and df["oracle_win_rate"].notna().any():
        return "oracle_win_rate"
    judges = judged.judge_ids(df)
    return judged.lc_column(df, judges[0]) if judges else "oracle_win_rate"


def findings(df: pd.DataFrame, metric: str = "oracle_win_rate") -> pd.DataFrame:
    """One row per claim: finding number, claim, what was measured, verdict."""
    done = df[df["status"] == "finished"]
    quality = quality_metric(df)
    quality_name = "oracle win rate" if quality == "oracle_win_rate" else f"LC win rate ({quality.split('@', 1)[1]})"
    simpo_all = _label(done, "SimPO")
    simpo = best_setting(simpo_all, metric)
    wo_ln = best_setting(_label(done, "SimPO w/o LN"), metric)
    dpo_all = _label(done, "DPO")
    dpo = best_setting(dpo_all, metric)
    dpo_online = (
        best_setting(dpo_all[dpo_all["reference"] == "online"], metric) if "reference" in dpo_all else dpo_all
    )
    rows = []

    def claim(
        number: int,
        text: str,
        a: pd.DataFrame,
        b: pd.DataFrame,
        col: str,
        expect: str,
        names: tuple[str, str],
    ):
        ia, ib = (
            interval(a[col]) if col in a else interval([]),
            interval(b[col]) if col in b else interval([]),
        )
        measured = f"{names[0]} {ia} vs {names[1]} {ib}"
        rows.append(
            {
                "finding": number,
                "claim": text,
                "metric": col,
                "measured": measured,
                "verdict": verdict(ia, ib, expect),
            }
        )

    claim(
        1,
        "w/o LN generates longer responses than SimPO",
        wo_ln,
        simpo,
        "gen_length",
        ">",
        ("w/o LN", "SimPO"),
    )
    claim(1, "w/o LN has a higher length/log-likelihood Spearman correlation", wo_ln, simpo, "length_logp_spearman", ">",
          ("w/o LN", "SimPO"))  # fmt: skip
    claim(
        1,
        f"w/o LN has a lower {quality_name} than SimPO",
        wo_ln,
        simpo,
        quality,
        "<",
        ("w/o LN", "SimPO"),
    )
    rows.extend(_gamma_claims(simpo_all, _gamma0(done), quality, quality_name))
    claim(3, "Spearman correlation: SimPO < DPO", simpo, dpo, "length_logp_spearman", "<", ("SimPO", "DPO"))
    claim(3, "Spearman correlation: DPO < w/o LN", dpo, wo_ln, "length_logp_spearman", "<", ("DPO", "w/o LN"))
    claim(4, "DPO's reward/likelihood agreement is below SimPO's", dpo, simpo, "reward_likelihood_agreement", "<",
          ("DPO", "SimPO"))  # fmt: skip
    if not simpo_all.empty:
        exact = bool((simpo_all["reward_likelihood_agreement"] == 1.0).all())
        rows.append({"finding": 4, "claim": "SimPO's agreement is exactly 1 in every trial", "metric": "reward_likelihood_agreement",
                     "measured": f"min over {len(simpo_all)} SimPO trials: {simpo_all['reward_likelihood_agreement'].min():.3f}",
                     "verdict": REPRODUCED if exact else NOT_REPRODUCED})  # fmt: skip
    claim(
        5,
        "SimPO's held-out reward accuracy is higher than DPO's",
        simpo,
        dpo,
        "reward_accuracy",
        ">",
        ("SimPO", "DPO"),
    )
    claim(
        6,
        "SimPO trains faster than DPO (online reference)",
        simpo,
        dpo_online,
        "runtime_s",
        "<",
        ("SimPO", "DPO"),
    )
    # The trials' own peak growth compares methods; the process's peak also holds what the worker
    # held before each trial (ablate.memory). Older records have only the latter.
    growth = all("peak_memory_growth_mb" in x and x["peak_memory_growth_mb"].notna().any() for x in (simpo, dpo_online))
    memory = "peak_memory_growth_mb" if growth else "peak_memory_mb"
    measure = "each trial's own peak growth" if growth else "the process's peak"
    claim(6, f"SimPO's peak memory is below DPO's (online reference; {measure})", simpo, dpo_online, memory, "<",
          ("SimPO", "DPO"))  # fmt: skip
    return _with_drift(pd.DataFrame(rows), df)


def _with_drift(table: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """Finding 6's costs with a warning where they move with the order trials started in (analysis.drift)."""
    if table.empty:
        return table
    for d in order_drift(df):
        if d.warns:
            at = (table["finding"] == 6) & (table["metric"] == d.metric)
            table.loc[at, "measured"] += (
                f"; warning: {d.metric} drifts with the start order (ρ = {d.rho:+.2f} among trials that do the same "
                "work), see Efficiency"
            )
    return table


def _gamma_claims(simpo_all: pd.DataFrame, gamma0: pd.DataFrame, quality: str = "oracle_win_rate",
                  quality_name: str = "oracle win rate") -> list[dict]:  # fmt: skip
    if "hp_gamma" not in simpo_all or simpo_all["hp_gamma"].nunique() < 3:
        return [{"finding": 2, "claim": "gamma study", "metric": "-", "measured": "needs SimPO at >= 3 gamma values",
                 "verdict": MISSING}]  # fmt: skip
    by_gamma = {g: rows for g, rows in simpo_all.groupby("hp_gamma")}
    gammas = sorted(by_gamma)
    out = []
    acc = {g: interval(by_gamma[g]["reward_accuracy"]) for g in gammas}
    rho = stats.spearmanr(simpo_all["hp_gamma"], simpo_all["reward_accuracy"]).statistic
    out.append({"finding": 2, "claim": "reward accuracy rises with gamma (largest vs smallest gamma)", "metric": "reward_accuracy",
                "measured": f"gamma={gammas[-1]}: {acc[gammas[-1]]} vs gamma={gammas[0]}: {acc[gammas[0]]}; Spearman(gamma, acc)={rho:.2f}",
                "verdict": verdict(acc[gammas[-1]], acc[gammas[0]], ">")})  # fmt: skip
    win = {g: interval(by_gamma[g][quality]) if quality in by_gamma[g] else interval([]) for g in gammas}
    best = max(gammas, key=lambda g: win[g].mean)
    interior = best not in (gammas[0], gammas[-1])
    if interior:
        v = [verdict(win[best], win[e], ">") for e in (gammas[0], gammas[-1])]
        result = REPRODUCED if all(x == REPRODUCED for x in v) else INCONCLUSIVE
    else:
        others = [verdict(win[best], win[g], ">") for g in gammas if g != best]
        result = NOT_REPRODUCED if all(x == REPRODUCED for x in others) else INCONCLUSIVE
    out.append({"finding": 2, "claim": f"{quality_name} is best at an intermediate gamma", "metric": quality,
                "measured": "; ".join(f"gamma={g}: {win[g]}" for g in gammas) + f"; best gamma={best}",
                "verdict": result})  # fmt: skip
    zero = interval(gamma0[quality]) if not gamma0.empty and quality in gamma0 else interval([])
    out.append({"finding": 2, "claim": "gamma=0 is below the best gamma", "metric": quality,
                "measured": f"gamma=0: {zero} vs best gamma={best}: {win[best]}",
                "verdict": NOT_REPRODUCED if best == 0.0 else verdict(zero, win[best], "<")})  # fmt: skip
    return out


def applies(df: pd.DataFrame) -> bool:
    """A findings section needs SimPO and at least one of its comparisons in the sweep."""
    labels = set(df.loc[df["status"] == "finished", "label"].dropna())
    return "SimPO" in labels and bool(labels & {"SimPO w/o LN", "DPO", "DPO (online ref.)"})


def findings_markdown(table: pd.DataFrame, metric: str) -> str:
    head = (
        "## The paper's findings on this sweep\n\n"
        f"Each method at its best setting by mean `{metric}` over seeds (ties: lower std). Values are means with "
        "95 % t-intervals over seeds; a claim is *reproduced* when the intervals are disjoint in the paper's "
        "direction, *not reproduced* when disjoint the other way, *inconclusive* when they overlap.\n\n"
    )
    return head + table.to_markdown(index=False) + "\n"


def length_bias_table(df: pd.DataFrame, metric: str = "oracle_win_rate") -> pd.DataFrame | None:
    """How each method's ``metric`` (and generation length) moves with the labels' length bias, and
    SimPO's advantage over every other method at each bias (difference of means, Welch 95 % interval).
    None unless the trials span several length-bias values."""
    done = df[df["status"] == "finished"]
    if "length_bias" not in done or done["length_bias"].nunique() < 2:
        return None
    rows = []
    for (label, bias), group in done.groupby(["label", "length_bias"], sort=True):
        best = best_setting(group, metric)  # a method with several settings: its best at this bias
        rows.append({"label": label, "length_bias": bias, metric: str(interval(best[metric])),
                     "gen_length": str(interval(best["gen_length"])), "_values": best[metric].tolist()})  # fmt: skip
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
