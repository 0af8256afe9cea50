"""Finished sweeps on disk → one pandas DataFrame with a row per trial.

Reads Ray Tune's trial layout directly (``params.json``, ``result.json``, ``error.txt``) so the
analysis needs no Ray. A trial whose files cannot be read is kept, with status ``unreadable``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

METRICS = [
    "reward_accuracy", "reward_margin", "chosen_avg_logp", "rejected_avg_logp", "length_logp_spearman",
    "reward_likelihood_agreement", "gen_length", "oracle_win_rate", "oracle_reward", "runtime_s",
    "peak_memory_mb", "tokens_per_s", "train_loss",
]  # fmt: skip


def is_sweep_dir(path: Path) -> bool:
    return path.is_dir() and any((d / "params.json").is_file() for d in path.iterdir() if d.is_dir())


def find_sweeps(paths: list[str | Path]) -> list[Path]:
    """Sweep directories among ``paths`` (each a sweep directory or a folder of them)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if is_sweep_dir(p):
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(d for d in p.iterdir() if is_sweep_dir(d)))
    return found


def _read_results(path: Path) -> list[dict]:
    """JSON lines of ``result.json``; a torn last line (a kill mid-write) is skipped."""
    rows = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def load_trial(trial_dir: Path, sweep: str) -> dict:
    row: dict = {"sweep": sweep, "trial_dir": str(trial_dir), "trial": trial_dir.name}
    try:
        cfg = json.loads((trial_dir / "params.json").read_text())["trial"]
    except (OSError, json.JSONDecodeError, KeyError) as e:
        return {**row, "status": "unreadable", "error": f"params.json: {e}"}
    row.update(
        label=cfg["label"], method=cfg["method"], setting=cfg["setting"], seed=cfg["seed"],
        reference=cfg.get("reference"), task_version=cfg["data"]["task"]["version"],
        length_bias=cfg["data"]["task"]["length_bias"], learning_rate=cfg["training"]["learning_rate"],
    )  # fmt: skip
    row.update({f"hp_{k}": v for k, v in cfg["hparams"].items()})
    results = _read_results(trial_dir / "result.json")
    final = next((r for r in reversed(results) if "status" in r), None)
    row["history"] = [
        {k: r[k] for k in ("step", "train_loss", "train_reward_accuracy", "reward_accuracy") if k in r}
        for r in results
        if "step" in r and "status" not in r
    ]
    error_file = trial_dir / "error.txt"
    if error_file.is_file():
        row["status"] = "errored"
        row["error"] = error_file.read_text(errors="replace").strip().splitlines()[-1][:500]
    elif final is None and results and results[-1].get("done"):
        # Stopped by the early-stopping scheduler (Tune marks the deciding result done); keep the
        # metrics it had reported by then.
        row["status"] = "stopped"
        row["error"] = f"stopped early by the scheduler at step {results[-1].get('step', '?')}"
        final = {k: v for k, v in results[-1].items() if k in METRICS}
    elif final is None:
        row["status"] = "unfinished"
    else:
        row["status"] = "finished" if final["status"] == "finished" else "diverged"
        if row["status"] == "diverged":
            row["error"] = final["status"]
    for k in METRICS:
        row[k] = (final or {}).get(k, float("nan"))
    return row


def load_trials(sweep_dirs: list[Path]) -> pd.DataFrame:
    rows = []
    for sweep in sweep_dirs:
        for d in sorted(sweep.iterdir()):
            if d.is_dir() and (d / "params.json").exists():
                rows.append(load_trial(d, sweep.name))
    return pd.DataFrame(rows)
