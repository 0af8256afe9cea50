"""``python -m analysis.report RESULTS --watch``: the report follows a results directory into which trial
directories (copied from a hand-written sweep in Ray's layout) appear, reads only what is new, and ends
when Ray's experiment state says the sweep has ended, leaving the report a one-shot run would write."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from ablate.readout.loader import load_trials
from analysis import report, watch
from tests.analysis_data import paper_like_sweep, write_experiment_state

ROOT = Path(__file__).resolve().parents[1]


def _arrive(src: Path, dst: Path, names: list[str]) -> None:
    """Trial directories appear whole, as a finished trial's files do once synced (copy, then rename)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copytree(src / name, dst / f".{name}")
        os.replace(dst / f".{name}", dst / name)


def _args(sweep: Path, out: Path) -> argparse.Namespace:
    return report.parse_args([str(sweep), "--out", str(out), "--watch", "--interval", "0.1"])


def _end(src: Path, dst: Path) -> None:
    statuses = {d.name: "ERROR" if (d / "error.txt").exists() else "TERMINATED" for d in src.iterdir() if d.is_dir()}
    write_experiment_state(dst, statuses)


def test_follower_reads_only_new_trials_and_ends_with_the_full_report(tmp_path):
    src = paper_like_sweep(tmp_path / "src")
    names = sorted(d.name for d in src.iterdir() if d.is_dir())
    dst, out = tmp_path / "results" / "paper", tmp_path / "reports"
    follower = watch.Follower(_args(dst, out))
    assert follower.look() == ([], False)  # nothing yet: keep waiting

    _arrive(src, dst, names[:1])
    dirs, ended = follower.look()
    assert not ended and follower.refresh(dirs) == 0
    assert "1 finished" in (out / "paper" / "report.md").read_text()
    kept = dict(follower.rows)
    assert follower.refresh(dirs) is None  # nothing new: no re-render

    _arrive(src, dst, names[1:])
    dirs, ended = follower.look()
    assert not ended  # every trial is there, but Ray has not said the sweep is over
    load_trials(dirs, follower.rows)
    assert follower.rows[str(dst / names[0])] is kept[str(dst / names[0])]  # the first trial was not read again
    assert len(follower.rows) == len(names)
    _end(src, dst)
    dirs, ended = follower.look()
    assert ended and follower.refresh(dirs, last=True, force=True) == 0
    assert [n for n, _ in follower.refreshes] == [1, 12]  # finished trials at each refresh
    watched = pd.read_csv(out / "paper" / "trials.csv")  # every trial, as a one-shot report loads them
    once = load_trials(dirs).drop(columns=["history"])
    assert sorted(watched["trial"]) == sorted(once["trial"])
    assert (watched.set_index("trial")["status"] == once.set_index("trial")["status"]).all()


def test_sweep_ended_needs_every_planned_trial(tmp_path):
    sweep = tmp_path / "s"
    sweep.mkdir()
    assert not watch.sweep_ended(sweep)  # no state yet
    write_experiment_state(sweep, {"a": "TERMINATED", "b": "RUNNING"})
    assert not watch.sweep_ended(sweep)
    write_experiment_state(sweep, {"a": "TERMINATED", "b": "ERROR"}, stamp="2026-01-01_00-00-01")
    assert watch.sweep_ended(sweep)
    (sweep / "run_order.json").write_text(json.dumps({"trials": [{}, {}, {}]}))  # a third not started yet
    assert not watch.sweep_ended(sweep)


def test_watch_command_follows_until_the_sweep_ends(tmp_path):
    src = paper_like_sweep(tmp_path / "src")
    names = sorted(d.name for d in src.iterdir() if d.is_dir())
    dst, out = tmp_path / "results" / "paper", tmp_path / "reports"
    _arrive(src, dst, names[:3])
    cmd = [sys.executable, "-m", "analysis.report", str(dst), "--out", str(out), "--watch", "--interval", "0.2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        lines = []
        for line in proc.stdout:  # the first refresh, then the rest of the sweep arrives and ends
            lines.append(line)
            if line.startswith("[watch] refreshed"):
                break
        _arrive(src, dst, names[3:])
        _end(src, dst)
        rest, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines) + rest
    assert proc.returncode == 0, text
    assert "3 finished trials (+3 new)" in text and "12 finished trials (+9 new)" in text
    assert len(pd.read_csv(out / "paper" / "trials.csv")) == len(names)
