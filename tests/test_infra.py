"""Starts that fail are retried, and only those: the product's local Ray start (ablate/sweep/raystart.py)
and the test servers' (tests/infra.py), with real functions and real processes."""

from __future__ import annotations

import sys

import pytest

from ablate.sweep import raystart
from tests.infra import Service, StartFailed, log_says, start_service


def test_a_failed_start_is_retried_a_bounded_number_of_times_and_logged():
    calls, lines = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TimeoutError("The current node timed out during startup")
        return "up"

    assert raystart.retry_start(flaky, lines.append, "local Ray", pause_s=0) == "up"
    assert len(calls) == 3 and len(lines) == 2
    assert lines[0].startswith("local Ray: attempt 1 of 3 failed to start (TimeoutError: The current node")

    def never_up() -> None:
        calls.append(1)
        raise TimeoutError("still down")

    calls.clear()
    with pytest.raises(TimeoutError, match="still down"):  # the last attempt's error, after 3 attempts
        raystart.retry_start(never_up, lines.append, "local Ray", pause_s=0)
    assert len(calls) == 3


def test_an_error_that_is_not_a_start_failure_is_not_retried():
    calls = []

    def bad_arguments() -> None:
        calls.append(1)
        raise ValueError("num_cpus must be positive")

    with pytest.raises(ValueError):
        raystart.retry_start(bad_arguments, print, "local Ray", pause_s=0)
    assert calls == [1]


def test_start_timeouts_grow_with_the_load_within_bounds():
    assert 1.0 <= raystart.load_factor() <= raystart.MAX_LOAD_FACTOR
    assert 60 <= raystart.load_scaled_s(60) <= 60 * raystart.MAX_LOAD_FACTOR


SERVER = "import sys, time\nif sys.argv[1] == '1': sys.exit('port in use')\nprint('ready', flush=True)\ntime.sleep(600)"


def test_a_server_whose_first_start_exits_is_started_again_with_that_log_shown(tmp_path, capfd):
    def server(attempt: int) -> Service:
        return Service([sys.executable, "-c", SERVER, str(attempt)], tmp_path / f"s-{attempt}.log", log_says("ready"))

    with pytest.warns(UserWarning, match="test server: attempt 1 of 3 failed to start"):
        service = start_service(server, 30, "test server")
    try:
        assert service.proc.poll() is None and service.cmd[-1] == "2"
        assert "port in use" in capfd.readouterr().err  # the failed attempt's log, in the test's output
    finally:
        service.stop()
    assert service.proc.returncode is not None


def test_a_server_that_never_gets_ready_fails_after_its_attempts(tmp_path):
    started = []

    def never_ready(attempt: int) -> Service:
        started.append(attempt)
        return Service([sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / f"n-{attempt}.log",
                       lambda _: False)  # fmt: skip

    with pytest.warns(UserWarning), pytest.raises(StartFailed, match="not ready after"):
        start_service(never_ready, 0.5, "never ready", pause_s=0)
    assert started == [1, 2, 3]
