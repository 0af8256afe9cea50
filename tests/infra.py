"""Starting test infrastructure (a Ray node, an MLflow server) so that a busy machine cannot fail a test.

A server is started as a process of its own process group with its output in a log file, and is ready
when a check passes (a line in its log, an answer on its port). When the *start itself* fails (the
process exits, or is not ready within a timeout scaled with the machine's load), it is stopped and
started again, up to ``ablate.sweep.raystart.START_ATTEMPTS`` times, with the failed attempt's log printed
in the test's output (and a warning in pytest's summary). What a test asserts about the product is
never retried: only the start of what the test needs.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from ablate.sweep.raystart import load_scaled_s, retry_start


class StartFailed(AssertionError):
    """A server did not come up (it exited, or it was not ready in time): its start may be retried."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Service:
    """One process started in a process group of its own (so that everything it spawns can be
    stopped by that group's id, never by a name), its stdout and stderr in ``log``."""

    def __init__(
        self, cmd: list[str], log: Path, ready: Callable[[Service], bool], env: dict | None = None,
        cwd: Path | None = None, stop_signal: int = signal.SIGTERM,
    ) -> None:  # fmt: skip
        self.cmd, self.log, self.ready, self.stop_signal = cmd, log, ready, stop_signal
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def wait_ready(self, timeout_s: float) -> None:
        """Return once ``ready(self)`` holds; raise StartFailed if the process exits first or
        ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while not self.ready(self):
            if self.proc.poll() is not None:
                raise StartFailed(f"exited with status {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise StartFailed(f"not ready after {timeout_s:.0f}s:\n{self.log_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self, grace_s: float = 30) -> None:
        """``stop_signal`` to the process (a ``ray start --block`` stops its node on SIGINT), then
        SIGKILL to its whole process group (whatever outlived it)."""
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def report_failed_start(line: str) -> None:
    """A failed start, in the test's output (its log included) and, in short, in pytest's warnings."""
    print(line, file=sys.stderr, flush=True)
    warnings.warn(line.splitlines()[0][:300], stacklevel=2)


def start_service(
    make: Callable[[int], Service], idle_timeout_s: float, what: str,
    then: Callable[[Service, float], None] | None = None, pause_s: float = 2.0,
) -> Service:  # fmt: skip
    """``make(attempt)`` (1, 2, ...) starts a fresh process (its own log and ports); it must be ready
    within ``idle_timeout_s`` scaled with the load, and ``then(service, timeout_s)`` (a further check,
    raising StartFailed) must pass; else it is stopped and started again."""
    attempts = itertools.count(1)

    def start() -> Service:
        service = make(next(attempts))
        try:
            timeout_s = load_scaled_s(idle_timeout_s)
            service.wait_ready(timeout_s)
            if then is not None:
                then(service, timeout_s)
        except BaseException as e:
            service.stop(grace_s=10)
            if isinstance(e, StartFailed):
                raise StartFailed(f"{e}\n(log: {service.log})") from None
            raise
        return service

    # A failed attempt stops its own process group; other processes started meanwhile (a Ray head's
    # new workers, while its second node starts) are not the attempt's.
    return retry_start(start, log=report_failed_start, what=what, stop_leftovers=False, pause_s=pause_s)


def log_says(text: str) -> Callable[[Service], bool]:
    """A readiness check: ``text`` has appeared in the service's log."""
    return lambda service: text in service.log_text()
