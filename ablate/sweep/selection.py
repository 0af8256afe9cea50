"""The winners of one finished stage of a staged sweep (``ablate.sweep.staged``), by the report's rule.

Reads the stage's trials with ``ablate.readout.loader`` (the report's reader too) and ranks each method's
settings with the one best-setting rule, ``ablate.best.rank`` (best seed mean of the stage's metric; ties go
to the lower standard deviation, then to more seeds, then to the earlier setting in run order), so a stage's
winner is the setting the report would call that method's best. Returns plain, JSON-able records: the ranking
with each setting's mean and 95 % t-interval, the tie that decided the winner if any, and for a method with
no eligible trial why it stopped."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ablate import best, records
from ablate.readout import fetch
from ablate.readout.loader import load_trials
from ablate.readout.summary import seed_summary

TIE_TOLERANCE = 1e-9  # means this close are a tie (seed means of equal values can differ in the last bit)


def select(stage_path: str | Path, labels: list[str], metric: str, mode: str, stage: str) -> list[dict]:
    """One record per label of ``labels`` (the method entries that ran in this stage): ``status``
    ``selected`` with its ``ranking`` (best first), or ``stopped`` with the ``reason``. ``stage_path``:
    the stage's Ray Tune experiment, a local path or a URI."""
    stage_dir = fetch.localize(str(stage_path))  # a local copy of the report's files, for storage behind a URI
    df = load_trials([stage_dir]) if stage_dir.is_dir() else pd.DataFrame(columns=["label", "status"])
    ranked = best.rank(seed_summary(df, [metric]), metric, mode) if not df.empty else df
    out = []
    for label in labels:
        trials = df[df["label"] == label]
        rows = ranked[ranked["label"] == label] if not ranked.empty else ranked
        if rows.empty:
            out.append({"label": label, "status": "stopped", "reason": why_stopped(trials, metric, stage)})
            continue
        ranking = [setting_record(r, trials, metric) for _, r in rows.iterrows()]
        tried = trials["config_key"].nunique()
        out.append(
            {
                "label": label,
                "status": "selected",
                "ranking": ranking,
                "tie": tie(ranking),
                "settings": int(tried),
                "unfinished_settings": int(tried - len(ranking)),
            }
        )
    return out


def _number(x) -> float | None:
    return float(x) if x is not None and isinstance(x, int | float) and math.isfinite(x) else None


def setting_record(row: pd.Series, trials: pd.DataFrame, metric: str) -> dict:
    """A ranked setting: its name, the sweep file's values it names, and the metric over its seeds."""
    return {
        "setting": str(row["setting"]),
        "config_key": str(row["config_key"]),
        "point": point_of(trials[trials["config_key"] == row["config_key"]]),
        "mean": _number(row[f"{metric}_mean"]),
        "std": _number(row[f"{metric}_std"]),
        "ci_low": _number(row[f"{metric}_ci_low"]),
        "ci_high": _number(row[f"{metric}_ci_high"]),
        "n": int(row[f"{metric}_n"]),
        "seeds": str(row["seed_list"]),
    }


def point_of(trials: pd.DataFrame) -> dict:
    """The ``point`` (the sweep file's values) of a setting, from one of its trials' params.json."""
    for trial_dir in trials["trial_dir"]:
        try:
            point = records.read_trial_config(Path(trial_dir)).get("point")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(point, dict):
            return point
    raise ValueError(f"no readable params.json with a `point` among {list(trials['trial_dir'])}")


def close(a: float | None, b: float | None) -> bool:
    return (
        a is not None and b is not None and math.isclose(a, b, rel_tol=TIE_TOLERANCE, abs_tol=TIE_TOLERANCE)
    )


def tie(ranking: list[dict]) -> dict | None:
    """The settings whose mean equals the winner's, and what decided between them; None if no tie."""
    best = ranking[0]
    tied = [s for s in ranking[1:] if close(s["mean"], best["mean"])]
    if not tied:
        return None
    nxt = tied[0]
    if best["std"] is not None and (nxt["std"] is None or best["std"] < nxt["std"]):
        rule = "lower standard deviation"
    elif best["n"] > nxt["n"]:
        rule = "more seeds"
    else:
        rule = "earlier in run order (equal means, standard deviations and seeds)"
    return {"with": [s["setting"] for s in tied], "decided_by": rule}


def cut_tie(ranking: list[dict], k: int) -> str | None:
    """When the k-th and the (k+1)-th settings tie, which were left out by the tie-break."""
    if len(ranking) <= k or not close(ranking[k - 1]["mean"], ranking[k]["mean"]):
        return None
    left = [s["setting"] for s in ranking[k:] if close(s["mean"], ranking[k - 1]["mean"])]
    return f"tied with the last carried setting but not carried: {', '.join(left)}"


def why_stopped(trials: pd.DataFrame, metric: str, stage: str) -> str:
    """Why a method has no eligible setting in ``stage``: its trials' statuses and first error."""
    if trials.empty:
        return f"no trial of it ran in stage {stage}"
    counts = trials["status"].value_counts()
    seen = ", ".join(f"{n} {s}" for s, n in counts.items())
    if counts.get("finished", 0):
        return f"none of its finished trials in stage {stage} reported `{metric}` ({seen})"
    errors = [e for e in trials.get("error", pd.Series(dtype=str)).fillna("") if e]
    first = f"; first message: {errors[0][:200]}" if errors else ""
    return f"no finished trial in stage {stage} ({seen}){first}"
