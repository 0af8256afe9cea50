"""Cache keys, and the atomic writes of what is not a whole file of bytes (torch tensors, directories).

Every file ablate writes itself (checkpoints, the SFT start point, tokenized data, reference
log-probs, baseline generations) goes through ``ablate.records.atomic_write``: a temporary file beside
the target, flushed to disk, then renamed over it, so a kill at any moment, or a concurrent trial
reading it, sees the old file or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from ablate.records import atomic_write


def cache_key(obj: object) -> str:
    """A short, stable hash of a JSON-able description of what is cached."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """``torch.save`` with the same old-or-new guarantee (read back with ``weights_only=True``)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_dir(final: Path, build: Callable[[Path], None]) -> Path:
    """Build a directory in a temporary sibling and rename it into place: a crash never leaves a
    half-written cache entry, and of two processes building the same entry the first one wins."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first; theirs is as good
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
