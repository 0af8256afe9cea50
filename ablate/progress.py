"""Progress of the long steps before and between trials: training the built-in SFT start point,
its baseline generations, precomputing reference log-probs, tokenizing a large data set.

On a terminal, a ``rich`` progress bar; otherwise (CI logs, Ray worker logs) a plain line every
``every_s`` seconds (10 by default) saying what runs, how far it is and about how long is left. A step
that ends before the first line is due prints nothing, so small runs stay quiet.

Loops that do not know what they are part of (``ablate.trial.evaluate``'s batch loops) ask for
``loop(total)``: it is a real progress display only inside ``label("what it does")``, set by the
caller that knows (``ablate.trial.reference``, ``ablate.trial.startpoint``), and a no-op otherwise, so the same
loops run silently for held-out evaluation.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Callable, Iterator

EVERY_S = 10.0
_label: contextvars.ContextVar[str | None] = contextvars.ContextVar("ablate_progress_label", default=None)


def clock_text(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


def status_line(what: str, done: int, total: int, unit: str, elapsed: float) -> str:
    """``what: 120/600 steps (20%), 00:35 elapsed, about 02:20 left`` (no estimate before any progress)."""
    share = done / total if total else 1.0
    left = f"about {clock_text(elapsed * (total - done) / done)} left" if done else "estimating time left"
    unit = f" {unit}" if unit else ""
    return f"{what}: {done}/{total}{unit} ({share:.0%}), {clock_text(elapsed)} elapsed, {left}"


class Progress:
    """One long step's progress; ``advance(n)`` after each piece of work, ``close()`` at the end (or use
    it as a context manager). ``tty``: force the bar (True) or the plain lines (False); default: a bar
    when stdout is a terminal. ``log`` receives the plain lines, one every ``every_s`` seconds (default
    ``EVERY_S``); ``clock`` is injectable for tests."""

    def __init__(
        self,
        what: str,
        total: int,
        unit: str = "",
        *,
        log: Callable[[str], None] | None = None,
        every_s: float | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.total, self.unit, self.clock = what, max(int(total), 0), unit, clock
        self.every_s = EVERY_S if every_s is None else every_s
        self.log = log or (lambda line: print(line, flush=True))
        self.done = 0
        self.start = self.last_line = clock()
        self.lines = 0  # plain lines printed so far
        self._bar = self._task = None
        if tty if tty is not None else sys.stdout.isatty():
            self._start_bar()

    def _start_bar(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(self.unit),
            TimeElapsedColumn(), TextColumn("elapsed,"), TimeRemainingColumn(), TextColumn("left"),
        )  # fmt: skip
        self._bar.start()
        self._task = self._bar.add_task(self.what, total=self.total)

    def advance(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total) if self.total else self.done + n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            return
        now = self.clock()
        if now - self.last_line >= self.every_s:
            self.last_line = now
            self.lines += 1
            self.log(status_line(self.what, self.done, self.total, self.unit, now - self.start))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self.lines:  # a step long enough to have shown progress also says when it ended
            unit = f" {self.unit}" if self.unit else ""
            self.log(f"{self.what}: done, {self.done}{unit} in {clock_text(self.clock() - self.start)}")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Silent:
    """What ``loop`` returns outside ``label``: nothing to show."""

    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc) -> None:
        pass


@contextlib.contextmanager
def label(what: str) -> Iterator[None]:
    """Name the long step that the loops run inside this block belong to (see the module doc)."""
    token = _label.set(what)
    try:
        yield
    finally:
        _label.reset(token)


def loop(total: int, unit: str = "") -> Progress | _Silent:
    """A ``Progress`` of the step named by the enclosing ``label``, or a silent stand-in."""
    what = _label.get()
    return Progress(what, total, unit) if what else _Silent()
