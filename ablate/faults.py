"""Fault injection: a testing hook that makes a chosen trial fail at a chosen step.

Set ``ABLATE_FAULT`` in the environment of the driver (a local Ray's workers inherit it; on a
cluster joined with ``--address`` the driver passes it to the sweep's workers), e.g. ``ABLATE_FAULT="index=3,step=5,kind=raise"``; several faults are
separated by ``;``. ``index`` is the trial's index in the expanded sweep (``--dry-run`` shows it),
``step`` the training step (1-based) before which the fault fires, and ``kind`` one of:

- ``raise``: the trial raises ``InjectedFault`` (an ordinary Python exception);
- ``nan`` / ``inf``: that step's loss becomes NaN / +inf (the trial diverges);
- ``kill``: the trial's worker process sends itself SIGKILL (as the OOM killer would);
- ``hang``: the trial blocks before that step until its process is killed (as a deadlocked
  collective would); tests use it to hold a sweep mid-trial for as long as they need, instead of
  racing a trial to its end;
- ``rendezvous``: the trial waits before that step until every trial given a ``rendezvous`` fault
  has reached its step too (each leaves a file in the folder ``$ABLATE_RENDEZVOUS``), or raises
  ``InjectedFault`` after ``RENDEZVOUS_TIMEOUT_S``: a test that they all run at the same time,
  which fails, instead of hanging, when the scheduler does not run them together.

In a staged sweep (``stages:``) every stage numbers its trials from 0 (its ``--dry-run`` table
shows them): add ``stage=<name>`` to target one stage, e.g.
``ABLATE_FAULT="stage=hparams,index=0,step=6,kind=hang"``; a fault without ``stage`` fires at that
index in every stage.

An on-policy data build (``ablate.onpolicy.build``) reads ``stage=on_policy,index=0,step=K,kind=kill``: the
driver kills itself right after writing shard K.

A fault fires only in an attempt that started from step 0: a trial retried from a checkpoint taken
before the fault's step does not meet it again (a transient fault), while one retried from scratch
does (a persistent fault, which exhausts ``max_failures``). Not for production sweeps.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ENV = "ABLATE_FAULT"
RENDEZVOUS_ENV = "ABLATE_RENDEZVOUS"
RENDEZVOUS_TIMEOUT_S = 300.0
KINDS = ("raise", "nan", "inf", "kill", "hang", "rendezvous")


class InjectedFault(RuntimeError):
    """The exception a ``kind=raise`` fault raises."""


@dataclass(frozen=True)
class Fault:
    index: int
    step: int
    kind: str
    stage: str | None = None  # a staged sweep's stage; None: any


def parse(text: str) -> list[Fault]:
    """``"index=3,step=5,kind=raise; index=1,step=2,kind=nan"`` -> faults; a bad entry raises ValueError."""
    faults = []
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        try:
            fields = dict(part.split("=", 1) for part in entry.replace(" ", "").split(","))
            fault = Fault(
                int(fields.pop("index")), int(fields.pop("step")), fields.pop("kind"), fields.pop("stage", None)
            )
        except (KeyError, ValueError):
            raise ValueError(
                f"{ENV}: cannot read {entry!r}; write [stage=<stage>,]index=<trial index>,step=<step>,"
                f"kind=<{'|'.join(KINDS)}>"
            ) from None
        if fields or fault.kind not in KINDS:
            raise ValueError(f"{ENV}: {entry!r}: unknown key or kind; kinds are {', '.join(KINDS)}")
        faults.append(fault)
    return faults


def for_trial(index: int, start_step: int, environ=os.environ, stage: str | None = None) -> dict[int, str]:
    """``{step: kind}`` of the faults this attempt of trial ``index`` (of ``stage`` in a staged sweep)
    meets (none when resumed)."""
    if start_step > 0:
        return {}
    return {
        f.step: f.kind
        for f in parse(environ.get(ENV, ""))
        if f.index == index and f.stage in (None, stage)
    }


def worker_env(environ=os.environ) -> dict[str, str]:
    """The hook's variables the driver's environment sets, for the workers of a cluster joined with
    ``--address`` (a local Ray's workers inherit the driver's environment; a cluster's do not)."""
    return {k: environ[k] for k in (ENV, RENDEZVOUS_ENV) if k in environ}


def fire(kind: str, step: int, index: int = -1, environ=os.environ) -> None:
    """The faults that act outside the loss (``nan``/``inf`` are applied by the trial's loss)."""
    if kind == "rendezvous":
        rendezvous(index, environ)
    if kind == "raise":
        raise InjectedFault(f"injected fault at step {step}")
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "hang":
        threading.Event().wait()  # never set: blocks until the process is killed


def rendezvous(index: int, environ=os.environ) -> None:
    """Arrive (a file named after the trial's index), then wait until all the trials given a rendezvous
    fault have arrived; a condition polled every 50 ms, with a deadline that turns a never-met condition
    into an error."""
    folder = Path(environ[RENDEZVOUS_ENV])
    expected = {str(f.index) for f in parse(environ.get(ENV, "")) if f.kind == "rendezvous"}
    (folder / str(index)).touch()
    deadline = time.monotonic() + RENDEZVOUS_TIMEOUT_S
    while not expected <= {p.name for p in folder.iterdir()}:
        if time.monotonic() > deadline:
            arrived = sorted(p.name for p in folder.iterdir())
            raise InjectedFault(f"rendezvous: trials {arrived} of {sorted(expected)} arrived in time")
        threading.Event().wait(0.05)
