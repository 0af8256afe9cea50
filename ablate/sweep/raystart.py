"""Starting a local Ray instance on a busy machine: a start that fails is tried again, a few times.

Ray waits a fixed time for its own processes (the GCS, the raylet) to come up and register (30 s in
``ray._private.node``, not configurable); on a machine whose cores are all busy with other work that
can run out, and ``ray.init`` then raises although nothing is wrong with the sweep. Such a failure of
the *start itself* is retried (the failed attempt's processes stopped by pid, its error logged);
a sweep's own errors, and a failure to join an existing cluster, are not.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil

T = TypeVar("T")
START_ATTEMPTS = 3
MAX_LOAD_FACTOR = 4.0  # a start timeout grows with the load up to this many times its idle value


def load_factor() -> float:
    """How much slower than idle this machine runs a new process: the 1-minute load average per
    core, at least 1 (idle), at most ``MAX_LOAD_FACTOR``."""
    try:
        load = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:  # no load average on this platform
        return 1.0
    return min(max(load, 1.0), MAX_LOAD_FACTOR)


def load_scaled_s(idle_s: float) -> float:
    """A timeout for something (a start, a small sweep in a test) that takes up to ``idle_s`` on an
    idle machine, scaled with the load now (read when it begins: a load that builds up meanwhile is
    not seen)."""
    return idle_s * load_factor()


def is_start_failure(error: BaseException) -> bool:
    """Whether a local ``ray.init`` failed because Ray's processes did not come up in time (retry),
    rather than because of its arguments (a ValueError or TypeError: the same again would fail)."""
    return isinstance(error, Exception) and not isinstance(error, (ValueError, TypeError))


def retry_start(
    start: Callable[[], T], log: Callable[[str], None], what: str, attempts: int = START_ATTEMPTS,
    stop_leftovers: bool = True, pause_s: float = 2.0,
) -> T:  # fmt: skip
    """``start()``, tried up to ``attempts`` times while it fails with a start failure; before each
    retry the failure is logged and, with ``stop_leftovers``, processes the attempt spawned (children
    of this process that were not there before) are killed by pid. Any other error, or the last
    attempt's, is raised."""
    for attempt in range(1, attempts + 1):
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        try:
            return start()
        except Exception as e:
            if attempt == attempts or not is_start_failure(e):
                raise
            if stop_leftovers:
                stop_new_children(before)
            log(f"{what}: attempt {attempt} of {attempts} failed to start ({type(e).__name__}: {e}); "
                f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; trying again")  # fmt: skip
            time.sleep(pause_s * attempt)  # let the load that made it fail pass, a little
    raise AssertionError("unreachable")


def latest_session_logs() -> str:
    """The log folder of the newest Ray session on this machine's Ray temp dir (``RAY_TMPDIR`` or
    /tmp/ray): where a failed local start left its processes' logs."""
    root = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"  # where Ray puts its sessions on Linux
    sessions = sorted(root.glob("session_2*"), key=lambda d: d.stat().st_mtime)
    return str(sessions[-1] / "logs") if sessions else str(root)


def stop_new_children(before: set[int]) -> None:
    """SIGKILL this process's descendants not in ``before`` (what a failed start left running)."""
    new = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    for p in new:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(new, timeout=10)
