"""Each trial's judged answers, read back from its records: the judges whose win rates the trials
report (``judge_ids``), the length-controlled column to show for one (``lc_column``) and, per trial
and judge, the preferences with the answers' and the baseline's lengths (``judged``), from the trial's
``heldout.json`` and its ``judgments.json`` (a judge added later by ``ablate.sweep.rejudge``). The
verdicts' example-level evidence (``ablate.verdicts.examples``) and the report's judged-quality
section (``analysis.judged``) both read them here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ablate.judging import winrate
from ablate.readout.loader import load_heldout
from ablate.records import JUDGMENTS_FILE

WIN = re.compile(r"^win_rate@(.+)$")


def judge_ids(df: pd.DataFrame) -> list[str]:
    """The judges whose win rates the trials report, in the sweep file's order (then later judges)."""
    return [m.group(1) for c in df.columns if (m := WIN.match(str(c)))]


def lc_column(df: pd.DataFrame, judge: str) -> str:
    """The LC win rate column to show: the sweep variant (with difficulty) where there is one."""
    sweep = f"lc_win_rate_sweep@{judge}"
    return sweep if sweep in df.columns and df[sweep].notna().any() else f"lc_win_rate@{judge}"


def judged(row: pd.Series, judge: str, cache: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(preferences, answer lengths, baseline lengths; in characters) of one trial under one judge,
    from its ``heldout.json`` or its ``judgments.json``; None when it was not judged by it. ``cache``
    keeps what was read, as arrays (not the whole records: a sweep of 10,000 trials would hold GBs of
    text), keyed by the files' sizes and times, so a report that is refreshed reads only new trials."""
    cache = {} if cache is None else cache
    path, extra = row.get("heldout"), Path(str(row.get("trial_dir"))) / JUDGMENTS_FILE
    stamp = (_stamp(path), _stamp(extra))
    kept = cache.get(path)
    if kept is None or kept[0] != stamp:
        kept = cache[path] = (stamp, _read_judged(path, extra))
    got = kept[1]
    if got is None or judge not in got["prefs"]:
        return None
    return got["prefs"][judge], got["lengths"], got["baseline"]


def _stamp(path) -> tuple[int, int] | None:
    try:
        st_ = Path(path).stat() if path else None
    except OSError:
        return None
    return (st_.st_mtime_ns, st_.st_size) if st_ else None


def _read_judged(path, extra: Path) -> dict | None:
    record = load_heldout(path)
    gen = (record or {}).get("generations") or {}
    if not gen.get("text") or "baseline_chars" not in gen:
        return None
    scores = dict(gen.get("judges") or {})
    if extra.is_file():
        try:
            scores = {**json.loads(extra.read_text()), **scores}  # the trial's own judges first
        except (OSError, ValueError):
            pass
    prefs = {j: winrate.preferences(s["scores"], s["baseline_scores"]) for j, s in scores.items()
             if isinstance(s, dict) and s.get("scores")}  # fmt: skip
    return {"prefs": prefs, "lengths": np.array([len(t) for t in gen["text"]]),
            "baseline": np.asarray(gen["baseline_chars"])}  # fmt: skip
