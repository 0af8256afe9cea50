"""Benchmark 10: are the report's verdicts calibrated, and what do they decide at 2 seeds?

On real trials of the built-in task (seeds resampled, nothing invented):

* **A/A**: one setting against itself under disjoint seeds (k vs k seeds drawn from its pool), on
  each metric the paper's findings use. A supported or contradicted verdict is false. Rates per
  metric for the new rule (ablate.verdicts.compare's studentised interval, Δ's two-sided p < 5 %), the plain
  hierarchical bootstrap (its percentile interval excludes 0), and the former rule (disjoint 95 %
  t-intervals); and family-wise: the share of A/A families (all metrics of one draw, corrected
  together by ablate.verdicts.claim_tests.adjust) with at least one false verdict. Seeds are compared by
  Welch's t (what verdicts use) and by the opt-in paired t (B's seeds relabelled as A's).
* **Power at 2 seeds**: every 2-seed subset of the 5-seed sweep (the same seeds in all arms), the
  paper's findings corrected together as the report does; how often each claim is decided, new rule
  against the former one; the three known real effects (w/o LN is longer, DPO's reward accuracy
  above SimPO's, SimPO's win rate above w/o LN's) named.
* **Adaptive seeds, replayed**: start every setting at 2 seeds, give one more seed only to the
  settings of claims still undecided, up to the sweep's 5, each look at α / looks; trials and
  trial-hours spent against the fixed 5-seed design (``adaptive``).

    python -m ablate.run sweeps/paper_on_a_laptop.yaml && python -m ablate.run bench/verdicts_aa.yaml
    python -m bench.verdicts [--laptop results/paper_on_a_laptop] [--aa results/verdicts_aa] [--draws 100]
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np
import pandas as pd

from ablate.readout.loader import find_sweeps, load_trials
from ablate.sweep import sequential as S
from ablate.verdicts import claim_tests as V
from ablate.verdicts import compare as C
from ablate.verdicts import paper_claims as F
from ablate.verdicts.decider import as_look

METRICS = ["gen_length", "length_logp_spearman", "oracle_win_rate", "reward_accuracy",
           "reward_likelihood_agreement", "lc_win_rate@builtin:oracle", "runtime_s", "peak_memory_growth_mb"]  # fmt: skip
ALPHA = 0.05


def _load(path: str) -> pd.DataFrame:
    dirs = find_sweeps([path])
    if not dirs:
        return pd.DataFrame()
    df = load_trials(dirs)
    return df[df["status"] == "finished"]


def _splits(seeds: list, k: int, draws: int, rng: np.random.Generator) -> list[tuple[list, list]]:
    """Disjoint k-vs-k seed subsets: all of them when there are at most ``draws``, else ``draws`` random ones."""
    every = [(list(a), list(b)) for a in itertools.combinations(seeds, k)
             for b in itertools.combinations([s for s in seeds if s not in a], k) if a < b]  # fmt: skip
    if len(every) <= draws:
        return every
    return [every[i] for i in rng.choice(len(every), draws, replace=False)]


def aa(settings: list[pd.DataFrame], k: int, draws: int, cache: dict) -> dict:
    """False-verdict counts of A/A comparisons (module doc)."""
    rng = np.random.default_rng(7)
    counts = {f"{m}|{rule}": [0, 0] for m in METRICS for rule in ("new", "paired", "bootstrap", "old")}
    families = {"new": [0, 0], "paired": [0, 0]}
    for trials in settings:
        for sa, sb in _splits(sorted(trials["seed"]), k, draws, rng):
            a, b = trials[trials["seed"].isin(sa)], trials[trials["seed"].isin(sb)]
            b_paired = b.assign(seed=b["seed"].map(dict(zip(sb, sa, strict=True))))
            tests = {"new": [], "paired": []}
            for m in METRICS:
                if m not in trials or trials[m].isna().any():
                    continue
                for rule, other in (("new", b), ("paired", b_paired)):
                    c = C.compare(a, other, m, cache, pair_seeds=rule == "paired")
                    counts[f"{m}|{rule}"][0] += c.p_difference() < ALPHA
                    counts[f"{m}|{rule}"][1] += 1
                    tests[rule].append(V.simple_test("", m, m, ">", c, None, ("A", "B"), (a, other)))
                lo, hi = C.hierarchical_bootstrap(a, b, m, cache)
                counts[f"{m}|bootstrap"][0] += lo > 0 or hi < 0
                counts[f"{m}|bootstrap"][1] += 1
                old = F.verdict(F.interval(a[m]), F.interval(b[m]), ">")
                counts[f"{m}|old"][0] += old in (F.REPRODUCED, F.NOT_REPRODUCED)
                counts[f"{m}|old"][1] += 1
            for rule, family in tests.items():
                V.adjust(family)
                families[rule][0] += any(t.verdict in (V.SUPPORTED, V.CONTRADICTED) for t in family)
                families[rule][1] += 1
    return {"claims": counts, "families": families}


def _rate(x: list[int]) -> str:
    hits, n = x
    if n == 0:
        return "–"
    p = hits / n
    return f"{100 * p:.1f} % ± {100 * math.sqrt(max(p, 0.5 / n) * (1 - p) / n):.1f} (n={n})"


def print_aa(title: str, result: dict) -> None:
    print(f"\n{title}: false-verdict rate (supported or contradicted), ± binomial standard error")
    rules = ("new", "paired", "bootstrap", "old")
    print(f"{'metric':30s}" + "".join(f"{r:>26s}" for r in rules))
    for m in METRICS:
        print(f"{m:30s}" + "".join(f"{_rate(result['claims'][f'{m}|{r}']):>26s}" for r in rules))
    total = {r: [sum(result["claims"][f"{m}|{r}"][i] for m in METRICS) for i in (0, 1)] for r in rules}
    print(f"{'all metrics':30s}" + "".join(f"{_rate(total[r]):>26s}" for r in rules))
    fam = result["families"]
    print(f"family-wise after Holm (new rule): unpaired {_rate(fam['new'])}, paired {_rate(fam['paired'])}")


def power(laptop: pd.DataFrame, metric: str = "oracle_win_rate") -> pd.DataFrame:
    """Each paper claim decided how often over every 2-seed subset of the sweep, new rule and former rule."""
    seeds = sorted(laptop["seed"].unique())
    rows = []
    for pair in itertools.combinations(seeds, 2):
        sub = laptop[laptop["seed"].isin(pair)]
        tests = F.paper_tests(sub, metric)
        V.adjust(tests)
        for t in tests:
            rows.append({"claim": t.claim, "seeds": pair, "new": t.verdict, "old": t.old})
    return pd.DataFrame(rows)


def print_power(frame: pd.DataFrame, subsets: int) -> None:
    print(f"\nPower at 2 seeds: share of the {subsets} two-seed subsets in which each claim is decided")
    decided_new = ~frame["new"].isin([V.UNDECIDED, V.MISSING])
    decided_old = frame["old"].isin([F.REPRODUCED, F.NOT_REPRODUCED])
    g = frame.assign(new_d=decided_new, old_d=decided_old).groupby("claim", sort=False)
    for claim, rows in g:
        verdicts = ", ".join(f"{v} {n}" for v, n in rows["new"].value_counts().items())
        print(f"  {claim[:70]:70s} new {rows['new_d'].mean():4.0%} ({verdicts}); old {rows['old_d'].mean():4.0%}")
    per = frame.assign(new_d=decided_new, old_d=decided_old).groupby("seeds")[["new_d", "old_d"]].sum()
    print(f"  claims decided per subset: new {per['new_d'].mean():.1f}, old {per['old_d'].mean():.1f} "
          f"of {frame['claim'].nunique()}")  # fmt: skip


def _hours(trials: pd.DataFrame) -> float:
    return float(trials["trial_s"].sum()) / 3600


def adaptive(laptop: pd.DataFrame, start: int = 2, metric: str = "oracle_win_rate") -> dict:
    """Adaptive seeds replayed on the sweep's real trials, by the rule the sweep runs
    (``ablate.sweep.sequential``: one more seed per look for the settings of undecided claims, up to all
    the sweep has, each look at α / looks, Bonferroni over the looks)."""
    seeds = sorted(laptop["seed"].unique())
    rank = laptop["seed"].map({s: i for i, s in enumerate(seeds)})
    have = dict.fromkeys(laptop["config_key"].unique(), start)
    looks = S.looks(start, len(seeds))
    decided: dict[str, str] = {}
    for _ in range(looks):
        sub = laptop[rank < laptop["config_key"].map(have)]
        tests = F.paper_tests(sub, metric)
        V.adjust(tests, S.look_alpha(ALPHA, start, len(seeds)))
        more = S.next_round([as_look(t) for t in tests], decided, have, len(seeds))
        if not more:
            break
        for k in more:
            have[k] += 1
    used = laptop[rank < laptop["config_key"].map(have)]
    fixed = F.paper_tests(laptop, metric)
    V.adjust(fixed)
    return {"decided": decided, "trials": len(used), "hours": _hours(used), "claims": len(tests),
            "fixed_decided": sum(t.verdict not in (V.UNDECIDED, V.MISSING) for t in fixed),
            "fixed_trials": len(laptop), "fixed_hours": _hours(laptop), "looks": looks, "max": len(seeds)}  # fmt: skip


def print_adaptive(r: dict) -> None:
    print(f"\nAdaptive seeds (start 2, up to {r['max']}; {r['looks']} looks at α/{r['looks']} each) "
          "against the fixed 5-seed design, on the sweep's real trials")  # fmt: skip
    print(f"  adaptive: {len(r['decided'])} of {r['claims']} claims decided with {r['trials']} trials "
          f"({r['hours']:.4f} trial-h)")  # fmt: skip
    print(f"  fixed 5 seeds: {r['fixed_decided']} of {r['claims']} decided with {r['fixed_trials']} trials "
          f"({r['fixed_hours']:.4f} trial-h); ratio of trials {r['trials'] / r['fixed_trials']:.2f}")  # fmt: skip
    for claim, verdict in r["decided"].items():
        print(f"    {verdict:13s} {claim}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.verdicts", description=__doc__.split("\n\n")[0])
    p.add_argument("--laptop", default="results/paper_on_a_laptop", help="the 5-seed sweep")
    p.add_argument("--aa", default="results/verdicts_aa", help="the 16-seed sweep of three settings")
    p.add_argument("--draws", type=int, default=100, help="disjoint seed splits per setting")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    laptop, pool = _load(args.laptop), _load(args.aa)
    cache: dict = {}
    if not pool.empty:
        settings = [g for _, g in pool.groupby("config_key")]
        for k in (2, 3, 5):
            print_aa(f"A/A, {k} vs {k} seeds, {len(settings)} settings of {args.aa} "
                     f"({pool.groupby('config_key').size().min()} seeds each)", aa(settings, k, args.draws, cache))  # fmt: skip
    if not laptop.empty:
        settings = [g for _, g in laptop.groupby("config_key") if len(g) >= 4]
        print_aa(f"A/A, 2 vs 2 seeds, {len(settings)} settings of {args.laptop}", aa(settings, 2, args.draws, cache))
        frame = power(laptop)
        print_power(frame, frame["seeds"].nunique())
        print_adaptive(adaptive(laptop))
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
