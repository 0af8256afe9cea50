"""One driver per sweep: a lease file in the sweep's directory (a local path or a URI), naming the
driver that holds it (host, pid, start time) and renewed while it runs.

A second driver of the same sweep (``ablate.run``, a staged sweep, ``ablate.judge``) finds a live lease
and stops with exit 2, naming the holder. A lease is dead, and taken over, when its holder's process is
gone (same host: a SIGKILLed driver cannot release it) or, held from another host, it has not been
renewed for ``STALE_S`` seconds. Locally the lease is created with a hard link (atomic: of two drivers
started together exactly one gets it); behind a URI, where no create-if-absent exists, a driver writes
its lease, waits ``SETTLE_S`` and reads it back: the last writer holds it, the other stops."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

import psutil

from ablate import records
from ablate.sweep import sweepdir

RENEW_S = float(os.environ.get("ABLATE_LEASE_RENEW_S", 10))
STALE_S = float(os.environ.get("ABLATE_LEASE_STALE_S", 60))
SETTLE_S = 2.0


@dataclass
class Holder:
    host: str
    pid: int
    started_at: float  # the driver process's start (Unix time): a reused pid is another process
    renewed_at: float
    token: str
    command: str

    @classmethod
    def me(cls, command: str) -> Holder:
        now = time.time()
        started = psutil.Process().create_time()
        return cls(socket.gethostname(), os.getpid(), started, now, uuid.uuid4().hex, command)

    def dead(self, now: float | None = None) -> str | None:
        """Why this lease's holder is gone, or None while it may run."""
        age = (now or time.time()) - self.renewed_at
        if self.host == socket.gethostname():  # the process decides: a slow renewal on a busy machine is no death
            try:
                if abs(psutil.Process(self.pid).create_time() - self.started_at) > 1.0:
                    return f"process {self.pid} is another process now"
            except psutil.NoSuchProcess:
                return f"process {self.pid} is gone"
            return None
        if age > STALE_S:
            return f"not renewed for {age:.0f} s"
        return None

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started_at))
        age = time.time() - self.renewed_at
        return (f"`{self.command}`, pid {self.pid} on host {self.host}, started {started}, "
                f"lease renewed {age:.0f} s ago")  # fmt: skip


class Lease:
    """A held lease: renewed by a daemon thread every ``RENEW_S`` seconds until ``release``."""

    def __init__(self, directory: str, holder: Holder) -> None:
        self.path, self.holder = f"{directory}/{sweepdir.LEASE}", holder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="ablate-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            current = read(self.path)
            if current is None or current.token != self.holder.token:
                print(f"warning: the lease {self.path} is no longer this driver's "
                      f"({'gone' if current is None else current.describe()}).", flush=True)  # fmt: skip
                return
            self.holder.renewed_at = time.time()
            _write(self.path, self.holder)

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        current = read(self.path)
        if current is not None and current.token == self.holder.token:
            fs, where = records.filesystem(self.path)
            fs.delete_file(where)
            folder = where.rsplit("/", 1)[0]
            if not sweepdir.entries(self.path.rsplit("/", 1)[0]):  # made for the lease alone (a refused start)
                fs.delete_dir(folder)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def read(path: str) -> Holder | None:
    data = records.read_json(path)
    try:
        return None if data is None else Holder(**data)
    except TypeError:  # not a lease of this version: treat as none
        return None


def _write(path: str, holder: Holder) -> None:
    records.write_bytes(path, json.dumps(asdict(holder)).encode())  # a reader sees the old lease or the new


def acquire(directory: str, command: str, what: str) -> Lease | str:
    """Take the lease of the sweep at ``directory`` (created if needed), or say who holds it.
    ``what`` names the sweep in the message (e.g. ``sweeps/gamma.yaml: sweep 'gamma'``)."""
    path = f"{directory}/{sweepdir.LEASE}"
    fs, where = records.filesystem(directory)
    fs.create_dir(where, recursive=True)
    mine = Holder.me(command)
    for _ in range(3):  # a lease that changes while we look: look again
        current = read(path)
        if current is not None and current.dead() is None:
            return busy(what, path, current)
        claimed = _claim_local(where, mine, current) if "://" not in directory else _claim_uri(path, mine)
        if claimed is True:
            if current is not None:
                print(f"note: took over the lease of {what} from {current.describe()} ({current.dead()}).")
            return Lease(directory, mine)
        if isinstance(claimed, Holder):
            return busy(what, path, claimed)
    return f"{what}: its lease {path} kept changing; another driver is starting. Try again in a minute."


def busy(what: str, path: str, holder: Holder) -> str:
    return (f"{what} is being run by another driver: {holder.describe()} ({path}). One driver at a time: "
            "wait for it to end, or stop it first. If it is dead (killed, or its machine gone), run again "
            f"with --resume: its lease is taken over once its process is gone (same host) or, from another "
            f"host, once it has not been renewed for {STALE_S:.0f} s.")  # fmt: skip


def _claim_local(directory: str, mine: Holder, seen: Holder | None) -> bool | Holder | None:
    """Create the lease with a hard link (fails if one exists); a dead ``seen`` lease is first renamed
    aside, and put back if it turns out to be another driver's new one. True: ours; a Holder: theirs;
    None: look again."""
    lease = f"{directory}/{sweepdir.LEASE}"
    tmp = f"{lease}.{mine.token}"
    _write(tmp, mine)
    try:
        if seen is not None:
            aside = f"{lease}.{mine.token}.dead"
            try:
                os.rename(lease, aside)
            except FileNotFoundError:
                return None
            moved = read(aside)
            if moved is None or moved.token != seen.token:  # a live driver's, written since we looked
                try:
                    os.link(aside, lease)
                except FileExistsError:
                    pass
                os.unlink(aside)
                return moved or None
            os.unlink(aside)
        try:
            os.link(tmp, lease)
        except FileExistsError:
            return read(lease)
        return True
    finally:
        os.unlink(tmp)


def _claim_uri(path: str, mine: Holder) -> bool | Holder | None:
    """Write our lease, wait, read it back: the last of two writers holds it."""
    _write(path, mine)
    time.sleep(SETTLE_S)
    back = read(path)
    return True if back is not None and back.token == mine.token else back
