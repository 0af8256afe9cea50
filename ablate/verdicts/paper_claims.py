"""The SimPO paper's findings (Meng et al. 2024, SimPO; summarised in docs/reports.md) checked against a sweep.

Each claim compares two arms on a metric (ablate.verdicts.compare) and gets a verdict corrected for the
report's many claims (ablate.verdicts.claim_tests: supported, contradicted, equivalent, undecided); the
report's findings table (analysis.findings_frame) and the adaptive-seeds loop (ablate.verdicts.decider) take
these tests. The former rule (95 % t-intervals over seeds: disjoint in the paper's direction *reproduced*, the
other way *not reproduced*, overlapping *inconclusive*; ``interval``, ``verdict``) is kept next to it for
bench/verdicts.py. Methods are found by their report label, each at its best setting by the one rule of every
table (``ablate.best``): ``SimPO``, ``SimPO w/o LN``, ``SimPO gamma=0`` (or SimPO's gamma=0 setting), ``DPO``
(online reference for the cost claims)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats

from ablate.best import best_rows
from ablate.readout import judgments
from ablate.readout.summary import direction, t_interval
from ablate.verdicts import claim_tests as V
from ablate.verdicts.compare import compare

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
    judge's length-controlled win rate (ablate.readout.judgments)."""
    if "oracle_win_rate" in df and df["oracle_win_rate"].notna().any():
        return "oracle_win_rate"
    judges = judgments.judge_ids(df)
    return judgments.lc_column(df, judges[0]) if judges else "oracle_win_rate"



def paper_tests(df: pd.DataFrame, metric: str = "oracle_win_rate", cache: dict | None = None,
                mode: str | None = None) -> list[V.Test]:  # fmt: skip
    """The paper's findings as tests (not yet corrected: ``ablate.verdicts.claim_tests.adjust``)."""
    cache = {} if cache is None else cache
    mode = direction(metric, mode)

    done = df[df["status"] == "finished"]
    quality = quality_metric(df)
    quality_name = "oracle win rate" if quality == "oracle_win_rate" else f"LC win rate ({quality.split('@', 1)[1]})"
    simpo_all = _label(done, "SimPO")
    simpo = best_rows(simpo_all, metric, mode)
    wo_ln = best_rows(_label(done, "SimPO w/o LN"), metric, mode)
    dpo_all = _label(done, "DPO")
    dpo = best_rows(dpo_all, metric, mode)
    dpo_online = (
        best_rows(dpo_all[dpo_all["reference"] == "online"], metric, mode) if "reference" in dpo_all else dpo_all
    )
    tests: list[V.Test] = []

    def claim(number: int, text: str, a: pd.DataFrame, b: pd.DataFrame, col: str, expect: str,
              names: tuple[str, str]) -> None:  # fmt: skip
        tests.append(test(str(number), text, a, b, col, expect, names, cache))

    claim(1, "w/o LN generates longer responses than SimPO", wo_ln, simpo, "gen_length", ">", ("w/o LN", "SimPO"))
    claim(1, "w/o LN has a higher length/log-likelihood Spearman correlation", wo_ln, simpo, "length_logp_spearman", ">",
          ("w/o LN", "SimPO"))  # fmt: skip
    claim(1, f"w/o LN has a lower {quality_name} than SimPO", wo_ln, simpo, quality, "<", ("w/o LN", "SimPO"))
    tests.extend(gamma_tests(simpo_all, _gamma0(done), quality, quality_name, cache))
    claim(3, "Spearman correlation: SimPO < DPO", simpo, dpo, "length_logp_spearman", "<", ("SimPO", "DPO"))
    claim(3, "Spearman correlation: DPO < w/o LN", dpo, wo_ln, "length_logp_spearman", "<", ("DPO", "w/o LN"))
    claim(4, "DPO's reward/likelihood agreement is below SimPO's", dpo, simpo, "reward_likelihood_agreement", "<",
          ("DPO", "SimPO"))  # fmt: skip
    if not simpo_all.empty:
        exact = bool((simpo_all["reward_likelihood_agreement"] == 1.0).all())
        tests.append(V.Test("4", "SimPO's agreement is exactly 1 in every trial", "reward_likelihood_agreement", "=",
                            None, 0.0, f"min over {len(simpo_all)} SimPO trials: {simpo_all['reward_likelihood_agreement'].min():.3f}",
                            rule="rule: every trial", rule_verdict=V.SUPPORTED if exact else V.CONTRADICTED,
                            old=REPRODUCED if exact else NOT_REPRODUCED))  # fmt: skip
    claim(5, "SimPO's held-out reward accuracy is higher than DPO's", simpo, dpo, "reward_accuracy", ">", ("SimPO", "DPO"))
    claim(6, "SimPO trains faster than DPO (online reference)", simpo, dpo_online, "runtime_s", "<", ("SimPO", "DPO"))
    # The trials' own peak growth compares methods; the process's peak also holds what the worker
    # held before each trial (ablate.trial.memory_probe). Older records have only the latter.
    growth = all("peak_memory_growth_mb" in x and x["peak_memory_growth_mb"].notna().any() for x in (simpo, dpo_online))
    memory = "peak_memory_growth_mb" if growth else "peak_memory_mb"
    measure = "each trial's own peak growth" if growth else "the process's peak"
    claim(6, f"SimPO's peak memory is below DPO's (online reference; {measure})", simpo, dpo_online, memory, "<",
          ("SimPO", "DPO"))  # fmt: skip
    return tests


def test(finding: str, text: str, a: pd.DataFrame, b: pd.DataFrame, col: str, expect: str,
         names: tuple[str, str], cache: dict | None = None, margin: float | None = None) -> V.Test:  # fmt: skip
    """One claim on two arms, with the former rule's verdict alongside."""
    t = V.simple_test(finding, text, col, expect, compare(a, b, col, cache), margin, names, (a, b))
    ia = interval(a[col]) if col in a else interval([])
    ib = interval(b[col]) if col in b else interval([])
    t.old = verdict(ia, ib, expect) if expect != "=" else INCONCLUSIVE
    return t



def gamma_tests(simpo_all: pd.DataFrame, gamma0: pd.DataFrame, quality: str = "oracle_win_rate",
                quality_name: str = "oracle win rate", cache: dict | None = None) -> list[V.Test]:  # fmt: skip
    """Finding 2. The best γ is chosen on the same trials, so comparisons with it are Bonferroni-
    corrected for the number of γ values it was chosen from."""
    if "hp_gamma" not in simpo_all or simpo_all["hp_gamma"].nunique() < 3:
        return [V.Test("2", "gamma study", "-", ">", None, 0.0, "needs SimPO at >= 3 gamma values", old=MISSING)]
    by_gamma = {g: rows for g, rows in simpo_all.groupby("hp_gamma")}
    gammas = sorted(by_gamma)
    rho = stats.spearmanr(simpo_all["hp_gamma"], simpo_all["reward_accuracy"]).statistic
    acc = test("2", "reward accuracy rises with gamma (largest vs smallest gamma)", by_gamma[gammas[-1]],
               by_gamma[gammas[0]], "reward_accuracy", ">", (f"gamma={gammas[-1]}", f"gamma={gammas[0]}"), cache)  # fmt: skip
    acc.measured += f"; Spearman(gamma, acc)={rho:.2f}"
    out = [acc, _interior_test(by_gamma, quality, quality_name, cache)]
    win = {g: by_gamma[g][quality].mean() if quality in by_gamma[g] else math.nan for g in gammas}
    positive = [g for g in gammas if g > 0]
    pick = best_rows(simpo_all[simpo_all["hp_gamma"] > 0], quality, "max", key="hp_gamma")  # the one rule
    best = pick["hp_gamma"].iloc[0] if not pick.empty else positive[0]
    zero = test("2", "gamma=0 is below the best gamma", gamma0, by_gamma[best], quality, "<",
                ("gamma=0", f"best gamma={best}"), cache)  # fmt: skip
    zero.p = {k: min(1.0, len(positive) * p) for k, p in zero.p.items()}
    if max(gammas, key=lambda g: win[g]) == 0.0:
        zero.old = NOT_REPRODUCED
    return out + [zero]


def _interior_test(by_gamma: dict, quality: str, quality_name: str, cache: dict | None) -> V.Test:
    """Is the best γ an intermediate one? Supported when the best intermediate γ beats both ends
    (intersection-union: the larger p, times the intermediate values it was chosen from);
    contradicted when the better end beats every intermediate γ (the larger p, times 2 ends)."""
    gammas = sorted(by_gamma)
    mean = {g: by_gamma[g][quality].mean() if quality in by_gamma[g] else math.nan for g in gammas}
    inner, ends = gammas[1:-1], (gammas[0], gammas[-1])
    best, end = max(inner, key=lambda g: mean[g]), max(ends, key=lambda g: mean[g])

    def p_above(a, b) -> float:
        c = compare(by_gamma[a], by_gamma[b], quality, cache)
        return c.p_difference() if c.delta > 0 else 1.0

    t = test("2", f"{quality_name} is best at an intermediate gamma", by_gamma[best], by_gamma[end], quality, ">",
             (f"best intermediate gamma={best}", f"better end gamma={end}"), cache)  # fmt: skip
    t.measured = "; ".join(f"gamma={g}: {mean[g]:.4g}" for g in gammas)
    t.p = {"support": min(1.0, len(inner) * max(p_above(best, e) for e in ends)),
           "contradict": min(1.0, 2 * max(p_above(end, g) for g in inner))}  # fmt: skip
    t.max_true = 2
    iv = {g: interval(by_gamma[g][quality]) if quality in by_gamma[g] else interval([]) for g in gammas}
    best_all = max(gammas, key=lambda g: iv[g].mean)
    if best_all in inner:
        t.old = REPRODUCED if all(verdict(iv[best_all], iv[e], ">") == REPRODUCED for e in ends) else INCONCLUSIVE
    else:
        others = [verdict(iv[best_all], iv[g], ">") for g in gammas if g != best_all]
        t.old = NOT_REPRODUCED if all(x == REPRODUCED for x in others) else INCONCLUSIVE
    return t


def applies(df: pd.DataFrame) -> bool:
    """A findings section needs SimPO and at least one of its comparisons in the sweep."""
    labels = set(df.loc[df["status"] == "finished", "label"].dropna())
    return "SimPO" in labels and bool(labels & {"SimPO w/o LN", "DPO", "DPO (online ref.)"})
