"""A staged sweep (``stages:``, run by ``ablate.sweep.staged``) read as one sweep.

``ablate.readout.loader`` reads every stage's trials (``stage``, ``stage_index``, ``sweep`` = ``<sweep>/<stage>``).
The report's tables come from the final stage (``final_stage``: Table 4 is each method's best setting
there, over the final stage's seeds), and the ``tuning_path`` table shows, per method, the winner of
each stage and what it beat, from the selections recorded in the sweep's ``stages.json``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ablate.readout.loader import STAGES_RECORD
from analysis.tables import DIGITS, Table, fmt_number


def _staged(df: pd.DataFrame) -> pd.Series:
    if df.empty or "stage_index" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["stage_index"].notna()


def _root(sweep: str) -> str:
    return str(sweep).rsplit("/", 1)[0]


def final_stage(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The trials the report's tables are drawn from, and notes: every trial of a plain sweep, and of a
    staged sweep only its final stage (or, while that has no finished trial, its latest stage that has)."""
    staged = _staged(df)
    if not staged.any():
        return df, []
    keep = ~staged
    notes = []
    for root, group in df[staged].groupby(df.loc[staged, "sweep"].map(_root), sort=False):
        names = _record(group).get("stages") or sorted(set(group["stage"]))
        done = group[group["status"] == "finished"]
        last = int(done["stage_index"].max()) if not done.empty else int(group["stage_index"].max())
        keep |= staged & (df["sweep"].map(_root) == root) & (df["stage_index"] == last)
        shown = names[last] if last < len(names) else str(last)
        if last == len(names) - 1:
            notes.append(
                f"Staged sweep {root}: the tables show its final stage, {shown}; the tuning path shows how each "
                f"method's setting was chosen over the stages {', '.join(names)}."
            )
        else:
            notes.append(
                f"Staged sweep {root} has no finished trial in its final stage {names[-1]} (yet): the tables show "
                f"stage {shown}, the latest with finished trials."
            )
    return df[keep], notes


def _record(rows: pd.DataFrame) -> dict:
    """The ``stages.json`` of the staged sweep these trial rows belong to (empty if unreadable)."""
    for trial_dir in rows["trial_dir"]:
        try:
            return json.loads((Path(trial_dir).parents[1] / STAGES_RECORD).read_text())
        except (OSError, ValueError, IndexError):
            continue
    return {}


def _stat(s: dict, metric: str, spread: str) -> str:
    d = DIGITS.get(metric, 3)
    mean = s.get("mean")
    if mean is None:
        return "–"
    n = s.get("n") or 0
    text = fmt_number(mean, d)
    if n >= 2 and spread == "ci95" and s.get("ci_low") is not None:
        text += f" [{fmt_number(s['ci_low'], d)}, {fmt_number(s['ci_high'], d)}]"
    elif n >= 2 and s.get("std") is not None:
        text += f" ± {fmt_number(s['std'], d)}"
    return f"{text} ({n} seed{'s' if n != 1 else ''})"


def _rows(root: str, record: dict, spread: str) -> list[tuple[dict, dict]]:
    """(display row, CSV row) per method and stage, methods in file order, stages in run order."""
    out: dict[str, list[tuple[dict, dict]]] = {}
    for stage in record.get("stages", []):
        sel = record.get("selections", {}).get(stage)
        if sel is None:
            continue
        metric = sel["metric"]
        for m in sel["methods"]:
            data = {"sweep": root, "label": m["label"], "stage": stage, "metric": metric, "mode": sel["mode"],
                    "status": m["status"]}  # fmt: skip
            row = {"Method": m["label"], "Stage": stage, "Selected by": f"{metric} ({sel['mode']})"}
            if m["status"] != "selected":
                row.update({"Winner": m["status"], "Value": m["reason"], "Beat": "", "Next best": ""})
                data["reason"] = m["reason"]
                out.setdefault(m["label"], []).append((row, data))
                continue
            best, rest = m["ranking"][0], m["ranking"][1:]
            beat = f"{len(rest)} setting{'s' if len(rest) != 1 else ''}"
            if m.get("tie"):
                beat += f"; tied with {', '.join(m['tie']['with'])}, decided by {m['tie']['decided_by']}"
            row.update(
                {
                    "Winner": best["setting"],
                    "Value": _stat(best, metric, spread),
                    "Beat": beat,
                    "Next best": f"{rest[0]['setting']}: {_stat(rest[0], metric, spread)}" if rest else "–",
                }
            )
            data.update({k: best.get(k) for k in ("setting", "mean", "std", "ci_low", "ci_high", "n")})
            data.update(beaten=len(rest), tie=json.dumps(m.get("tie")) if m.get("tie") else "")
            if rest:
                data.update(next_setting=rest[0]["setting"], next_mean=rest[0]["mean"])
            out.setdefault(m["label"], []).append((row, data))
    return [r for rows in out.values() for r in rows]


def tuning_path_table(df: pd.DataFrame, spread: str = "std") -> Table | None:
    """Per method, the winner of each stage of a staged sweep, its value and what it beat."""
    staged = _staged(df)
    if not staged.any():
        return None
    rows: list[tuple[dict, dict]] = []
    groups = df[staged].groupby(df.loc[staged, "sweep"].map(_root), sort=False)
    for root, group in groups:
        rows += _rows(str(root), _record(group), spread)
    if not rows:
        return None
    display = pd.DataFrame([r for r, _ in rows])
    if groups.ngroups > 1:
        display.insert(0, "Sweep", [d["sweep"] for _, d in rows])
    spread_text = "mean [95 % t-interval]" if spread == "ci95" else "mean ± sample std"
    caption = (
        "How each method's setting was chosen: the winner of every stage of the staged sweep by that stage's "
        f"metric ({spread_text} over its seeds; the report's rule: best seed mean, ties to the lower std, "
        "then more seeds, then run order), how many of the stage's other settings it beat and the next best. "
        "A method with no eligible trial in a stage stops there (reason shown)."
    )
    data = pd.DataFrame([d for _, d in rows])
    for col in ("mean", "std", "ci_low", "ci_high", "next_mean"):
        if col in data:
            data[col] = [v if isinstance(v, int | float) and math.isfinite(v) else None for v in data[col]]
    return Table("tuning_path", "Tuning path", caption, display, data)
