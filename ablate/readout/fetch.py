"""Sweep results in shared or object storage (``s3://``, ``gs://``, ``file://`` URIs): a local copy
of just the files the report reads, so ``python -m analysis.report s3://bucket/results/NAME`` works
where the sweep's ``storage:`` pointed. Model checkpoints stored beside the results are not copied."""

from __future__ import annotations

import atexit
import fnmatch
import shutil
import tempfile
from pathlib import Path

from ablate import records
from ablate.readout.loader import RAY_STATE

REPORT_FILES = (records.PARAMS_FILE, records.RESULT_FILE, records.ERROR_FILE, records.STAGES_FILE,
                records.HELDOUT_FILE, records.JUDGMENTS_FILE, records.RUN_ORDER_FILE)  # fmt: skip


class FetchError(ValueError):
    """A URI that cannot be read; the message names it and says what to check."""


def is_uri(path: str) -> bool:
    return "://" in path


def localize(path: str, into: Path | None = None) -> Path:
    """``path`` itself if it is local; for a URI, a local folder (same last name) holding its report files."""
    if not is_uri(path):
        return Path(path)
    from pyarrow import fs  # installed with Ray Tune; handles s3://, gs://, hdfs:// and file://

    try:
        filesystem, root = fs.FileSystem.from_uri(path)
        infos = filesystem.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True))
    except (
        Exception
    ) as e:  # pyarrow raises several types (ArrowInvalid, OSError) for bad URIs and credentials
        raise FetchError(
            f"cannot list {path} ({e}). Check the URI (e.g. s3://bucket/results/NAME) and your cloud credentials."
        ) from None
    if into is None:  # a scratch copy, removed when the report command exits
        into = Path(tempfile.mkdtemp(prefix="ablate-results-"))
        atexit.register(shutil.rmtree, into, ignore_errors=True)
    dest = Path(into) / root.rstrip("/").rsplit("/", 1)[-1]
    for info in infos:
        wanted = info.base_name in REPORT_FILES or fnmatch.fnmatch(info.base_name, RAY_STATE)  # read by loader.experiment_state
        if info.type == fs.FileType.File and wanted:
            target = dest / info.path[len(root) :].lstrip("/")
            if _unchanged(target, info):  # a --watch look copies only what changed since the last
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with filesystem.open_input_stream(info.path) as src:
                target.write_bytes(src.read())
    return dest


def _unchanged(target: Path, info) -> bool:
    """Whether the local copy ``target`` has the remote file's size and is not older than it."""
    try:
        st = target.stat()
    except OSError:
        return False
    return info.size == st.st_size and info.mtime is not None and info.mtime.timestamp() <= st.st_mtime
