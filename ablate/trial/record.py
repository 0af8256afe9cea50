"""A trial's own folder in the sweep's storage, from inside the trial: its small result files written
and read straight through the storage filesystem (a local path or a URI), and the replay of a finished
record instead of training again (an earlier stage's identical trial, or an earlier attempt at this one)."""

from __future__ import annotations

import json

from ray import tune

from ablate import records
from ablate.cache import cache_key

FINAL_RECORD = records.FINAL_FILE  # a trial's final metrics, written by the trial before it reports them


def save_to_trial_dir(name: str, data: bytes) -> None:
    """Write a file into this trial's directory in storage (a local path or a URI), at once.

    Files in the trial's working directory reach storage only with ``SyncConfig(sync_artifacts=True)``
    and then on a timer (every 5 min by default, none forced at the trial's end), so a small result
    file goes straight through the storage filesystem instead (``ablate.records.write_bytes``: a
    reader sees the whole file or none)."""
    storage = tune.get_context().get_storage()
    records.write_bytes(f"{storage.trial_fs_path}/{name}", data, fs=storage.storage_filesystem)


def read_from_trial_dir(name: str) -> dict | None:
    """A JSON file of this trial's directory in storage; None if absent or unreadable (then: train)."""
    storage = tune.get_context().get_storage()
    return records.read_json(f"{storage.trial_fs_path}/{name}", fs=storage.storage_filesystem)


def earlier_attempt(cfg: dict) -> tuple | None:
    """(filesystem, folder) of an earlier attempt at this very trial whose final record is on disk, or None.

    A driver killed after a trial's last write but before Ray's next snapshot of the sweep can leave that
    trial out of the snapshot; ``--resume`` then starts it again under a new trial id, so in a new folder.
    Sibling folders with this trial's name prefix (``trial_dirname``) are checked for a record of the same
    trial (``trial_key``), which is then replayed instead of trained again."""
    import pyarrow.fs

    storage = tune.get_context().get_storage()
    fs, own = storage.storage_filesystem, storage.trial_fs_path.rstrip("/")
    parent, prefix = own.rsplit("/", 1)[0], own.rsplit("/", 1)[1].rsplit("-", 1)[0] + "-"
    try:
        entries = fs.get_file_info(pyarrow.fs.FileSelector(parent))
    except OSError:
        return None
    key = cache_key(cfg)
    for entry in entries:
        if entry.type != pyarrow.fs.FileType.Directory or entry.path.rstrip("/") == own:
            continue
        if entry.base_name.startswith(prefix) and _record_key(fs, f"{entry.path}/{FINAL_RECORD}") == key:
            return fs, entry.path
    return None


def _record_key(fs, path: str) -> str | None:
    record = records.read_json(path, fs=fs)
    return record.get("trial_key") if isinstance(record, dict) else None


def replay(source: str) -> dict | None:
    """A staged sweep's trial identical to one an earlier stage finished (same setting and seed, at
    ``source``; ``ablate.sweep.staged``): report that trial's training rows, copy its held-out records and
    save its final record as this trial's, instead of training the same thing again. None when the
    earlier trial cannot be read (then the trial trains)."""
    import pyarrow.fs

    try:
        fs, root = pyarrow.fs.FileSystem.from_uri(source)
    except (OSError, ValueError):
        return None
    return replay_from(fs, root, source)


def replay_from(fs, root: str, source: str | None = None) -> dict | None:
    """``replay`` of the trial folder ``root`` on the pyarrow filesystem ``fs``."""
    names = (FINAL_RECORD, records.RESULT_FILE, records.HELDOUT_FILE, records.JUDGMENTS_FILE)
    try:
        files = {name: data for name in names if (data := records.read_bytes(f"{root}/{name}", fs=fs)) is not None}
        final = json.loads(files[FINAL_RECORD])
        text = files.get(records.RESULT_FILE, b"").decode()
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, KeyError, ValueError):
        return None
    for row in rows:
        if "step" in row and "status" not in row:  # the training history, as the earlier trial reported it
            tune.report({k: v for k, v in row.items() if k not in records.RAY_KEYS})
    for name in (records.HELDOUT_FILE, records.JUDGMENTS_FILE):  # per-response records (generations), later judgments
        if name in files:
            save_to_trial_dir(name, files[name])
    final = {**final, "replayed_from": source or root}
    save_to_trial_dir(FINAL_RECORD, json.dumps(final, default=str).encode())
    return final
