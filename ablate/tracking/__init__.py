"""Experiment trackers: what a trial's run is called, its parameters and tags, which reported values
are metrics and at which step, and the sweep's tracking record. Ray-free.

* ``ablate.tracking.callbacks``: Ray Tune's MLflow, W&B and TensorBoard logger callbacks, set up for a
  sweep (one run per trial, a parent run / group per sweep, resume without duplicate runs);
* ``ablate.tracking.preflight``: checks before launch (packages installed, tracking server reachable);
* ``ablate.tracking.report``: ``analysis.report --log-to-tracking``, the report's files as artifacts.

Secrets never pass through here: trackers read their credentials from the environment themselves
(``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN``, ``WANDB_API_KEY``), the sweep file cannot hold
them (``ablate.spec.tracking.MLflowTracking``), and the record written next to the results holds only
where the runs are.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate import records

RECORD_FILE = records.TRACKING_FILE  # in the sweep's storage directory: where its runs are, for the report


@dataclass(frozen=True)
class SweepInfo:
    """What every tracker of one sweep launch needs; pickled with Ray Tune's experiment (so a resumed
    sweep logs to the same runs) and therefore free of secrets."""

    name: str
    launch: str  # a fresh id per launch (not per resume): tags the runs of this launch of the sweep
    experiment_path: str  # <storage>/<name>, a local path or a URI
    sweep_file: str | None  # the sweep file's path, for the messages
    sweep_text: str | None  # its text as launched (a resumed sweep runs as it was launched)
    files_dir: str  # where TensorBoard and W&B write their local files

    @property
    def local(self) -> bool:
        return "://" not in self.experiment_path


def run_name(cfg: dict) -> str:
    """``<label> <setting> seed=<s>``: the trial's run, as the report names its setting."""
    return f"{cfg['label']} {cfg['setting']} seed={cfg['seed']}"


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``; an empty mapping stays a value (``{}``)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def params(cfg: dict) -> dict[str, Any]:
    """The trial config, flattened: the values of the trial's ``params.json``."""
    return flatten(cfg)


def param_text(value: Any) -> str:
    """A parameter as text, written as in ``params.json`` (JSON), strings as they are."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def tags(cfg: dict, trial_id: str, launch: str) -> dict[str, str]:
    """Sweep, method, label and the setting's hash (``ablate.records.config_key``: the same for every
    seed of a setting and across sweeps), and the ids that let a resumed trial find its run."""
    return {
        "sweep": str(cfg["sweep"]),
        "method": str(cfg["method"]),
        "label": str(cfg["label"]),
        "setting": str(cfg["setting"]),
        "seed": str(cfg["seed"]),
        "config_hash": records.config_key(cfg),
        "ablate.trial_id": trial_id,
        "ablate.launch": launch,
    }


def metrics(result: dict) -> dict[str, float]:
    """The numbers a trial reported (training rows, held-out rows, the final record), without what Ray
    Tune adds to every result and without the step (the x-axis)."""
    return {
        k: float(v)
        for k, v in result.items()
        if k not in records.RAY_KEYS and k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    }


def step_of(result: dict, previous: int = 0) -> int:
    """The training step a result belongs to: ``step`` of a training row, ``steps`` of the final record."""
    for key in ("step", "steps"):
        if isinstance(result.get(key), int | float):
            return int(result[key])
    return previous


def files_dir(experiment_path: str, cache_dir: str, name: str) -> str:
    """Local directory of TensorBoard's and W&B's files: the sweep's own directory when storage is
    local, else (object storage) ``<cache_dir>/tracking/<name>``."""
    if "://" not in experiment_path:
        return experiment_path
    return str(Path(cache_dir).expanduser().resolve() / "tracking" / name)


# --- the sweep's tracking record: where its runs are (no secrets) ------------------------------


def write_record(info: SweepInfo, section: str, entry: dict) -> None:
    """Add ``section`` (mlflow, wandb, tensorboard) to ``<experiment>/tracking.json``."""
    record = read_record(info.experiment_path) or {"sweep": info.name, "launch": info.launch}
    record[section] = entry
    records.write_json(f"{info.experiment_path}/{RECORD_FILE}", record, indent=2)


def read_record(experiment_path: str | Path) -> dict | None:
    record = records.read_json(f"{experiment_path}/{RECORD_FILE}")
    return record if isinstance(record, dict) else None


def describe(tracking) -> str:
    """One line for ``--dry-run``: where the sweep's runs will be logged."""
    parts = []
    if tracking.mlflow is not None:
        uri = tracking.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "MLflow's local default"
        parts.append(f"MLflow at {uri}")
    if tracking.wandb is not None:
        parts.append(f"W&B ({tracking.wandb.mode})")
    if tracking.tensorboard:
        parts.append("TensorBoard (<storage>/<name>/tensorboard/)")
    return "Tracking: " + (", ".join(parts) if parts else "none")


__all__ = ["RECORD_FILE", "SweepInfo", "describe", "files_dir", "flatten", "metrics", "param_text",
           "params", "read_record", "run_name", "step_of", "tags", "write_record"]  # fmt: skip
