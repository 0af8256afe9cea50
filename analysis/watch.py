"""``python -m analysis.report RESULTS --watch [--interval S]``: a report that follows a running sweep.

Every ``--interval`` seconds it looks at the results (a local folder, or a storage URI whose changed
report files are copied again), and when the set of finished trials has changed it re-renders the
whole report. What it reads is only what is new: the rows of trials whose files did not change and the
judgments of finished trials are kept between refreshes (``ablate.readout.loader`` and
``ablate.readout.judgments`` caches, keyed by each file's size and modification time); the statistics, tables
and figures are drawn again from them, since a new trial can move every table (the best setting, the prompt
difficulties of the length-controlled win rate). Each refresh prints its cost.

It ends when the sweep does (Ray's experiment state lists every planned trial as TERMINATED or ERROR;
for a staged sweep, every stage), after a last refresh, or on Ctrl-C, after bringing the report up to
date: either way the report left behind covers every trial that finished."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ablate import records
from ablate.readout import fetch
from ablate.readout.loader import FINISHED, experiment_state, find_sweeps, load_trials, stage_names
from analysis import report

DONE_STATES = {"TERMINATED", "ERROR"}


def sweep_ended(sweep_dir: Path) -> bool:
    """Whether the sweep has nothing left to run: Ray's newest experiment state holds every trial of
    ``run_order.json`` (when there is one) and none of them is pending or running."""
    stages = stage_names(sweep_dir)
    if stages is not None:
        return all((sweep_dir / s).is_dir() and sweep_ended(sweep_dir / s) for s in stages)
    state = experiment_state(sweep_dir)
    if not state or any(info.get("status") not in DONE_STATES for info in state.values()):
        return False
    try:
        planned = len(json.loads((sweep_dir / records.RUN_ORDER_FILE).read_text())["trials"])
    except (OSError, ValueError, KeyError, TypeError):
        planned = 0  # a search sweep records its suggestions as they come
    return len(state) >= planned


class Follower:
    """The state kept between refreshes: the caches, the last finished set, the local copy of URIs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: dict = {}
        self.judged: dict = {}
        self.shown: frozenset | None = None
        self.scratch = Path(tempfile.mkdtemp(prefix="ablate-watch-")) if any(map(fetch.is_uri, args.sweeps)) else None
        self.refreshes: list[tuple[int, float]] = []  # (finished trials, seconds) per refresh

    def look(self) -> tuple[list[Path], bool]:
        """The sweep directories now, and whether they have all ended (judged before reading the trials,
        so that the last look reads everything the sweep wrote)."""
        local = [fetch.localize(s, self.scratch) if fetch.is_uri(s) else Path(s) for s in self.args.sweeps]
        dirs = find_sweeps(local)
        return dirs, bool(dirs) and all(sweep_ended(d) for d in dirs)

    def refresh(self, dirs: list[Path], last: bool = False, force: bool = False) -> int | None:
        """Re-render when the finished trials changed (or ``force``); ``last``: the final one (logged to
        tracking if asked). The report's exit code; None when skipped."""
        t0 = time.perf_counter()
        df = load_trials(dirs, self.rows)
        done = df[df["status"] == FINISHED] if not df.empty else df
        now = frozenset(done["trial_dir"]) if not done.empty else frozenset()
        if not now or (now == self.shown and not force):
            return None
        new = len(now - (self.shown or frozenset()))
        args = argparse.Namespace(**{**vars(self.args), "log_to_tracking": self.args.log_to_tracking and last})
        code = report.report_from(args, dirs, df, self.judged)
        self.shown = now
        spent = time.perf_counter() - t0
        self.refreshes.append((len(now), spent))
        print(f"[watch] refreshed in {spent:.1f} s: {len(now)} finished trials (+{new} new), "
              f"{len(df) - len(now)} not (yet) finished", flush=True)  # fmt: skip
        return code

    def close(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def follow(args: argparse.Namespace) -> int:
    """``--watch``: refresh until the sweep ends or Ctrl-C (see the module doc)."""
    if args.interval <= 0:
        print(f"error: --interval {args.interval}: give a positive number of seconds (e.g. --interval 10).",
              file=sys.stderr)  # fmt: skip
        return report.EXIT_BAD_INPUT
    follower = Follower(args)
    code: int | None = None
    try:
        print(f"[watch] following {', '.join(args.sweeps)} every {args.interval:g} s; Ctrl-C to stop", flush=True)
        while True:
            dirs, ended = follower.look()
            if ended:  # trials that did not finish may have changed status too: render once more
                last = follower.refresh(dirs, last=True, force=True)
                return last if last is not None else _nothing(args)
            code = follower.refresh(dirs) if dirs else None
            if code not in (None, 0):
                return code  # bad input (e.g. an unknown --metric): waiting will not fix it
            time.sleep(args.interval)
    except KeyboardInterrupt:
        print("[watch] interrupted: bringing the report up to date", flush=True)
        dirs = find_sweeps(args.sweeps) if follower.scratch is None else follower.look()[0]
        last = follower.refresh(dirs, last=True) if dirs else None
        if last is None and follower.shown:
            print("[watch] the report is up to date", flush=True)
            return 0
        return last if last is not None else _nothing(args)
    except fetch.FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return report.EXIT_BAD_INPUT
    finally:
        _summary(follower.refreshes)
        follower.close()


def _nothing(args: argparse.Namespace) -> int:
    print(f"error: no finished trial in {', '.join(args.sweeps)}; nothing to report.", file=sys.stderr)
    return report.EXIT_BAD_INPUT


def _summary(refreshes: list[tuple[int, float]]) -> None:
    if len(refreshes) < 2:
        return
    spent = sum(s for _, s in refreshes)
    print(f"[watch] {len(refreshes)} refreshes for {refreshes[-1][0]} finished trials: {spent:.1f} s in all, "
          f"{spent / len(refreshes):.2f} s per refresh, {spent / max(refreshes[-1][0], 1):.2f} s per finished trial",
          flush=True)  # fmt: skip
