"""The on-disk contract: the names of the files a sweep and its trials write, the key of the trial
config in Ray's config, and the one way ablate reads and writes a whole file, on a local disk or
behind a storage URI (through pyarrow's file systems, as Ray Tune writes there).

Every write is atomic (the invariant in docs/architecture.md): locally a temporary file beside the
target, flushed to disk, then ``os.replace`` over it (atomic on POSIX within one file system); behind
a URI a temporary name of its own, then moved over the target. A reader, or a kill at any moment,
sees the old file or the new one, never half of one.

``analysis`` reads a sweep with these names; ablate knows nothing of the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

# --- names -------------------------------------------------------------------------------------

TRIAL_KEY = "trial"  # Ray's config of a trial: {TRIAL_KEY: the trial config}, also in its params.json

# A trial's folder: Ray Tune writes the first three; the trial itself the others.
PARAMS_FILE = "params.json"  # Ray's config of the trial ({TRIAL_KEY: ...})
RESULT_FILE = "result.json"  # one JSON line per reported result
ERROR_FILE = "error.txt"  # written by Ray when a trial raises
FINAL_FILE = "final.json"  # the trial's final metrics, written before it reports them
HELDOUT_FILE = "heldout.json"  # per-response held-out data (generations), for figures and re-judging
JUDGMENTS_FILE = "judgments.json"  # judges added after the trial (python -m ablate.judge)
PROVENANCE_FILE = "provenance.json"  # what the trial ran on (ablate.provenance)

# A sweep's folder (<storage>/<name>/), beside Ray Tune's own files.
STAGES_FILE = "stages.json"  # a staged sweep: one Ray Tune experiment per stage below it
ROUNDS_FILE = "rounds.json"  # an adaptive-seeds sweep: one Ray Tune experiment per round below it
RUN_ORDER_FILE = "run_order.json"  # the run order of the sweep's trials
TRACKING_FILE = "tracking.json"  # where the sweep's tracker runs are
MARKER_FILE = ".ablate-sweep.json"  # ablate made this folder (--overwrite may delete it)
LEASE_FILE = ".ablate-lease.json"  # the driver running the sweep
BASELINES_DIR = "baselines"  # the start point's generations, stored once per sweep

# Keys Ray Tune adds to every reported result: not metrics of ours.
RAY_KEYS = frozenset({
    "timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "date", "time_this_iter_s",
    "time_total_s", "pid", "hostname", "node_ip", "config", "time_since_restore", "iterations_since_restore",
    "should_checkpoint",
})  # fmt: skip


# Trial-config keys that do not change what a trial computes, or that differ between the seeds
# of one setting; everything else (method, hparams, training, data, model, evaluation, resources,
# reference, label, the start point's id) defines the setting.
NOT_SETTING = {"seed", "index", "sweep", "cache_dir", "start", "metric", "mode", "setting", "data_split",
               "point", "stage", "replay", "provenance", "claims"}  # fmt: skip


def json_default(value):
    return repr(value)


def config_key(cfg: dict) -> str:
    """Short hash of what defines a setting (see ``NOT_SETTING``); equal across sweeps and seeds."""
    shown = {k: v for k, v in cfg.items() if k not in NOT_SETTING}
    start = cfg.get("start")
    if isinstance(start, dict) and start.get("path"):
        shown["start_id"] = Path(str(start["path"])).name  # sft-<hash of the SFT config>
    text = json.dumps(shown, sort_keys=True, default=json_default)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def trial_config(params: dict) -> dict:
    """The trial config in Ray's config of a trial (or its ``params.json``)."""
    return params[TRIAL_KEY]


def read_trial_config(trial_dir: str | Path) -> dict:
    """The trial config a trial folder's ``params.json`` holds (raises when it is missing or broken)."""
    data = read_json(f"{trial_dir}/{PARAMS_FILE}")
    if data is None:
        raise FileNotFoundError(f"{trial_dir}/{PARAMS_FILE}: missing or unreadable")
    return trial_config(data)


# --- reading and writing -----------------------------------------------------------------------


def is_uri(path: str | Path) -> bool:
    return "://" in str(path)


def filesystem(path: str | Path):
    """The pyarrow file system and path of ``path``: a URI through pyarrow (as Ray Tune), else the local disk."""
    import pyarrow.fs

    if is_uri(path):
        return pyarrow.fs.FileSystem.from_uri(str(path))
    return pyarrow.fs.LocalFileSystem(), str(Path(path).expanduser().resolve())


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Run ``write`` on a temporary file beside the local ``path``, flush it to disk, rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes, fs=None) -> None:
    """Write a whole file at once: a local path, a URI, or (with ``fs``) a path on a pyarrow file system."""
    if fs is None and not is_uri(path):
        atomic_write(path, lambda f: f.write(data))
        return
    if fs is None:
        fs, path = filesystem(path)
    folder, name = str(path).rstrip("/").rsplit("/", 1)
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        fs.move(tmp, f"{folder}/{name}")
    except BaseException:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise


def write_json(path: str | Path, obj: Any, indent: int | None = None, fs=None) -> None:
    """``write_bytes`` of ``obj`` as JSON (compact unless ``indent``)."""
    text = json.dumps(obj, indent=indent, default=str) if indent else json.dumps(obj, separators=(",", ":"), default=str)
    write_bytes(path, text.encode(), fs=fs)


def read_bytes(path: str | Path, fs=None) -> bytes | None:
    """A whole file (local path, URI, or a path on ``fs``); None when it does not exist."""
    if fs is None and not is_uri(path):
        try:
            return Path(path).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
    import pyarrow.fs

    if fs is None:
        fs, path = filesystem(path)
    if fs.get_file_info(str(path)).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(str(path)) as f:
        return f.readall()


def read_json(path: str | Path, fs=None) -> Any:
    """A JSON file (local path, URI, or a path on ``fs``); None when it is absent or unreadable."""
    try:
        data = read_bytes(path, fs=fs)
        return None if data is None else json.loads(data)
    except (OSError, ValueError):
        return None


def finished_trials(experiment_path: str) -> list[tuple[str, dict]]:
    """(trial folder, trial config) of every trial of a Ray Tune experiment (a local path or a URI)
    whose final record (``final.json``) says it finished, in folder order."""
    import pyarrow.fs

    fs, root = filesystem(experiment_path)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(root))
    except OSError:  # no such folder (yet)
        return []
    out = []
    for info in sorted(infos, key=lambda i: i.base_name):
        if info.type != pyarrow.fs.FileType.Directory:
            continue
        final = read_json(f"{info.path}/{FINAL_FILE}", fs=fs)
        params = read_json(f"{info.path}/{PARAMS_FILE}", fs=fs)
        if isinstance(final, dict) and final.get("status") == "finished" and isinstance(params, dict):
            cfg = params.get(TRIAL_KEY)
            if isinstance(cfg, dict):
                out.append((f"{str(experiment_path).rstrip('/')}/{info.base_name}", cfg))
    return out
