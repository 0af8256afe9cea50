"""Two arms compared on one metric: the effect Δ = mean(A) − mean(B) over seeds and Δ's interval,
from both sources of noise a sweep has (docs/reports.md, "Verdicts"; ../shared/statistics.md).

**Seeds.** Each trial's metric is one value per seed: Welch's t over the two arms' seeds
(Welch–Satterthwaite degrees of freedom). Pairing the seeds both arms ran (trials with one seed
share the data order and the start point) is available (``pair_seeds``: a paired t on the per-seed
differences, from 3 shared seeds on) but off for verdicts: in bench/verdicts.py's A/A comparisons
the paired t, added to the example term, gave up to 10 % false verdicts on one metric at 5 seeds,
where Welch's stayed at or below 5 %. The pairing that pays is the examples'.

**Examples.** A trial's held-out metrics are means (or statistics) over hundreds of pairs and
prompts that every arm scores alike (ablate.verdicts.examples). A bootstrap over examples draws the same
examples for both arms and every seed and recomputes each trial's metric on every draw (vectorised):
the variance of Δ over the draws is the example-level variance, paired across arms (Miller, "Adding
Error Bars to Evals", arXiv 2411.00640: paired differences, clustered by question). The
length-controlled win rate is not refitted per draw: its per-trial delta-method error (the GLM's
sandwich covariance, ablate.judging.winrate) enters unpaired and as if fully correlated across seeds, which
only widens the interval; bench/verdicts.py checks its calibration.

**Interval.** Δ ± t·√(V_seeds + V_examples), with the Welch–Satterthwaite degrees of freedom of the
two terms (the example term has n_examples − 1). The seed term already holds the trials' own
example noise, so the sum counts some of it twice: deliberately conservative. A plain hierarchical
bootstrap (seeds, then examples, percentile interval; ``hierarchical_bootstrap``) is *not* used for
verdicts: with 2–5 seeds a bootstrap over seeds underestimates their variance by (n − 1)/n and ignores
that it is estimated from n values (Colas et al. 2019, "A Hitchhiker's Guide to Statistical
Comparisons of RL Algorithms"; Bouthillier et al., MLSys 2021); bench/verdicts.py measures it
giving false verdicts well above 5 % in A/A comparisons, where this studentised interval stays at
or below it. Metrics with one value per trial (runtime, peak memory) have only the seed term: a
paired or Welch t. An arm with a single seed leaves the seed variance unknown: no interval.

``p_difference``, ``p_equivalent`` (two one-sided tests against ±margin, Schuirmann 1987) and
``p_outside`` give the p-values that ablate.verdicts.claim_tests corrects for the report's many claims;
``seeds_to_decide`` the seeds per arm that would decide a claim at 80 % power (a t approximation
with the observed variances)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as st

from ablate.verdicts import examples

DRAWS = 500  # bootstrap draws of examples (the variance of Δ to ~6 %)
RNG_SEED = 20260  # fixed: a report is reproducible
POWER = 0.8
MAX_SEEDS = 64
# A paired t on 2 seeds has 1 degree of freedom; added to the example term, Satterthwaite's degrees of
# freedom then swing with that one value and the A/A benchmark over-rejects (bench/verdicts.py). From
# 3 shared seeds on, pairs; below, Welch.
MIN_PAIRED = 3


@dataclass(frozen=True)
class Comparison:
    metric: str
    delta: float  # mean(A) − mean(B)
    se: float  # √(V_seeds + V_examples); inf when unknown
    df: float
    n_a: int
    n_b: int
    paired: bool
    se_seeds: float
    se_examples: float  # 0 for a metric with one value per trial
    examples: int  # examples per trial behind se_examples (0: none)
    mean_b: float

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        if not math.isfinite(self.se):
            return -math.inf, math.inf
        half = st.t.ppf(0.5 + level / 2, self.df) * self.se
        return self.delta - half, self.delta + half

    def _sf(self, z: float) -> float:
        if self.se == 0:
            return 0.0 if z > 0 else 1.0 if z < 0 else 0.5
        return float(st.t.sf(z / self.se, self.df)) if math.isfinite(self.se) else 0.5

    def p_difference(self) -> float:
        """Two-sided p of Δ = 0."""
        return min(1.0, 2 * min(self._sf(self.delta), self._sf(-self.delta)))

    def p_equivalent(self, margin: float) -> float:
        """TOST p of |Δ| ≥ margin (small: Δ lies within ±margin)."""
        return max(self._sf(self.delta + margin), self._sf(margin - self.delta))

    def p_outside(self, margin: float) -> float:
        """Two-sided p of |Δ| ≤ margin (small: Δ lies beyond the margin)."""
        return min(1.0, 2 * min(self._sf(self.delta - margin), self._sf(-self.delta - margin)))


def _values(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    if metric not in trials.columns:
        return trials.iloc[0:0]
    return trials[trials[metric].notna()]


def seed_level(a: pd.DataFrame, b: pd.DataFrame, metric: str, pair_seeds: bool = False) -> tuple[float, float, bool]:
    """(variance of Δ, degrees of freedom, paired) from the trials' values: Welch's t, or with
    ``pair_seeds`` a paired t where both arms ran the same seeds (at least ``MIN_PAIRED``);
    (inf, 1, False) with a single seed in an arm."""
    sa, sb = a["seed"].tolist(), b["seed"].tolist()
    ya, yb = a[metric].to_numpy(float), b[metric].to_numpy(float)
    if pair_seeds and len(sa) >= MIN_PAIRED and len(set(sa)) == len(sa) and sorted(sa) == sorted(sb):
        d = a.set_index("seed")[metric] - b.set_index("seed")[metric]
        return float(d.var(ddof=1)) / len(d), len(d) - 1.0, True
    if len(ya) < 2 or len(yb) < 2:
        return math.inf, 1.0, False
    va, vb = ya.var(ddof=1) / len(ya), yb.var(ddof=1) / len(yb)
    if va + vb == 0:
        return 0.0, len(ya) + len(yb) - 2.0, False
    df = (va + vb) ** 2 / (va**2 / (len(ya) - 1) + vb**2 / (len(yb) - 1))
    return float(va + vb), float(df), False


def example_draws(a: pd.DataFrame, b: pd.DataFrame, metric: str, cache: dict | None = None,
                  draws: int = DRAWS, seed: int = RNG_SEED) -> np.ndarray | None:  # fmt: skip
    """Every trial's metric (columns: A's trials, then B's) on the same bootstrap draws of examples;
    None where a trial has no per-example record of ``metric`` or the trials' example sets differ.
    ``cache`` keeps each trial's draws: the draws depend only on the number of examples and the
    seed, so a trial in several comparisons is computed once."""
    if not examples.has_examples(metric):
        return None
    cache = {} if cache is None else cache
    cols = []
    for frame in (a, b):
        for _, row in frame.iterrows():
            key = ("draws", row.get("heldout"), row.get("trial_dir"), metric, draws, seed)
            if key not in cache:
                got = examples.unit_values(row, metric, cache)
                cache[key] = None if got is None else (got[0], len(got[1]), examples.replicates(
                    [got[1]], np.random.default_rng(seed).integers(0, len(got[1]), size=(draws, len(got[1]))))[:, 0])  # fmt: skip
            cols.append(cache[key])
    if not cols or any(c is None for c in cols) or len({c[:2] for c in cols}) != 1:
        return None
    return np.column_stack([c[2] for c in cols])


def _lc_variance(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> float | None:
    """An LC win rate's example-level variance from its per-trial delta-method errors (module doc)."""
    name, _, judge = metric.partition("@")
    se_col = f"{name}_se@{judge}"
    if not metric.startswith("lc_win_rate") or se_col not in a.columns or se_col not in b.columns:
        return None
    sa, sb = a[se_col].mean(), b[se_col].mean()
    return float(sa**2 + sb**2) if math.isfinite(sa) and math.isfinite(sb) else None


def compare(a: pd.DataFrame, b: pd.DataFrame, metric: str, cache: dict | None = None,
            draws: int = DRAWS, seed: int = RNG_SEED, pair_seeds: bool = False) -> Comparison:  # fmt: skip
    """Arm A against arm B (finished trials of one setting each, a row per seed) on ``metric``:
    Δ and its studentised interval from seeds and examples (module doc)."""
    cache = {} if cache is None else cache
    a, b = _values(a, metric), _values(b, metric)
    if a.empty or b.empty:
        return Comparison(metric, math.nan, math.inf, 1.0, len(a), len(b), False, math.inf, 0.0, 0, math.nan)
    delta = float(a[metric].mean() - b[metric].mean())
    v_seed, df_seed, paired = seed_level(a, b, metric, pair_seeds)
    v_ex, n_ex = 0.0, 0
    reps = example_draws(a, b, metric, cache, draws, seed)
    if reps is not None:
        diff = reps[:, : len(a)].mean(axis=1) - reps[:, len(a) :].mean(axis=1)
        v_ex, n_ex = float(np.var(diff, ddof=1)), _example_count(a, metric, cache)
    elif (lc := _lc_variance(a, b, metric)) is not None:
        v_ex, n_ex = lc, _example_count(a, "win_rate@" + metric.split("@", 1)[1], cache)
    v = v_seed + v_ex
    df = satterthwaite([(v_seed, df_seed), (v_ex, max(n_ex - 1, 1))])
    return Comparison(metric, delta, math.sqrt(v), df, len(a), len(b), paired, math.sqrt(v_seed),
                      math.sqrt(v_ex), n_ex, float(b[metric].mean()))  # fmt: skip


def _example_count(a: pd.DataFrame, metric: str, cache: dict | None) -> int:
    got = examples.unit_values(a.iloc[0], metric, cache) if examples.has_examples(metric) else None
    return len(got[1]) if got else 0


def satterthwaite(parts: list[tuple[float, float]]) -> float:
    """Degrees of freedom of a sum of variance estimates, each (variance, its degrees of freedom)."""
    parts = [(v, d) for v, d in parts if v > 0]
    if not parts:
        return math.inf
    if any(not math.isfinite(v) for v, _ in parts):
        return 1.0
    return sum(v for v, _ in parts) ** 2 / sum(v * v / d for v, d in parts)


def hierarchical_bootstrap(a: pd.DataFrame, b: pd.DataFrame, metric: str, cache: dict | None = None,
                           draws: int = DRAWS, seed: int = RNG_SEED, level: float = 0.95) -> tuple[float, float]:  # fmt: skip
    """The plain two-level bootstrap's percentile interval of Δ: seeds (paired ones drawn together),
    then examples (the same for every trial), the metric recomputed on each draw. Kept to show in
    bench/verdicts.py why verdicts do not use it (module doc)."""
    a, b = _values(a, metric), _values(b, metric)
    if len(a) < 2 or len(b) < 2:
        return -math.inf, math.inf
    reps = example_draws(a, b, metric, cache, draws, seed)
    if reps is None:
        reps = np.tile(np.r_[a[metric].to_numpy(float), b[metric].to_numpy(float)], (draws, 1))
    rng = np.random.default_rng(seed + 1)
    ra, rb = reps[:, : len(a)], reps[:, len(a) :]
    sa = rng.integers(0, len(a), size=(draws, len(a)))
    paired = sorted(a["seed"]) == sorted(b["seed"]) and a["seed"].is_unique
    if paired:  # draw seeds, not trials: B's columns in A's seed order
        order = [list(b["seed"]).index(s) for s in a["seed"]]
        rb, sb = rb[:, order], sa
    else:
        sb = rng.integers(0, len(b), size=(draws, len(b)))
    diff = np.take_along_axis(ra, sa, axis=1).mean(axis=1) - np.take_along_axis(rb, sb, axis=1).mean(axis=1)
    lo, hi = np.quantile(diff, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi)


def seeds_to_decide(c: Comparison, margin: float, alpha: float, power: float = POWER) -> tuple[int | None, str]:
    """Seeds per arm that would decide the claim with probability ``power`` at level ``alpha`` if Δ
    and the variances are what was observed: (seeds, "difference" or "equivalence"), (None, ...)
    when more than ``MAX_SEEDS`` would not. The seed term shrinks as 1/n; the example term is kept
    (more seeds do not add examples)."""
    n0 = min(c.n_a, c.n_b)
    if n0 < 2 or not math.isfinite(c.se) or not math.isfinite(c.delta):
        return None, "a second seed per arm gives the seed variance"
    v_seed, v_ex = c.se_seeds**2 * n0, c.se_examples**2
    z = st.norm.ppf(1 - alpha / 2) + st.norm.ppf(power)
    floor = z * math.sqrt(v_ex)  # what the examples' error alone allows, with infinitely many seeds
    if v_ex > 0 and abs(c.delta) < floor and margin - abs(c.delta) < floor:
        return None, "more held-out examples: at their error no number of seeds gives the power"
    for n in range(n0 + 1, MAX_SEEDS + 1):
        df_seed = n - 1.0 if c.paired else 2.0 * n - 2
        se = math.sqrt(v_seed / n + v_ex)
        df = satterthwaite([(v_seed / n, df_seed), (v_ex, max(c.examples - 1, 1))])
        beta = st.t.ppf(power, df)
        if abs(c.delta) >= (st.t.ppf(1 - alpha / 2, df) + beta) * se:
            return n, "difference"
        if margin > 0 and margin - abs(c.delta) >= (st.t.ppf(1 - alpha, df) + beta) * se:
            return n, "equivalence"
    return None, f"more than {MAX_SEEDS} seeds per arm"
