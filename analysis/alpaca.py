"""The AlpacaEval round trip (docs/judging.md).

``export``: per method at its best setting (its lowest seed with stored generations),
``alpaca_eval/<method>/model_outputs.json`` in AlpacaEval's format (``instruction``, ``output``,
``generator``, ``dataset``), and the start point's generations as ``alpaca_eval/reference_outputs.json``,
so ``alpaca_eval --model_outputs ... --reference_outputs ...`` runs on them unchanged.

``read_judgments``: AlpacaEval's ``annotations.json`` back, as one more judge
(``alpaca_eval:<annotator>``): per generator (= method label), the raw win rate (preference 2 = the
model wins, 1 = the reference, 1.5 or 0 a draw) and the LC win rate (with a per-instruction difficulty
estimated across the file's generators when there are two or more), assigned to the exported trial.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ablate.judging import winrate
from ablate.judging.generations import find_baseline
from ablate.readout.loader import FINISHED, load_heldout
from analysis.provenance import export_record

REFERENCE_GENERATOR = "start point (SFT)"


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower() or "method"


def exported_trials(best: pd.DataFrame, df: pd.DataFrame) -> dict[str, pd.Series]:
    """Per method label: the trial whose generations are exported (best setting, lowest seed with them)."""
    done = df[df["status"] == FINISHED]
    out = {}
    for _, b in best.iterrows():
        rows = done[done["config_key"] == b["config_key"]].sort_values("seed")
        for _, row in rows.iterrows():
            record = load_heldout(row.get("heldout"))
            if record and (record.get("generations") or {}).get("text"):
                out[b["label"]] = row
                break
    return out


def export(best: pd.DataFrame, df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write the model outputs of each method and the reference outputs; returns the files written."""
    folder = out_dir / "alpaca_eval"
    written: list[Path] = []
    reference = None
    for label, row in exported_trials(best, df).items():
        gen = load_heldout(row["heldout"])["generations"]
        outputs = [{"instruction": p, "output": t, "generator": label, "dataset": str(row["sweep"])}
                   for p, t in zip(gen["prompt"], gen["text"], strict=True)]  # fmt: skip
        path = folder / slug(label) / "model_outputs.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(outputs, indent=1))
        written.append(path)
        # What made these outputs, for `python -m analysis.diff` (analysis.provenance).
        (path.parent / "provenance.json").write_text(json.dumps(export_record(Path(row["trial_dir"])), indent=1))
        if reference is None:
            base = find_baseline(Path(row["trial_dir"]).parent, gen)
            if base is not None:
                reference = [{"instruction": p, "output": t, "generator": REFERENCE_GENERATOR,
                              "dataset": str(row["sweep"])} for p, t in zip(base.prompts, base.texts, strict=True)]  # fmt: skip
    if reference is not None:
        path = folder / "reference_outputs.json"
        path.write_text(json.dumps(reference, indent=1))
        written.append(path)
    return written


def _preference(value) -> float:
    """AlpacaEval's preference (1: reference, 2: model, 1.5 or 0: draw; floats allowed) as P(model wins)."""
    v = float(value)
    return 0.5 if v == 0 else min(max(v - 1.0, 0.0), 1.0)


def read_judgments(path: Path) -> dict[str, dict[str, float]]:
    """Per generator: ``win_rate@alpaca_eval:<annotator>``, ``lc_win_rate@...`` and its ``_se``."""
    rows = pd.DataFrame(json.loads(Path(path).read_text()))
    rows = rows[rows["preference"].notna()]
    annotator = str(rows["annotator"].iloc[0]) if "annotator" in rows and len(rows) else "annotations"
    judge = f"alpaca_eval:{annotator}"
    per: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]] = {}
    for gen, g in rows.groupby("generator_2", sort=False):
        g = g.sort_values("instruction")
        per[str(gen)] = (np.array([_preference(v) for v in g["preference"]]), g["output_2"].str.len().to_numpy(),
                         g["output_1"].str.len().to_numpy(), g["instruction"].tolist())  # fmt: skip
    difficulty = None
    same = len({tuple(v[3]) for v in per.values()}) == 1
    if len(per) >= 2 and same:
        prefs = np.vstack([v[0] for v in per.values()])
        deltas = np.vstack([winrate.standardized_delta(v[1], v[2]) for v in per.values()])
        difficulty = winrate.prompt_difficulty(prefs, deltas)
    out = {}
    for gen, (p, ours, base, _) in per.items():
        lc = winrate.length_controlled(p, ours, base, difficulty=difficulty)
        out[gen] = {f"win_rate@{judge}": lc.win_rate, f"lc_win_rate@{judge}": lc.lc_win_rate,
                    f"lc_win_rate_se@{judge}": lc.se, f"length_coef@{judge}": lc.length_coef}  # fmt: skip
    return out


def add_judgments(df: pd.DataFrame, best: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, list[str]]:
    """``df`` with an AlpacaEval annotations file's metrics on the exported trial of each generator."""
    df = df.copy()
    notes = []
    trials = exported_trials(best, df)
    for gen, metrics in read_judgments(path).items():
        row = trials.get(gen)
        if row is None:
            notes.append(f"{path}: generator {gen!r} is not a method of these sweeps; its judgments are not shown.")
            continue
        idx = df.index[df["trial_dir"] == row["trial_dir"]]
        for k, v in metrics.items():
            df.loc[idx, k] = v
    return df, notes
