"""A trial's memory: the process's peak during the trial, and the trial's own growth.

* ``peak_memory_mb``: the process's peak during the trial (CPU: the peak resident set size, VmHWM,
  reset at the trial's start; CUDA: ``torch.cuda.max_memory_allocated``, reset likewise). In a reused
  worker it includes whatever the process held when the trial started: the interpreter and its
  imports, the worker's caches, and anything earlier trials left behind.
* ``peak_memory_growth_mb``: how far that peak rose above what the process held at the trial's start
  (CPU: resident set size; CUDA: memory allocated) or, in a reused worker, after the trial, whichever
  is larger: the trial's working memory. What a worker's first trial sets up for the worker (its
  caches of data and start point, imported modules, torch's first-use set-up) stays after the trial
  and is not counted, so a trial's growth does not depend on what ran before it in the worker: it
  is the measure that compares methods (docs/reports.md).

Also the allocator setting of Ray workers (``WORKER_ENV``): a reused Ray Tune worker's resident
memory grew by ~9 MB with every trial while its Python objects stayed the same; the memory a trial
freed stayed in glibc's malloc arenas (8 per core by default). Two arenas, and ``malloc_trim`` at
each trial's start, keep it flat (measured: docs/benchmarks.md, "Cost drift in a reused worker").
"""

from __future__ import annotations

import ctypes
import gc
import resource
from dataclasses import dataclass
from pathlib import Path

import torch

# The environment ablate gives its Ray workers (``ablate.sweep.tune.connect``), unless the driver's own
# environment sets the variable: then the user's value (and Ray's inheritance of it) wins.
WORKER_ENV = {"MALLOC_ARENA_MAX": "2"}


def _proc_status_mb(key: str) -> float | None:
    """A ``/proc/self/status`` size (``VmHWM``, ``VmRSS``) in MB; None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_cpu_peak() -> bool:
    """Linux: writing 5 to clear_refs sets the process's peak resident set size (VmHWM) to its
    current size. False where that is not possible (then the peak is the process's lifetime peak)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def current_mb(device: torch.device) -> float:
    """What the process holds now: CUDA memory allocated on ``device``, or the resident set size."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    rss = _proc_status_mb("VmRSS")
    if rss is not None:
        return rss
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_mb(device: torch.device) -> float:
    """The process's peak since the last reset (CUDA: peak allocated on ``device``)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    hwm = _proc_status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def release_free_memory() -> None:
    """Return the memory glibc's malloc keeps after ``free`` to the system (``malloc_trim``), so the
    resident size at a trial's start is what the process holds, not what an earlier trial freed
    (which the trial would then reuse without it showing as growth). A no-op without glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class MemoryProbe:
    """The memory of one trial, from ``MemoryProbe.start(device)`` at its start to its end."""

    device: torch.device
    start_mb: float
    reset: bool  # whether the peak was reset at the start (else: growth is unknown)

    @classmethod
    def start(cls, device: torch.device) -> MemoryProbe:
        """Reset the peak and note what the process holds now. Garbage from before (an earlier
        trial's objects in reference cycles) is collected first, so the trial does not pay for it."""
        gc.collect()
        release_free_memory()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            reset = True
        else:
            reset = _reset_cpu_peak()
        return cls(device, current_mb(device), reset)

    def peak_mb(self) -> float:
        return peak_mb(self.device)

    def settled_mb(self) -> float:
        """What the process holds once garbage is collected and freed memory returned: after a trial
        whose objects are gone, what it left behind for the worker."""
        gc.collect()
        release_free_memory()
        return current_mb(self.device)

    def growth_mb(self, end_mb: float | None = None) -> float:
        """How far the peak rose above the process's memory at the start or, given ``end_mb``, at the
        end, whichever is larger (NaN where the peak could not be reset)."""
        if not self.reset:
            return float("nan")
        return max(0.0, self.peak_mb() - max(self.start_mb, end_mb or 0.0))
