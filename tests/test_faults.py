"""Faults on a real local Ray: a trial that raises, diverges or is SIGKILLed, a SIGKILLed driver,
torn files. Faults are injected with the ``ABLATE_FAULT`` testing hook (``ablate/faults.py``)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from ablate import faults
from ablate.sweep.raystart import load_scaled_s
from ablate.trial.runner import run_trial
from tests.conftest import REPO, SMALL, make_trial

# 128 pairs / batch 16 = 8 steps an epoch; 2 epochs; a report every 4 steps, a checkpoint every 4.
TRAINING = {"batch_size": 16, "log_every": 4, "epochs": 2, "checkpoint_every": 4}
STEPS = 16
QUALITY = ["reward_accuracy", "reward_margin", "chosen_avg_logp", "rejected_avg_logp", "oracle_win_rate",
           "gen_length", "train_loss"]  # fmt: skip


def cli_env(**extra) -> dict:
    return {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"), **extra}


def write_sweep(tmp_path: Path, cache_dir, name: str, **fields) -> Path:
    sweep = {**SMALL, "name": name, "storage": str(tmp_path / "results"), "cache_dir": str(cache_dir),
             "training": TRAINING, **fields}  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def results(trial_dir: Path) -> list[dict]:
    rows = []
    for line in (trial_dir / "result.json").read_text().splitlines():
        rows.append(json.loads(line))
    return rows


def final_row(trial_dir: Path) -> dict:
    return next(r for r in reversed(results(trial_dir)) if "status" in r)


def trial_dirs(sweep_dir: Path) -> dict[int, Path]:
    return {int(d.name[:3]): d for d in sweep_dir.iterdir() if d.is_dir() and d.name[:3].isdigit()}


def stop_tree(procs: list[psutil.Process]) -> None:
    """SIGKILL processes this test started (the driver and the local Ray it spawned), by pid."""
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


# --- the hook itself ---------------------------------------------------------------------------


def test_fault_spec_parses_and_refuses_typos():
    got = faults.parse("index=3,step=5,kind=raise; index=1, step=2, kind=nan")
    assert got == [faults.Fault(3, 5, "raise"), faults.Fault(1, 2, "nan")]
    for bad in ("index=1,step=2", "index=1,step=2,kind=explode", "index=x,step=2,kind=raise"):
        with pytest.raises(ValueError, match="ABLATE_FAULT"):
            faults.parse(bad)
    env = {faults.ENV: "index=0,step=5,kind=kill"}
    assert faults.for_trial(0, 0, env) == {5: "kill"}
    assert faults.for_trial(0, 4, env) == {}  # an attempt resumed from a checkpoint does not meet it again
    assert faults.for_trial(1, 0, env) == {}
    assert faults.parse("index=2,step=3,kind=hang") == [faults.Fault(2, 3, "hang")]


# --- divergence without Ray (exact values) -----------------------------------------------------


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_diverged_trial_stops_at_once_with_its_last_finite_metrics(small_spec, start, monkeypatch, kind):
    monkeypatch.setenv(faults.ENV, f"index=0,step=6,kind={kind}")
    cfg = make_trial(small_spec, start, "simpo", training=TRAINING)
    reports = []
    final = run_trial(cfg, reports.append)
    assert final["status"] == f"diverged: loss became {float(kind)} at step 6"
    assert final["diverged_at_step"] == 6 and final["steps"] == 5
    # Steps 5 was the last finite one: its loss is the last finite train_loss (the window since step 4).
    assert math.isfinite(final["train_loss"]) and math.isfinite(final["train_reward_accuracy"])
    assert [r["step"] for r in reports[:-1]] == [4]  # nothing reported after the divergence
    assert final["train_loss"] != reports[0]["train_loss"]
    assert "reward_accuracy" not in final  # not evaluated: the run stopped at once


# --- trial faults on a real local Ray: raise, NaN, SIGKILL of the worker -----------------------

FAULTS = "index=1,step=2,kind=raise; index=2,step=6,kind=nan; index=3,step=6,kind=kill"


@pytest.fixture(scope="module")
def fault_sweep(tmp_path_factory, cache_dir, start) -> dict:
    """Four identical SimPO trials (labels A-D, seed 0), run once through the CLI with faults:
    A none; B raises at step 2 (before its first checkpoint, so on every attempt); C's loss becomes
    NaN at step 6; D's worker SIGKILLs itself at step 6 (after the checkpoint at step 4)."""
    tmp = tmp_path_factory.mktemp("faults")
    path = write_sweep(
        tmp, cache_dir, "faults", max_failures=1,
        methods=[{"method": "simpo", "name": n} for n in "ABCD"],
    )  # fmt: skip
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "ablate.run", str(path)], capture_output=True, text=True, cwd=REPO,
        timeout=load_scaled_s(900), env=cli_env(ABLATE_FAULT=FAULTS),
    )  # fmt: skip
    return {"proc": proc, "dir": tmp / "results" / "faults", "tmp": tmp, "wall_s": time.time() - t0}


@pytest.mark.slow
def test_raising_trial_is_retried_then_recorded_as_errored_and_others_finish(fault_sweep):
    proc, trials = fault_sweep["proc"], trial_dirs(fault_sweep["dir"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 trials finished, 1 errored" in proc.stdout
    error = (trials[1] / "error.txt").read_text()
    # max_failures=1: the first attempt and one retry both failed, each with its traceback.
    assert error.count("Failure #") == 2 and "Failure # 2" in error
    assert error.count("InjectedFault: injected fault at step 2") == 2
    assert 'File "' in error and "ablate/faults.py" in error  # the traceback, down to the raise
    assert (trials[1] / "error.pkl").is_file()
    print(f"fault sweep (4 trials, 2 failing attempts of B, 1 of D): {fault_sweep['wall_s']:.1f}s")
    assert final_row(trials[0])["status"] == "finished" and final_row(trials[0])["steps"] == STEPS


@pytest.mark.slow
def test_nan_loss_on_ray_is_diverged_not_a_crash(fault_sweep):
    trials = trial_dirs(fault_sweep["dir"])
    final = final_row(trials[2])
    assert final["status"] == "diverged: loss became nan at step 6"
    assert final["steps"] == 5 and math.isfinite(final["train_loss"])
    assert not (trials[2] / "error.txt").exists()  # not a crash: no retry, no error


@pytest.mark.slow
def test_killed_worker_is_retried_from_its_checkpoint_to_the_configured_step_count(fault_sweep):
    trials = trial_dirs(fault_sweep["dir"])
    error = (trials[3] / "error.txt").read_text()
    assert error.count("Failure #") == 1 and "worker process has died" in error  # one SIGKILL, one retry
    final = final_row(trials[3])
    assert final["status"] == "finished" and final["steps"] == STEPS
    assert final["resumed_from_step"] == 4  # the checkpoint before the kill at step 6
    # Restored model, optimizer, scheduler and data order: the same result as the uninterrupted trial A.
    uninterrupted = final_row(trials[0])
    for k in QUALITY:
        assert final[k] == pytest.approx(uninterrupted[k], abs=1e-6), k


@pytest.mark.slow
def test_report_shows_diverged_and_errored_trials(fault_sweep):
    out = fault_sweep["tmp"] / "reports"
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.report", str(fault_sweep["dir"]), "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (out / "faults" / "report.md").read_text()
    assert "2 finished" in report and "1 diverged" in report and "1 errored" in report
    assert "diverged: loss became nan at step 6" in report
    assert "injected fault at step 2" in report


# --- storage: torn and garbage records ---------------------------------------------------------


@pytest.mark.slow
def test_analysis_skips_and_reports_unreadable_trials(fault_sweep, tmp_path):
    sweep = tmp_path / "faults"
    shutil.copytree(fault_sweep["dir"], sweep)
    trials = trial_dirs(sweep)
    params = trials[2] / "params.json"
    params.write_text(params.read_text()[:40])  # truncated mid-write
    (trials[1] / "params.json").write_bytes(b"\x00\xff garbage \x9c")  # not even text
    with (trials[3] / "result.json").open("a") as f:
        f.write('{"step": 17, "train_lo')  # a torn last line
    out = tmp_path / "reports"
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.report", str(sweep), "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (out / "faults" / "report.md").read_text()
    assert "2 unreadable" in report and "2 finished" in report
    assert report.count("params.json") >= 2


# --- the driver is SIGKILLed mid-sweep, then --resume ------------------------------------------


@pytest.mark.slow
def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path, cache_dir, start):
    path = write_sweep(
        tmp_path, cache_dir, "resume", max_concurrent=1, order="file",  # A runs first, then B (which hangs)
        methods=[{"method": "simpo", "name": n} for n in "AB"],
    )  # fmt: skip
    sweep_dir = tmp_path / "results" / "resume"
    log = (tmp_path / "driver.log").open("w")
    # B hangs before step 6 (after its checkpoint at step 4) until the test kills the driver: the kill
    # lands mid-sweep by construction, however fast or slow the machine. The resumed run has no fault.
    driver = subprocess.Popen(
        [sys.executable, "-m", "ablate.run", str(path)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        env=cli_env(ABLATE_FAULT="index=1,step=6,kind=hang"), start_new_session=True,
    )  # fmt: skip
    t0 = time.time()
    ours = [psutil.Process(driver.pid)]

    def b_reached_its_hang() -> bool:  # B reported its checkpoint at step 4
        for f in sweep_dir.glob("001-*/result.json"):
            for line in f.read_text().splitlines():
                try:
                    if json.loads(line).get("step") == 4:
                        return True
                except json.JSONDecodeError:  # a line being appended
                    continue
        return False

    try:
        deadline = time.time() + load_scaled_s(600)
        while not (list(sweep_dir.glob("000-*/final.json")) and b_reached_its_hang()):
            assert driver.poll() is None and time.time() < deadline, (tmp_path / "driver.log").read_text()
            ours += [p for p in ours[0].children(recursive=True) if p not in ours]
            time.sleep(0.1)
        ours += [p for p in ours[0].children(recursive=True) if p not in ours]
        os.kill(driver.pid, signal.SIGKILL)
        killed_at = time.time()
        reported = json.loads(next(sweep_dir.glob("000-*/final.json")).read_text())
    finally:
        stop_tree(ours)  # the driver, and the local Ray it started (left behind by a SIGKILL)
        log.close()
    assert not any(
        "status" in r for d in sweep_dir.glob("001-*") if (d / "result.json").is_file() for r in results(d)
    )  # B had not finished: the kill was mid-sweep

    proc = subprocess.run(
        [sys.executable, "-m", "ablate.run", str(path), "--resume"], capture_output=True, text=True,
        cwd=REPO, timeout=load_scaled_s(900), env=cli_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 trials finished, 0 errored" in proc.stdout
    trials = trial_dirs(sweep_dir)
    assert sorted(trials) == [0, 1]
    a = results(trials[0])
    final = final_row(trials[0])
    # Trial A: its reported metrics, unchanged, and no training step after the kill.
    assert {k: final[k] for k in reported} == reported
    late = [r for r in a if r.get("timestamp", 0) >= killed_at and "status" not in r]
    assert late == [], late
    # Whether Ray's last snapshot of the sweep saw A finish (then it is not restarted) or not (then
    # it is restarted and replays final.json), A's training rows are those of its one run.
    assert [r["step"] for r in a if "status" not in r] == [4, 8, 12, 16]
    replayed = final.get("replayed_final_record", False)
    b = final_row(trials[1])
    assert b["status"] == "finished" and b["steps"] == STEPS
    for k in QUALITY:  # same config and seed as A: the same result, interrupted or not
        assert b[k] == pytest.approx(final[k], abs=1e-6), k
    print(
        f"driver killed {killed_at - t0:.1f}s after start; A replayed its record: {replayed}; "
        f"B resumed from step {b.get('resumed_from_step', 0)}; resume took {time.time() - killed_at:.1f}s"
    )


# --- storage: a kill at any moment leaves the old file or the new one ---------------------------


def _killed_mid_write(path: Path, atomic: bool) -> list[str]:
    """Over a whole old state at ``path``, a forked writer saves a new one and is killed by the kernel
    when its write reaches byte N (a file size limit, SIGXFSZ: no Python code runs after it), for N
    spread over the whole write, from its first bytes to its last; return, per kill, what the file
    left behind holds: "old", "new" or "torn" (unreadable, or half of each)."""
    import io
    import resource

    import torch

    from ablate.cache import atomic_torch_save

    big = torch.zeros(1 << 20)  # 4 MB
    size = len((buf := io.BytesIO(), torch.save({"head": 1, "x": big, "tail": 1}, buf))[0].getvalue())
    held = []
    # (A path's archive names its records after the file, a file object's "archive": a few bytes apart.)
    for limit in [1, 100, 4096, *(size * k // 8 for k in range(1, 8)), size - 100]:
        torch.save({"head": 0, "x": big, "tail": 0}, path)
        pid = os.fork()
        if pid == 0:  # the child only serializes (no torch threads after fork)
            try:
                signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; by default it kills
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
                state = {"head": 1, "x": big, "tail": 1}
                atomic_torch_save(state, path) if atomic else torch.save(state, path)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXFSZ, (limit, status)  # mid-write
        try:
            state = torch.load(path, weights_only=True)
            held.append({(0, 0): "old", (1, 1): "new"}.get((state["head"], state["tail"]), "torn"))
        except Exception:
            held.append("torn")
    return held


def test_checkpoint_writes_survive_a_kill_at_any_moment(tmp_path):
    held = _killed_mid_write(tmp_path / "state.pt", atomic=True)
    assert held == ["old"] * len(held), held  # the new state never replaced it: each kill was mid-write
    # The control: the same kills tear a plain torch.save every time (so this test can see a torn file).
    assert _killed_mid_write(tmp_path / "plain.pt", atomic=False) == ["torn"] * len(held)
