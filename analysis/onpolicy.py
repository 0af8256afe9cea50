"""On- vs off-policy data (``data.on_policy``, ``ablate.onpolicy.build``) in the report: per method, the selection
metric of its best setting on the data set's own pairs and on the on-policy pairs, and the difference
(Welch 95 % interval over seeds); and the built data set's summary (pairs kept and dropped, the judge's
score margin, chosen vs rejected length), read from the trials' recorded ``data_split``."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from scipy import stats as sp_stats

from ablate import records
from ablate.best import best_rows
from ablate.verdicts.paper_claims import interval
from analysis.tables import Table, fmt_number

# The data arms' label suffixes, as ``ablate.spec.expand.data_variants`` writes them (not imported: the
# ``ablate.spec`` package loads torch).
OFF, ON = " [off-policy]", " [on-policy]"


def split_label(label: str) -> tuple[str, str | None]:
    """``"SimPO [on-policy]"`` -> ``("SimPO", "on")``; a label without a data arm -> ``(label, None)``."""
    for suffix, arm in ((OFF, "off"), (ON, "on")):
        if suffix in label:
            return label.replace(suffix, "", 1), arm
    return label, None


def difference(on: pd.Series, off: pd.Series) -> str:
    """``on - off`` of the means, with a Welch 95 % interval when both arms have two seeds or more."""
    diff = on.mean() - off.mean()
    if len(on) < 2 or len(off) < 2 or (on.var() == 0 and off.var() == 0):
        return f"{diff:+.3f}"
    ci = sp_stats.ttest_ind(on, off, equal_var=False).confidence_interval(0.95)
    return f"{diff:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]"


def comparison_table(df: pd.DataFrame, metric: str, mode: str = "max") -> Table | None:
    """One row per method with both arms; None when the sweep has no on- vs off-policy comparison."""
    done = df[df["status"] == "finished"] if not df.empty else df
    if done.empty or metric not in done:
        return None
    arms: dict[str, dict[str, pd.Series]] = {}
    for label, group in done.groupby("label", sort=False):
        base, arm = split_label(str(label))
        if arm is not None:
            arms.setdefault(base, {})[arm] = best_rows(group, metric, mode)[metric].dropna().astype(float)
    rows = [{"method": base, f"{metric} off-policy": str(interval(a["off"])),
             f"{metric} on-policy": str(interval(a["on"])), "on − off": difference(a["on"], a["off"])}
            for base, a in arms.items() if {"on", "off"} <= set(a)]  # fmt: skip
    if not rows:
        return None
    table = pd.DataFrame(rows)
    caption = (
        f"Each method's `{metric}` (its best setting, mean and 95 % t-interval over seeds) trained on the data "
        "set's own pairs (off-policy) and on pairs built from the start point's own judged answers (on-policy, "
        "data.on_policy); last column: on-policy minus off-policy, with a Welch 95 % interval."
    )
    return Table("on_policy", "On- vs off-policy preference data", caption, table, table)


def built_summaries(df: pd.DataFrame) -> list[dict]:
    """The distinct on-policy data sets the trials trained on (their ``data_split.on_policy``)."""
    seen: dict[str, dict] = {}
    for trial_dir in df.get("trial_dir", pd.Series(dtype=str)).dropna():
        try:
            split = records.read_trial_config(Path(trial_dir)).get("data_split") or {}
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(split.get("on_policy"), dict):
            seen.setdefault(str(split["on_policy"].get("file")), split["on_policy"])
    return list(seen.values())


def data_table(df: pd.DataFrame) -> Table | None:
    """The built data sets: pairs kept and dropped by reason, score margin, chosen vs rejected length."""
    rows = []
    for s in built_summaries(df):
        m, n, d = s.get("margin") or {}, s.get("length") or {}, s["dropped"]
        rows.append({
            "judge": s.get("judge"), "pick": s.get("pick"), "prompts": s["prompts"], "samples": s["samples"],
            "pairs kept": s["kept"], "dropped: duplicates": d["duplicates"], "ties": d["ties"],
            "under margin": d["margin"], "empty": d["empty"],
            "margin median [p10, p90]": f"{fmt_number(m.get('median', math.nan))} "
                                        f"[{fmt_number(m.get('p10', math.nan))}, {fmt_number(m.get('p90', math.nan))}]",
            "chosen tokens": fmt_number(n.get("chosen_mean_tokens", math.nan), 1),
            "rejected tokens": fmt_number(n.get("rejected_mean_tokens", math.nan), 1),
            "chosen longer": fmt_number(n.get("chosen_longer_rate", math.nan), 2),
            "file": s.get("file"),
        })  # fmt: skip
    if not rows:
        return None
    table = pd.DataFrame(rows)
    caption = (
        "The on-policy data set(s) built for this sweep: prompts x samples answered by the start point, pairs "
        "kept and prompts dropped (all answers identical, a tie, a margin under min_margin, empty answers), the "
        "judge's score margin between chosen and rejected, and their mean lengths; `chosen longer` is the "
        "share of pairs whose chosen answer is the longer one (0.5 or less: no length bias from the judge)."
    )
    return Table("on_policy_data", "On-policy data set", caption, table, table)


def tables(df: pd.DataFrame, metric: str, mode: str = "max") -> list[Table]:
    return [t for t in (comparison_table(df, metric, mode), data_table(df)) if t is not None]
