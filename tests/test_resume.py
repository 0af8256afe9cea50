"""A sweep whose driver is SIGKILLed finishes with ``--resume``: finished trials are kept, not rerun, and the
sweep ends with as many trials as one never interrupted. Real local Ray, Optuna search and ASHA."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from ablate.readout.loader import load_trials
from ablate.sweep.raystart import load_scaled_s
from tests.conftest import REPO, SMALL

pytestmark = pytest.mark.slow


def terminated_trials(sweep_dir: Path) -> set[str]:
    """Trial ids the experiment state (what ``--resume`` restores from) records as finished."""
    files = sorted(glob.glob(str(sweep_dir / "experiment_state-*.json")))
    if not files:
        return set()
    try:
        state = json.loads(Path(files[-1]).read_text())
    except (OSError, json.JSONDecodeError):  # being rewritten
        return set()
    trials = [json.loads(t[0]) for t in state["trial_data"]]
    return {t["trial_id"] for t in trials if t["status"] == "TERMINATED"}


def stop_leftovers(processes: list[psutil.Process]) -> list[str]:
    """A SIGKILLed driver leaves some of its Ray processes behind (the agents outlive the raylet):
    end those this test caused, by their recorded identity, never by name; return any still alive."""
    for p in processes:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=10)
    left = []
    for p in alive:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{p.pid} {p.name()}")
        except psutil.NoSuchProcess:
            pass
    return left


def test_sigkill_of_the_driver_then_resume(tmp_path, cache_dir, start):
    sweep = {
        **SMALL,
        "name": "resume",
        "storage": str(tmp_path / "results"),
        "cache_dir": str(cache_dir),
        "methods": [
            {
                "method": "simpo",
                "hparams": {"beta": {"uniform": [1.0, 4.0]}, "gamma_beta_ratio": {"uniform": [0.1, 1.0]}},
                "training": {"learning_rate": {"loguniform": [1e-4, 1e-3]}},
            },
            {"method": "dpo"},
        ],
        "search": "optuna",
        "num_samples": 3,
        "seeds": [0, 1],
        # One trial at a time, each 16 steps (the grace period lets ASHA stop trials late only). Where the
        # kill lands is set by the hang below, not by the trials' length: longer trials only cost time.
        "max_concurrent": 1,
        "training": {**SMALL["training"], "epochs": 2},
        "scheduler": {"type": "asha", "grace_period": 8},
        "evaluation": {**SMALL["evaluation"], "every_steps": 4},
    }
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(sweep))
    sweep_dir = tmp_path / "results" / "resume"
    # A short temp dir of its own (Ray's socket paths are length-limited) marks this test's Ray processes.
    ray_tmp = tempfile.mkdtemp(prefix="rk", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    # Tune saves the experiment state at most every 10 s by default; every second here, so the kill
    # lands after the first finished trial is recorded and before the sweep is done, on any machine.
    env["TUNE_GLOBAL_CHECKPOINT_S"] = "1"
    cmd = [sys.executable, "-m", "ablate.run", str(path)]

    dry = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, cwd=REPO, env=env)
    expected = int(dry.stdout.strip().splitlines()[-1].split()[0])
    assert expected == 5  # 3 draws of SimPO, DPO once per seed

    log = (tmp_path / "first.log").open("w")
    # The third trial hangs at step 6 (before ASHA's first rung) until the driver is killed: trials 0 and 1
    # finish, and the kill lands while three are still to run, whatever the machine's speed. The resumed run
    # has no fault.
    first_env = {**env, "ABLATE_FAULT": "index=2,step=6,kind=hang"}
    driver = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=first_env)
    ray_processes: list[psutil.Process] = []
    try:
        deadline, done = time.time() + load_scaled_s(600), set()
        while time.time() < deadline and driver.poll() is None and len(done) < 2:
            done = terminated_trials(sweep_dir)
            time.sleep(0.5)
        assert driver.poll() is None, (
            "the sweep ended before it could be interrupted: " + (tmp_path / "first.log").read_text()[-2000:]
        )
        assert len(done) == 2, "the first two trials did not finish in time"
        kept = {
            d.name: (d / "result.json").read_bytes()
            for d in sweep_dir.iterdir()
            if d.name.split("-")[-1] in done
        }
        assert kept
        ray_processes = psutil.Process(driver.pid).children(recursive=True)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:  # a failed check above: still end what this driver started
            ray_processes = psutil.Process(driver.pid).children(recursive=True)
            driver.kill()
            driver.wait(timeout=30)
        log.close()
        left = stop_leftovers(ray_processes)
    assert not left, left
    assert len(done) < expected

    resumed = subprocess.run(
        [*cmd, "--resume"], capture_output=True, text=True, cwd=REPO, env=env, timeout=1800
    )
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "(resumed)" in resumed.stdout

    df = load_trials([sweep_dir])
    assert len(df) == expected  # as many trials as an uninterrupted sweep
    assert set(df["status"]) <= {"finished", "stopped early"}, df[["trial", "status", "error"]]
    assert df["setting"][df["method"] == "simpo"].nunique() == 3
    assert sorted(df["seed"][df["method"] == "dpo"]) == [0, 1]
    for name, content in kept.items():  # finished before the kill: kept, not rerun
        assert (sweep_dir / name / "result.json").read_bytes() == content, name

    # The Optuna study came back from the sweep's storage and holds every SimPO draw, none left running.
    from ablate.sweep.tune import SweepSearcher

    state = sorted(glob.glob(str(sweep_dir / "searcher-state-*.pkl")))[-1]
    searcher = SweepSearcher.__new__(SweepSearcher)
    searcher.restore(state)
    study = searcher._studies[0]._ot_study
    assert len(study.trials) == 3
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
