"""Sweeps on disk → one pandas DataFrame with a row per trial (Ray-free).

Reads Ray Tune's trial layout directly: ``params.json`` (the trial config), ``result.json`` (one
JSON line per report; the last line with a ``status`` key is the trial's final record),
``error.txt`` (written by Ray when a trial raises), ``heldout.json`` (per-response held-out data
written by the trial) and the sweep's newest ``experiment_state-*.json`` (Ray's status of every
trial, including trials that never got a directory).

Every trial gets a row and a ``status``; none is dropped:

* ``finished``      the trial trained, evaluated and wrote its final record;
* ``diverged``      training stopped on a NaN/inf loss (final record with ``status: diverged: ...``);
* ``errored``       the trial raised (Ray's status ERROR, or ``error.txt`` without a final record);
* ``stopped early`` Ray terminated it before its final record (an early-stopping scheduler);
* ``unfinished``    running, paused or interrupted (no final record, not terminated);
* ``pending``       known to Ray's experiment state but never started (no directory);
* ``unreadable``    its ``params.json`` cannot be read; skipped by the analysis, listed in the report;
* ``duplicate``     finished, but a later finished trial of the sweep has the same setting and seed
                    (two drivers of one sweep, or a trial trained twice): one seed is one replicate, so
                    only the later one counts, and the report lists this one with the reason.

Settings are matched across sweeps by config, not by directory names: ``config_key`` hashes the
trial config without the seed and the bookkeeping that differs between runs of the same setting
(paths, sweep name, trial index, the sweep's metric, a staged sweep's stage)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import pandas as pd

from ablate import records
from ablate.records import (
    HELDOUT_FILE,
    JUDGMENTS_FILE,
    NOT_SETTING,
    RAY_KEYS,
    STAGES_FILE,
    TRIAL_KEY,
    config_key,
    json_default,
)

FINISHED = "finished"

HISTORY_KEYS = ("step", "train_loss", "train_reward_accuracy", "lr")


STAGES_RECORD = STAGES_FILE
RAY_STATE = "experiment_state-*.json"  # Ray Tune's internal state: read by experiment_state() alone


def stage_names(sweep_dir: Path) -> list[str] | None:
    """The stages of a staged sweep directory, in order (from its ``stages.json``); None for a plain sweep."""
    try:
        stages = json.loads((sweep_dir / STAGES_RECORD).read_text())["stages"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [str(s) for s in stages] if isinstance(stages, list) else None


def is_sweep_dir(path: Path) -> bool:
    """A folder with at least one trial directory (or Ray's experiment state), or a staged sweep."""
    if not path.is_dir():
        return False
    if stage_names(path) is not None:
        return True
    return bool(experiment_state(path)) or any(
        (d / records.PARAMS_FILE).is_file() for d in path.iterdir() if d.is_dir()
    )


def find_sweeps(paths: list[str | Path]) -> list[Path]:
    """Sweep directories among ``paths`` (each a sweep directory or a folder of them)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if is_sweep_dir(p):
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(d for d in p.iterdir() if is_sweep_dir(d)))
    return list(dict.fromkeys(p.resolve() for p in found))


def read_json_lines(path: Path) -> tuple[list[dict], int]:
    """JSON lines of ``result.json`` and the number of torn or garbled lines skipped (a kill mid-write)."""
    rows, bad = [], 0
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
    return rows, bad


def experiment_state(sweep_dir: Path) -> dict[str, dict]:
    """Ray's view of each trial from the newest ``experiment_state-*.json``: directory name →
    ``{"status", "num_failures", "config"}``. Empty if there is none or it cannot be parsed.

    The one reader of Ray Tune's internal experiment state (tests/test_ray_state.py pins what it reads
    against the files Ray writes): ``trial_data``, a list of ``[trial JSON, runtime JSON]``; of the
    trial, ``relative_logdir`` (else ``trial_id``), ``status`` and ``config[TRIAL_KEY]``; of the
    runtime, ``num_failures``."""
    # Newest by the timestamp in the name, as Ray picks it: a resumed sweep's storage sync rewrites
    # the older files too, so their modification times say nothing.
    files = sorted(sweep_dir.glob(RAY_STATE), key=lambda p: p.name)
    if not files:
        return {}
    try:
        trials = json.loads(files[-1].read_text())["trial_data"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    out: dict[str, dict] = {}
    for entry in trials:
        try:
            info = json.loads(entry[0])
            runtime = json.loads(entry[1]) if len(entry) > 1 else {}
        except (ValueError, TypeError, IndexError):
            continue
        config = info.get("config")
        cfg = config.get(TRIAL_KEY) if isinstance(config, dict) else None
        name = info.get("relative_logdir") or info.get("trial_id")
        if name:
            out[str(name)] = {
                "status": info.get("status"),
                "num_failures": runtime.get("num_failures", 0) if isinstance(runtime, dict) else 0,
                "config": cfg if isinstance(cfg, dict) else None,
            }
    return out


# Training settings that change a trial's numbers but not its work (the passes it runs and their sizes).
VALUE_ONLY_TRAINING = {"learning_rate", "warmup_ratio", "weight_decay", "max_grad_norm"}


def work_key(cfg: dict) -> str:
    """Short hash of what decides a trial's cost: the config without the seed, the label, the
    objective's hyperparameters and the training settings that change only values. Trials with one
    work key do the same work, so their costs should not move with the order they ran in
    (``ablate.readout.drift``)."""
    shown = {k: v for k, v in cfg.items() if k not in NOT_SETTING | {"label", "hparams"}}
    shown["training"] = {k: v for k, v in (cfg.get("training") or {}).items() if k not in VALUE_ONLY_TRAINING}
    text = json.dumps(shown, sort_keys=True, default=json_default)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


TASK_KEYS = ("data", "model", "evaluation")


def task_key(cfg: dict) -> str:
    """Short hash of what methods are compared on: data, model, evaluation and the SFT start point.
    The best settings of a report's methods should share one."""
    shown = {k: cfg.get(k) for k in TASK_KEYS}
    start = cfg.get("start")
    if isinstance(start, dict) and start.get("path"):
        shown["start_id"] = Path(str(start["path"])).name
    text = json.dumps(shown, sort_keys=True, default=json_default)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _error_line(text: str) -> str:
    """The exception line of a Ray ``error.txt`` (its last non-empty line)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else "error.txt is empty"


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _config_columns(cfg: dict) -> dict:
    training = cfg.get("training") or {}
    task = ((cfg.get("data") or {}).get("task")) or {}
    row = {
        "label": str(cfg["label"]),
        "method": str(cfg["method"]),
        "setting": str(cfg.get("setting") or "default"),
        "seed": cfg.get("seed", 0),
        "reference": cfg.get("reference"),
        "config_key": config_key(cfg),
        "task_key": task_key(cfg),
        "work_key": work_key(cfg),
        "sweep_metric": cfg.get("metric"),
        "sweep_mode": cfg.get("mode"),
        "length_bias": task.get("length_bias"),
        "gpus": _gpus(cfg.get("resources") or {}),
    }
    row.update({f"hp_{k}": v for k, v in (cfg.get("hparams") or {}).items()})
    row.update({f"tr_{k}": v for k, v in training.items() if not isinstance(v, dict | list)})
    lora = cfg.get("lora") or {}  # a LoRA adapter's fields; none for full fine-tuning
    row.update({f"lora_{k}": v for k, v in lora.items() if not isinstance(v, dict | list)})
    return row


def _gpus(res: dict) -> float:
    """GPUs one trial holds: its own, or a DeepSpeed trial's workers' (for the cost of more seeds)."""
    return max(float(res.get("gpus") or 0), float(res.get("gpus_per_worker") or 0) * int(res.get("workers") or 1))


def trial_status(final: dict | None, ray_status: str | None, error_file: Path) -> tuple[str, str]:
    """(status, message) from the final record, Ray's status and ``error.txt`` (see module doc)."""
    error = _error_line(error_file.read_text(errors="replace")) if error_file.is_file() else ""
    final_status = str(final.get("status")) if final else None
    if final_status == FINISHED and ray_status != "ERROR":
        return FINISHED, ""
    if final_status and final_status.startswith("diverged"):
        return "diverged", final_status
    if ray_status == "ERROR" or error:
        return "errored", error or "Ray marked the trial ERROR (no error.txt found)"
    if final_status is not None:  # an unknown final status: show it rather than guess
        return final_status, final_status
    if ray_status == "TERMINATED":
        return "stopped early", "stopped before its final record (early-stopping scheduler)"
    return "unfinished", f"no final record (Ray status: {ray_status or 'unknown'})"


def load_trial(trial_dir: Path, sweep: str, ray_info: dict | None = None) -> dict:
    """One row: the trial's config columns, status, final metrics, history and file paths."""
    ray_info = ray_info or {}
    row: dict = {"sweep": sweep, "trial": trial_dir.name, "trial_dir": str(trial_dir)}
    try:
        cfg = records.read_trial_config(trial_dir)
        row.update(_config_columns(cfg))
    except (OSError, ValueError, KeyError, TypeError) as e:
        state = ray_info.get("status")
        if not (trial_dir / records.PARAMS_FILE).exists() and ray_info.get("config") and state != "ERROR":
            # Ray made the directory but the trial has not written anything yet.
            row.update(_config_columns(ray_info["config"]))
            waiting = "pending" if state in ("PENDING", None) else "unfinished"
            return {**row, "status": waiting, "error": f"nothing written yet (Ray status: {state})"}
        return {**row, "status": "unreadable", "error": f"params.json: {type(e).__name__}: {e}"}
    results, bad_lines = read_json_lines(trial_dir / records.RESULT_FILE)
    final = next((r for r in reversed(results) if "status" in r), None)
    status, message = trial_status(final, ray_info.get("status"), trial_dir / "error.txt")
    if bad_lines and final is None and status != "errored":
        status, message = "unreadable", f"result.json: {bad_lines} unreadable line(s) and no final record"
    row.update(status=status, error=message, ray_status=ray_info.get("status"))
    row["failures"] = _failures(trial_dir / "error.txt", ray_info)
    row["history"] = [
        {k: r[k] for k in HISTORY_KEYS if k in r} for r in results if "step" in r and "status" not in r
    ]
    row["last_step"] = row["history"][-1]["step"] if row["history"] else None
    if status in ("stopped early", "unfinished") and row["last_step"] is not None:
        row["error"] = f"{message}; last reported step {row['last_step']}"
    for k, v in (final or {}).items():
        if k not in RAY_KEYS and k != "status" and _number(v):
            row[k] = float(v)
    if final is not None and _number(final.get("timestamp")):
        row["finished_at"] = float(final["timestamp"])  # Ray's time of the final report
    if final is not None and isinstance(final.get("record_id"), str):
        row["record_id"] = final["record_id"]  # the same id in two folders: one record, replayed
    heldout = trial_dir / HELDOUT_FILE
    row["heldout"] = str(heldout) if heldout.is_file() else None
    row.update(judgment_metrics(trial_dir / JUDGMENTS_FILE))
    return row


def judgment_metrics(path: Path) -> dict[str, float]:
    """The metrics of judges added after the trial (``python -m ablate.judge``: ``judgments.json``)."""
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return {k: float(v) for j in record.values() if isinstance(j, dict)
            for k, v in (j.get("metrics") or {}).items() if _number(v)}  # fmt: skip


def _failures(error_file: Path, ray_info: dict) -> int:
    n = int(ray_info.get("num_failures") or 0)
    if error_file.is_file():
        n = max(n, len(re.findall(r"^Failure #", error_file.read_text(errors="replace"), re.M)) or 1)
    return n


def load_sweep(sweep_dir: Path, cache: dict | None = None) -> list[dict]:
    """Rows of every trial of one sweep: its trial directories, and the trials Ray knows of that
    have no directory (never started). A staged sweep's rows are those of its stages, each with
    ``stage``, ``stage_index`` and ``sweep`` = ``<sweep>/<stage>``. ``cache`` (``--watch``): rows kept
    from the last call, reused for trials whose files have not changed since."""
    stages = stage_names(sweep_dir)
    if stages is not None:
        return [
            {**row, "sweep": f"{sweep_dir.name}/{stage}", "stage": stage, "stage_index": i}
            for i, stage in enumerate(stages)
            if is_sweep_dir(sweep_dir / stage)
            for row in load_sweep(sweep_dir / stage, cache)
        ]
    state = experiment_state(sweep_dir)
    rows: list[dict] = []
    seen = set()
    for d in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        if (d / records.PARAMS_FILE).exists() or d.name in state:
            rows.append(_cached_trial(d, sweep_dir.name, state.get(d.name), cache))
            seen.add(d.name)
    for name, info in state.items():
        if name in seen:
            continue
        row = {"sweep": sweep_dir.name, "trial": name, "trial_dir": str(sweep_dir / name)}
        if info.get("config"):
            try:
                row.update(_config_columns(info["config"]))
            except (KeyError, TypeError):
                pass
        row.update(status="pending", error=f"never started (Ray status: {info.get('status')})")
        rows.append(row)
    return mark_duplicates(rows)


def mark_duplicates(rows: list[dict]) -> list[dict]:
    """Of finished trials of one sweep with the same setting and seed, keep the one that finished last and
    mark the others ``duplicate``: the same seed run twice is not two replicates, and counting it twice
    would narrow every interval for nothing."""
    latest: dict[tuple, dict] = {}
    for row in rows:
        if row.get("status") == FINISHED:
            key = (row.get("config_key"), row.get("seed"))
            if key not in latest or row.get("finished_at", 0.0) >= latest[key].get("finished_at", 0.0):
                latest[key] = row
    for row in rows:
        kept = latest.get((row.get("config_key"), row.get("seed")))
        if row.get("status") == FINISHED and kept is not None and kept is not row:
            row["status"] = "duplicate"
            if row.get("record_id") is not None and row.get("record_id") == kept.get("record_id"):
                row["error"] = (f"the same final record as {kept['trial']}, which replayed it after a driver "
                                "restart (one trial, counted once)")  # fmt: skip
            else:
                row["error"] = (f"same setting and seed as {kept['trial']}, which finished later and is the one "
                                "counted (one seed is one replicate)")  # fmt: skip
    return rows


TRIAL_FILES = (records.PARAMS_FILE, records.RESULT_FILE, records.ERROR_FILE, HELDOUT_FILE, JUDGMENTS_FILE)


def _cached_trial(trial_dir: Path, sweep: str, ray_info: dict | None, cache: dict | None) -> dict:
    """``load_trial``, or its row from ``cache`` when the trial's files and Ray status are as they were."""
    if cache is None:
        return load_trial(trial_dir, sweep, ray_info)
    stamp = [sweep, (ray_info or {}).get("status"), (ray_info or {}).get("num_failures")]
    for name in TRIAL_FILES:
        try:
            st = (trial_dir / name).stat()
            stamp.append((st.st_mtime_ns, st.st_size))
        except OSError:
            stamp.append(None)
    kept = cache.get(str(trial_dir))
    if kept is None or kept[0] != stamp:  # one entry per trial: a running trial's replaces its last
        kept = cache[str(trial_dir)] = (stamp, load_trial(trial_dir, sweep, ray_info))
    return dict(kept[1])


def duplicates_note(df: pd.DataFrame) -> str | None:
    """What the report says when trials were marked ``duplicate`` (``mark_duplicates``), or None."""
    dups = df[df["status"] == "duplicate"] if "status" in df.columns else df.iloc[:0]
    if "error" in dups.columns:  # an earlier attempt's record replayed by a later one is no second run
        dups = dups[~dups["error"].astype(str).str.startswith("the same final record")]
    if dups.empty:
        return None
    shown = ", ".join(dups["trial"][:5]) + (", ..." if len(dups) > 5 else "")
    return (f"{len(dups)} finished trial(s) repeat the setting and seed of a later one ({shown}); each "
            "(setting, seed) is counted once, the later trial (the others are listed under 'Trials that did "
            "not finish').")  # fmt: skip


def disambiguate_labels(df: pd.DataFrame) -> pd.DataFrame:
    """One label per compared method: a label used for several objectives gets ``[method]``, and one
    used with both reference modes gets ``(online ref.)`` / ``(precomputed ref.)``."""
    if df.empty or "label" not in df.columns:
        return df
    df = df.copy()
    known = df["label"].notna()
    for label, group in df[known].groupby("label"):
        idx = group.index
        if group["method"].nunique() > 1:
            df.loc[idx, "label"] = [f"{label} [{m}]" for m in group["method"]]
    for label, group in df[known].groupby("label"):
        refs = group["reference"].dropna().unique()
        if len(refs) > 1:
            df.loc[group.index, "label"] = [
                f"{label} ({r} ref.)" if isinstance(r, str) else label for r in group["reference"]
            ]
    return df


def load_trials(sweep_dirs: list[Path], cache: dict | None = None) -> pd.DataFrame:
    """All trials of ``sweep_dirs`` as one DataFrame (a row per trial, see the module doc); ``cache``:
    see ``load_sweep``."""
    rows = [row for sweep in sweep_dirs for row in load_sweep(Path(sweep), cache)]
    df = pd.DataFrame(rows)
    for col in ("label", "method", "setting", "status", "error", "config_key", "heldout", "reference"):
        if col not in df.columns:
            df[col] = None
    return disambiguate_labels(df)


def load_heldout(path: str | None) -> dict | None:
    """A trial's ``heldout.json``, or None when it is missing or unreadable."""
    if not path:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pairs"), dict) else None


def finite(x) -> bool:
    return _number(x) and math.isfinite(x)
