"""Verdicts on a report's claims (the paper's findings and the sweep file's own ``claims:``).

Each claim compares two arms on one metric (ablate.verdicts.compare: Δ = mean(A) − mean(B) with a
studentised interval from seeds and examples) and gets one of four verdicts:

* **supported**: Δ differs from 0 in the claimed direction (for a ``same`` claim: Δ lies within
  ±margin, two one-sided tests);
* **contradicted**: Δ differs from 0 the other way (``same``: Δ lies beyond the margin);
* **equivalent**: Δ lies within ±margin (a default per metric, ``MARGINS``, or the claim's own);
* **undecided**: none of these at the corrected level.

Many claims at once: the p-values of all the report's hypotheses (per claim: difference and
equivalence, of which at most one can be true) are corrected together by Holm's step-down
procedure (Holm 1979) with Shaffer's logical constraint (Shaffer 1986): at step i the p-value is
multiplied by min(M, N − i + 1), M being the most hypotheses that can be true at once (one per
claim; two for a composite claim) and N the hypotheses tested. This is a closed test with
Bonferroni local tests, so the family-wise error over the report is at most ``ALPHA``. The
direction of a difference is read from Δ's sign (a directional error needs a two-sided
p below α/M: ≤ α/2 per claim). For undecided claims ``seeds_to_decide`` says how many seeds per arm
would decide them at 80 % power (at level α/M, the procedure's strictest step) and what those extra
trials would cost from the arms' measured trial times."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from ablate.verdicts.compare import Comparison, seeds_to_decide

ALPHA = 0.05
SUPPORTED, CONTRADICTED, EQUIVALENT, UNDECIDED, MISSING = (
    "supported", "contradicted", "equivalent", "undecided", "not measured",
)  # fmt: skip
RATE_MARGIN = 0.01  # rates and accuracies: one percentage point
MARGINS = {
    "reward_accuracy": RATE_MARGIN, "oracle_win_rate": RATE_MARGIN, "reward_likelihood_agreement": RATE_MARGIN,
    "win_rate": RATE_MARGIN, "lc_win_rate": RATE_MARGIN, "lc_win_rate_sweep": RATE_MARGIN,
    "length_logp_spearman": 0.02, "gen_length": 0.1, "oracle_reward": 0.01,
}  # fmt: skip
RELATIVE_MARGIN = 0.05  # other metrics (costs, lengths in other units): 5 % of arm B's mean


def default_margin(metric: str, mean_b: float = math.nan) -> float:
    base = metric.split("@", 1)[0]
    if base in MARGINS:
        return MARGINS[base]
    return RELATIVE_MARGIN * abs(mean_b) if math.isfinite(mean_b) else 0.0


@dataclass
class Test:
    """One claim and its evidence: p-values of its hypotheses (name → p), corrected together."""

    finding: str
    claim: str
    metric: str
    expect: str  # ">", "<" (A than B) or "=" (same within margin)
    comparison: Comparison | None
    margin: float
    measured: str
    p: dict[str, float] = field(default_factory=dict)  # difference / equivalence / support / contradict
    max_true: int = 1
    rule: str = ""  # a claim decided by a rule, not a test (its verdict is given)
    rule_verdict: str = ""
    arms: tuple[pd.DataFrame, pd.DataFrame] | None = None  # for the cost of more seeds
    adjusted: dict[str, float] = field(default_factory=dict)
    verdict: str = MISSING
    old: str = ""  # the former rule's verdict (disjoint 95 % t-intervals), for bench/verdicts.py


def simple_test(finding: str, claim: str, metric: str, expect: str, c: Comparison, margin: float | None,
                names: tuple[str, str], arms: tuple[pd.DataFrame, pd.DataFrame]) -> Test:  # fmt: skip
    """A claim on one comparison: A ``expect`` B (">", "<") or the same within ``margin`` ("=")."""
    margin = default_margin(metric, c.mean_b) if margin is None else margin
    measured = f"{names[0]} {c.mean_b + c.delta:.4g} (n={c.n_a}) vs {names[1]} {c.mean_b:.4g} (n={c.n_b})"
    if c.n_a == 0 or c.n_b == 0:
        return Test(finding, claim, metric, expect, None, margin, measured or "not measured", arms=arms)
    p = {"equivalence": c.p_equivalent(margin)}
    p["difference"] = c.p_outside(margin) if expect == "=" else c.p_difference()
    return Test(finding, claim, metric, expect, c, margin, measured, p, arms=arms)


def adjust(tests: list[Test], alpha: float = ALPHA) -> None:
    """Holm's step-down with Shaffer's constraint over every hypothesis of ``tests`` (module doc):
    fills each test's ``adjusted`` p-values and its ``verdict``."""
    hyps = [(p, i, name) for i, t in enumerate(tests) for name, p in t.p.items() if math.isfinite(p)]
    hyps.sort(key=lambda h: h[0])
    most_true = sum(t.max_true for t in tests if t.p)
    running = 0.0
    for step, (p, i, name) in enumerate(hyps):
        factor = min(most_true, len(hyps) - step)
        running = max(running, min(1.0, factor * p))
        tests[i].adjusted[name] = running
    for t in tests:
        t.verdict = _verdict(t, alpha)


def _verdict(t: Test, alpha: float) -> str:
    if t.rule:
        return t.rule_verdict
    if not t.p:
        return MISSING
    adj = t.adjusted
    if "support" in adj or "contradict" in adj:  # a composite claim
        if adj.get("support", 1.0) < alpha:
            return SUPPORTED
        return CONTRADICTED if adj.get("contradict", 1.0) < alpha else UNDECIDED
    diff, equiv = adj.get("difference", 1.0) < alpha, adj.get("equivalence", 1.0) < alpha
    if t.expect == "=":
        return SUPPORTED if equiv else CONTRADICTED if diff else UNDECIDED
    if diff:
        return SUPPORTED if (t.comparison.delta > 0) == (t.expect == ">") else CONTRADICTED
    return EQUIVALENT if equiv else UNDECIDED


def family_size(tests: list[Test]) -> int:
    return sum(t.max_true for t in tests if t.p)


def _trial_hours(trials: pd.DataFrame) -> tuple[float, bool]:
    """Mean hours of one trial of an arm (its whole trial time, else its training time) and whether
    its trials held GPUs (then GPU-hours: hours × GPUs)."""
    col = "trial_s" if "trial_s" in trials and trials["trial_s"].notna().any() else "runtime_s"
    hours = float(trials[col].mean()) / 3600 if col in trials else math.nan
    gpus = float(trials["gpus"].fillna(0).mean()) if "gpus" in trials else 0.0
    return (hours * gpus, True) if gpus > 0 else (hours, False)


def to_decide(t: Test, m: int, alpha: float = ALPHA) -> str:
    """Seeds per arm (and their cost) that would decide an undecided claim; '' otherwise."""
    if t.verdict != UNDECIDED or t.comparison is None or t.arms is None:
        return ""
    n, target = seeds_to_decide(t.comparison, t.margin, alpha / max(m, 1))
    if n is None:
        return target
    cost, gpu = 0.0, False
    for arm, have in zip(t.arms, (t.comparison.n_a, t.comparison.n_b), strict=True):
        hours, gpu_arm = _trial_hours(arm)
        cost += max(n - have, 0) * hours
        gpu |= gpu_arm
    return f"{n} seeds per arm ({target}): +{_hours(cost)} {'GPU-h' if gpu else 'trial-h'}"


def _hours(h: float) -> str:
    return "?" if not math.isfinite(h) else f"{h:.3g}"


def interval_text(t: Test) -> str:
    c = t.comparison
    if c is None or not math.isfinite(c.delta):
        return "–"
    lo, hi = c.interval()
    return f"{c.delta:+.4g} [{lo:+.4g}, {hi:+.4g}]"


def p_text(t: Test) -> str:
    if t.rule:
        return t.rule
    if not t.adjusted:
        return "–"
    key = {SUPPORTED: "support", CONTRADICTED: "contradict", EQUIVALENT: "equivalence"}.get(t.verdict)
    if t.expect == "=" and t.verdict == SUPPORTED:
        key = "equivalence"
    if key not in t.adjusted:
        key = "difference" if t.verdict in (SUPPORTED, CONTRADICTED) else min(t.adjusted, key=t.adjusted.get)
    return f"{t.adjusted[key]:.2g} ({key})"


def table(tests: list[Test], alpha: float = ALPHA) -> pd.DataFrame:
    """The findings table: a row per claim (``adjust`` first)."""
    m = family_size(tests)
    rows = [{"finding": t.finding, "claim": t.claim, "metric": t.metric, "measured": t.measured,
             "Δ [95 % CI]": interval_text(t), "p (Holm)": p_text(t), "to decide": to_decide(t, m, alpha),
             "verdict": t.verdict} for t in tests]  # fmt: skip
    return pd.DataFrame(rows)


CAPTION = (
    "Δ = A − B (the claim's first arm minus its second) over seeds, with a 95 % interval from seeds "
    "(Welch) and held-out examples (the same bootstrap draws for both arms; docs/reports.md#verdicts). "
    "p (Holm): the p-value that decided, adjusted by Holm's step-down over all {m} hypotheses of this "
    "report's {k} claims (difference and equivalence, at most one true per claim, two for a composite "
    "one: Shaffer's constraint), family-wise error 5 %. Supported / contradicted: "
    "Δ differs from 0 in / against the claimed direction; equivalent: Δ within ±margin ({margins}); "
    "undecided: neither. To decide: seeds per arm for 80 % power at the observed Δ and variances, "
    "and the extra trials' cost from the measured trial times."
)


def caption(tests: list[Test]) -> str:
    margins = "0.01 for rates and accuracies, 0.02 for ρ, 0.1 tokens of length, 5 % of B's mean otherwise"
    n_hyp = sum(len(t.p) for t in tests)
    return CAPTION.format(m=n_hyp, k=sum(1 for t in tests if t.p), margins=margins)
