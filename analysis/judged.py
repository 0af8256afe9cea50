"""Judged generation quality across a sweep (docs/judging.md): per judge, the length-controlled win rate
with a per-prompt difficulty estimated from the sweep's own trials, the judges table (each judge's
accuracy, its length weight, and how its method ranking compares with the oracle's or the other
judges', raw and length-controlled), and the columns Table 4 shows per judge.

Trials report the minimal LC win rate (``lc_win_rate@<judge>``: no difficulty term, one trial alone).
Here every finished trial judged on the same prompts against the same baseline (same ``task_key``)
contributes to a difficulty per prompt (``ablate.judging.winrate.prompt_difficulty``), and each trial's LC
win rate is fitted again with it: ``lc_win_rate_sweep@<judge>`` (AlpacaEval's ``length_controlled_noreg``
with the sweep's own difficulties)."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
from scipy import stats as st

from ablate.judging import winrate
from ablate.readout.judgments import judge_ids, judged, lc_column
from ablate.readout.loader import FINISHED


def add_sweep_lc(df: pd.DataFrame, cache: dict | None = None) -> tuple[pd.DataFrame, list[str]]:
    """``lc_win_rate_sweep@<judge>`` (and ``_se``) for every finished trial judged with others on the
    same prompts and baseline (see the module doc); notes on what could not be fitted. ``cache``: see
    ``ablate.readout.judgments.judged`` (``--watch`` keeps one across refreshes)."""
    notes: list[str] = []
    if df.empty or "task_key" not in df.columns:
        return df, notes
    done = df[df["status"] == FINISHED]
    columns: dict[str, pd.Series] = {}
    cache = {} if cache is None else cache
    for judge in judge_ids(df):
        lc_col, se_col = f"lc_win_rate_sweep@{judge}", f"lc_win_rate_sweep_se@{judge}"
        for _, group in done.groupby("task_key"):
            got = {i: judged(row, judge, cache) for i, row in group.iterrows()}
            got = {i: g for i, g in got.items() if g is not None}
            sizes = {len(g[0]) for g in got.values()}
            if len(got) < 2 or len(sizes) != 1:
                continue
            prefs = np.vstack([g[0] for g in got.values()])
            deltas = np.vstack([winrate.standardized_delta(g[1], g[2]) for g in got.values()])
            difficulty = winrate.prompt_difficulty(prefs, deltas)
            fits = _lc_fits(list(got.values()), difficulty)
            columns.setdefault(lc_col, pd.Series(np.nan, index=df.index)).loc[list(got)] = fits[:, 0]
            columns.setdefault(se_col, pd.Series(np.nan, index=df.index)).loc[list(got)] = fits[:, 1]
        if lc_col not in columns:
            notes.append(f"Judge {judge}: fewer than two trials share prompts and baseline, so its LC win rate "
                         "is the per-trial minimal model (no prompt difficulty).")  # fmt: skip
    if columns:
        df = pd.concat([df.drop(columns=[c for c in columns if c in df.columns]), pd.DataFrame(columns)], axis=1)
    return df, notes


PARALLEL_FROM = 400  # trials; below this, starting worker processes costs more than it saves


def _lc_fits(got: list[tuple], difficulty: np.ndarray) -> np.ndarray:
    """(LC win rate, its se) per trial, fitted with the sweep's difficulties: one cross-validated fit per
    trial (~7 ms at 128 prompts), spread over the machine's cores for a large sweep (processes, not
    threads: liblinear's random generator is global to a process)."""
    if len(got) < PARALLEL_FROM or (os.cpu_count() or 1) < 2:
        return np.array([_lc_fit(g, difficulty) for g in got]).reshape(-1, 2)
    from joblib import Parallel, delayed

    chunks = np.array_split(np.arange(len(got)), 4 * (os.cpu_count() or 1))
    parts = Parallel(n_jobs=os.cpu_count())(
        delayed(_lc_chunk)([got[i] for i in c], difficulty) for c in chunks if len(c)
    )
    return np.vstack(parts)


def _lc_chunk(got: list[tuple], difficulty: np.ndarray) -> np.ndarray:
    return np.array([_lc_fit(g, difficulty) for g in got]).reshape(-1, 2)


def _lc_fit(g: tuple, difficulty: np.ndarray) -> tuple[float, float]:
    lc = winrate.length_controlled(g[0], g[1], g[2], difficulty=difficulty)
    return lc.lc_win_rate, lc.se


def _tau(a: pd.Series, b: pd.Series) -> float:
    ok = a.notna() & b.notna()
    if ok.sum() < 2:
        return math.nan
    return float(st.kendalltau(a[ok], b[ok]).statistic)


def _mean_std(values: pd.Series) -> str:
    v = values.dropna().astype(float)
    if v.empty:
        return "–"
    return f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else "")


def judges_frame(best: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame | None:
    """A row per judge: its accuracy on held-out pairs, its length weight over the trials, and Kendall's τ
    between the method ranking it gives (raw and LC win rate, each method at its best setting) and the
    oracle's (raw oracle win rate). Without an oracle, a row per pair of judges with the τ between their
    rankings. None without judges (or with one judge and no oracle)."""
    judges = [j for j in judge_ids(df) if f"win_rate@{j}_mean" in best.columns]
    if not judges:
        return None
    done = df[df["status"] == FINISHED]
    truth = best.get("oracle_win_rate_mean")
    rows = []
    if truth is not None and truth.notna().sum() >= 2:
        for j in judges:
            lc = best.get(f"{lc_column(df, j)}_mean")
            rows.append({
                "Judge": j,
                "Accuracy vs oracle": _mean_std(done.get(f"judge_accuracy@{j}", pd.Series(dtype=float))),
                "Length weight φ": _mean_std(done.get(f"length_coef@{j}", pd.Series(dtype=float))),
                "τ raw WR vs oracle": _fmt(_tau(best[f"win_rate@{j}_mean"], truth)),
                "τ LC vs oracle": _fmt(_tau(lc, truth) if lc is not None else math.nan),
                "Methods": int(best[f"win_rate@{j}_mean"].notna().sum()),
            })  # fmt: skip
        return pd.DataFrame(rows)
    if len(judges) < 2:
        return None
    for a_i, a in enumerate(judges):
        for b in judges[a_i + 1 :]:
            la, lb = best.get(f"{lc_column(df, a)}_mean"), best.get(f"{lc_column(df, b)}_mean")
            rows.append({
                "Judges": f"{a} vs {b}",
                "τ raw WR": _fmt(_tau(best[f"win_rate@{a}_mean"], best[f"win_rate@{b}_mean"])),
                "τ LC": _fmt(_tau(la, lb) if la is not None and lb is not None else math.nan),
                "Length weight φ": f"{_mean_std(done.get(f'length_coef@{a}', pd.Series(dtype=float)))} / "
                                   f"{_mean_std(done.get(f'length_coef@{b}', pd.Series(dtype=float)))}",
                "Methods": int(best[f"win_rate@{a}_mean"].notna().sum()),
            })  # fmt: skip
    return pd.DataFrame(rows)


def _fmt(x: float) -> str:
    return "–" if not isinstance(x, float) or not math.isfinite(x) else f"{x:+.2f}"
