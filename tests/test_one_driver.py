"""One driver per sweep, and nothing trained twice: a driver SIGKILLed at random moments (seeded), resumed
after each kill, ends with every trial's final record written exactly once; two drivers of one sweep
started together end with one set of trials and one driver refused (exit 2). Real local Ray, real
training, real processes killed by pid."""

from __future__ import annotations

import json
import os
import random
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
from tests.conftest import REPO, SMALL
from tests.test_resume import stop_leftovers

pytestmark = pytest.mark.slow


def final_records(sweep_dir: Path) -> dict[str, dict]:
    """Trial folder -> its final.json (those readable now)."""
    out = {}
    for f in sweep_dir.glob("*/final.json"):
        try:
            out[f.parent.name] = json.loads(f.read_text())
        except (OSError, ValueError):
            pass
    return out


def sweep_file(tmp_path: Path, cache_dir: Path, name: str, gammas: list[float], seeds: list[int]) -> Path:
    sweep = {
        **SMALL,
        "name": name,
        "storage": str(tmp_path / "results"),
        "cache_dir": str(cache_dir),
        "methods": [{"method": "simpo", "hparams": {"gamma": {"grid": gammas}}}],
        "seeds": seeds,
        "max_concurrent": 2,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def ray_env() -> tuple[dict, str]:
    # A short temp dir of its own (Ray's socket paths are length-limited) marks this test's Ray processes.
    ray_tmp = tempfile.mkdtemp(prefix="rl", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    return env, ray_tmp


def kill_with_children(driver: subprocess.Popen) -> list[str]:
    """SIGKILL the driver and every process it started, at once (as a lost terminal or an OOM kill of the
    job would); return any that stay alive."""
    try:
        children = psutil.Process(driver.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=30)
    return stop_leftovers(children)


def test_sigkill_at_random_moments_then_resume_trains_each_trial_once(tmp_path, cache_dir, start):
    path = sweep_file(tmp_path, cache_dir, "kills", [0.0, 1.0], [0, 1])
    sweep_dir = tmp_path / "results" / "kills"
    env, ray_tmp = ray_env()
    env["TUNE_GLOBAL_CHECKPOINT_S"] = "1"
    cmd = [sys.executable, "-m", "ablate.run", str(path)]
    rng = random.Random(28)
    seen: dict[str, set[str]] = {}  # trial key -> every record id observed for it
    kills, logs = 0, []
    try:
        while kills < 2:
            log = tmp_path / f"run{kills}.log"
            logs.append(log)
            with log.open("w") as out:
                driver = subprocess.Popen([*cmd, *(["--resume"] if kills else [])], stdout=out,
                                          stderr=subprocess.STDOUT, cwd=REPO, env=env)  # fmt: skip
                before = len(final_records(sweep_dir))
                deadline = time.time() + 300
                # Kill a random moment (0-1.5 s) after a trial's final record appears: often between the
                # trial's last write and Ray's record of it, the window a kill mid-trial never reaches.
                while time.time() < deadline and driver.poll() is None and len(final_records(sweep_dir)) <= before:
                    time.sleep(0.2)
                time.sleep(rng.uniform(0.0, 1.5))
                if driver.poll() is not None:
                    break  # the sweep ended before this kill
                assert not kill_with_children(driver)
            kills += 1
            for rec in final_records(sweep_dir).values():
                seen.setdefault(rec["trial_key"], set()).add(rec["record_id"])
        assert kills >= 1, "the sweep ended before it could be killed: " + logs[-1].read_text()[-2000:]
        resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, cwd=REPO, env=env, timeout=1800)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "took over the lease" in (logs[1].read_text() if len(logs) > 1 else resumed.stdout)

    records = final_records(sweep_dir)
    for rec in records.values():
        seen.setdefault(rec["trial_key"], set()).add(rec["record_id"])
    # One final record per trial, written once whatever the kills: a trial that a kill left out of Ray's
    # snapshot is started again in a new folder and only replays the earlier folder's record (same id).
    assert len({rec["trial_key"] for rec in records.values()}) == 4, sorted(records)
    assert all(len(ids) == 1 for ids in seen.values()), seen
    df = load_trials([sweep_dir])
    assert (df["status"] == "finished").sum() == 4, df[["trial", "status", "error"]]
    assert not (sweep_dir / ".ablate-lease.json").exists()  # released by the driver that finished


def test_two_drivers_started_together_one_runs_one_is_refused(tmp_path, cache_dir, start):
    path = sweep_file(tmp_path, cache_dir, "twice", [0.0], [0, 1])
    sweep_dir = tmp_path / "results" / "twice"
    env, ray_tmp = ray_env()
    cmd = [sys.executable, "-m", "ablate.run", str(path)]
    try:
        drivers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                    env=env) for _ in range(2)]  # fmt: skip
        outs = [d.communicate(timeout=1800) for d in drivers]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    codes = sorted(d.returncode for d in drivers)
    assert codes == [0, 2], outs
    refused = outs[[d.returncode for d in drivers].index(2)][1]
    assert "is being run by another driver" in refused and "pid" in refused, refused
    assert "--resume" in refused
    df = load_trials([sweep_dir])
    assert len(df) == 2 and set(df["status"]) == {"finished"}, df[["trial", "status"]]
    assert len(list(sweep_dir.glob("experiment_state-*.json"))) == 1
