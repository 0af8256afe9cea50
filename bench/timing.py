"""Small timing helpers shared by the benchmarks.

Every duration is taken twice: wall-clock (what a user waits for) and the process's CPU time. On a
machine shared with other jobs the wall-clock figures stretch with the load; CPU time does not, so
the two together say whether a ratio is the code or the neighbours."""

from __future__ import annotations

import statistics
import time


def now() -> tuple[float, float]:
    """(wall-clock, CPU) seconds."""
    return time.perf_counter(), time.process_time()


def since(t0: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = now()
    return wall - t0[0], cpu - t0[1]


class StepClock:
    """Step times as the intervals between consecutive step ends, so that everything a step costs
    (batch fetch and collation, forward, backward, optimizer, logging) is counted on both sides."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self.t0 = now()
        self.ends: list[tuple[float, float]] = []

    def tick(self, *_) -> None:
        self.ends.append(now())

    def durations(self, which: int = 0) -> list[float]:
        """Per-step seconds: ``which`` 0 for wall-clock, 1 for CPU."""
        marks = [self.t0[which]] + [e[which] for e in self.ends]
        return [b - a for a, b in zip(marks[:-1], marks[1:], strict=True)]


def steady_step_s(durations: list[float], warmup: int = 3) -> float:
    """Median step time after ``warmup`` steps (fewer when the run is short)."""
    skip = min(warmup, max(len(durations) - 1, 0))
    return statistics.median(durations[skip:])
