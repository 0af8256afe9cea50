"""A sweep's directory in its storage (a local path or a URI) as ablate's own: where it may be, the marker
that says ablate made it, and ``--overwrite`` deleting only what ablate and Ray Tune wrote there.

The marker, ``.ablate-sweep.json``, is written when a sweep starts (and on ``--resume``). ``--overwrite``
deletes a directory only when it carries the marker and holds nothing but the files ablate and Ray Tune
write (``KNOWN``); otherwise it names what is in the way and deletes nothing."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pyarrow.fs

from ablate import records
from ablate.records import filesystem, read_json, write_bytes

MARKER = records.MARKER_FILE
LEASE = records.LEASE_FILE  # ablate.sweep.lease
# Top-level entries of a sweep's directory that ablate or Ray Tune write; nothing else is deleted.
KNOWN = re.compile(
    r"^(" + "|".join([
        re.escape(MARKER), re.escape(LEASE) + r"(\..*)?", r"\.validate_storage_marker", r"tuner\.pkl",
        r"experiment_state-.*\.json", r"basic-variant-state-.*\.json", r"searcher-state-.*\.pkl",
        r"search_gen_state-.*\.json", r"run_order\.json", r"stages\.json", r"rounds\.json", r"tracking\.json", r"baselines",
        r"tensorboard", r"wandb", r"\..*\.tmp", r"\d{3,}-[a-z0-9-]*-s-?\d+-[0-9a-f]+_\d+",  # a trial's folder
    ]) + r")$"
)  # fmt: skip


def entries(path: str) -> dict[str, bool] | None:
    """The directory's top-level names (True: a folder); None when it does not exist."""
    fs, where = filesystem(path)
    if fs.get_file_info(where).type != pyarrow.fs.FileType.Directory:
        return None
    infos = fs.get_file_info(pyarrow.fs.FileSelector(where))
    return {i.base_name: i.type == pyarrow.fs.FileType.Directory for i in infos}


def write_marker(path: str, name: str) -> None:
    """Mark ``path`` as a sweep directory of ablate's (kept when it is there already)."""
    if read_json(f"{path}/{MARKER}") is None:
        record = {"ablate_sweep": name, "created_at": time.time(), "host": socket.gethostname()}
        write_bytes(f"{path}/{MARKER}", json.dumps(record).encode())


def marked(path: str) -> bool:
    """Whether ``path`` carries ablate's marker (a sweep's, or a stage's folder)."""
    return read_json(f"{path}/{MARKER}") is not None


def lease_home(path: str) -> str:
    """Where the lease of the sweep that ``path`` (a sweep's or a stage's folder) belongs to lives: a staged
    sweep's one lease covers its stages, an adaptive sweep's its rounds."""
    parent = path.rstrip("/").rsplit("/", 1)[0]
    staged = any(read_json(f"{parent}/{r}") is not None for r in (records.STAGES_FILE, records.ROUNDS_FILE))
    return parent if staged else path


def outside_problem(storage: str, name: str) -> str | None:
    """Why ``<storage>/<name>`` is not a folder directly inside ``storage`` (e.g. a symbolic link to
    elsewhere), or None. The schema already refuses names that are not one path component."""
    if "://" in storage:
        return None  # object stores have no links; the name is one component
    base = Path(storage).expanduser().resolve()
    where = (base / name).resolve()
    if where.parent != base or where.name in ("", ".", ".."):
        return f"<storage>/{name} resolves to {where}, outside {base}"
    return None


def overwrite_problem(path: str, keep: tuple[str, ...] = ()) -> str | None:
    """Why ``--overwrite`` must not delete ``path``: it lacks ablate's marker, or it holds files ablate did
    not write (``keep``: more folder names that are ablate's, e.g. a staged sweep's stages); None if it may."""
    found = entries(path)
    if found is None:
        return None
    foreign = sorted(n for n, is_dir in found.items()
                     if not (KNOWN.match(n) or n in keep or is_dir and marked(f"{path}/{n}")))  # fmt: skip
    if MARKER not in found:
        listing = ", ".join(sorted(found)[:12]) + (", ..." if len(found) > 12 else "")
        return (f"{path} does not carry ablate's marker ({MARKER}), so it may not be a sweep's directory; "
                f"it holds: {listing or '(nothing)'}")  # fmt: skip
    if foreign:
        return f"{path} holds files ablate did not write: {', '.join(foreign[:12])}"
    return None


def delete_known(path: str, keep: tuple[str, ...] = (), spare: tuple[str, ...] = (MARKER, LEASE)) -> None:
    """Delete what ablate and Ray Tune wrote in ``path`` (``KNOWN`` and ``keep``), except ``spare``; anything
    else stays, and so does the directory if anything is left."""
    found = entries(path)
    if not found:
        return
    fs, where = filesystem(path)
    for name, is_dir in found.items():
        if name in spare or not (KNOWN.match(name) or name in keep or is_dir and marked(f"{path}/{name}")):
            continue
        if is_dir:
            fs.delete_dir(f"{where}/{name}")
        else:
            fs.delete_file(f"{where}/{name}")
