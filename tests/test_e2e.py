"""The two commands end to end: a small sweep on a real local Ray, then the report on its output."""

import csv
import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO, SMALL

pytestmark = pytest.mark.slow


def run(*args, timeout=1800, **extra_env):
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"), **extra_env}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=timeout, env=env
    )


def test_sweep_then_report(tmp_path, cache_dir, start):
    sweep = {
        **SMALL,
        "name": "e2e",
        "storage": str(tmp_path / "results"),
        "cache_dir": str(cache_dir),
        "methods": [
            {"method": "simpo", "hparams": {"gamma": {"grid": [0.0, 1.0]}}},
            {"method": "simpo", "hparams": {"length_normalize": False}},
            {"method": "dpo", "reference": "online"},
        ],
        "seeds": [0, 1],
        "resources": {"cpus": 0.5},  # a fraction of a CPU: Ray runs 4 trials at once on 2 CPUs
    }
    path = tmp_path / "e2e.yaml"
    path.write_text(yaml.safe_dump(sweep))
    # The first four trials wait before their first step until all four have arrived (ablate.faults):
    # they finish only if Ray ran them at the same time, and fail (not hang) if it does not.
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    fault = ";".join(f"index={i},step=1,kind=rendezvous" for i in range(4))
    proc = run("-m", "ablate.run", str(path), ABLATE_FAULT=fault, ABLATE_RENDEZVOUS=str(rendezvous))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "8 trials finished, 0 errored" in proc.stdout
    trial_dirs = [d for d in (tmp_path / "results" / "e2e").iterdir() if (d / "result.json").is_file()]
    assert len(trial_dirs) == 8
    assert sorted(p.name for p in rendezvous.iterdir()) == ["0", "1", "2", "3"]
    finals = [json.loads((d / "final.json").read_text()) for d in sorted(trial_dirs)[:4]]
    started = [f["first_step_at"] - f["first_step_s"] for f in finals]
    assert max(started) < min(f["first_step_at"] for f in finals)  # all four had started before any step
    # Interleaved (the default) and recorded beside Ray's files, in the order Ray created the trials
    # (it numbers their ids as it creates them; a directory name starts with the trial's index).
    record = json.loads((tmp_path / "results" / "e2e" / "run_order.json").read_text())
    assert record["order"] == "interleaved"
    created = sorted(trial_dirs, key=lambda d: int(d.name.rsplit("_", 1)[1]))
    assert [int(d.name[:3]) for d in created] == [t["index"] for t in record["trials"]] != list(range(8))

    # A second run without --resume/--overwrite refuses to mix results.
    again = run("-m", "ablate.run", str(path))
    assert again.returncode == 2 and "--resume" in again.stderr

    out = tmp_path / "reports"
    proc = run("-m", "analysis.report", str(tmp_path / "results" / "e2e"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out / "e2e"
    for name in ("report.md", "report.html", "main.tex", "gamma.png", "efficiency.png", "length-logp.png"):
        assert (report / name).is_file(), name
    # the trials' per-response data reached storage
    assert all((d / "heldout.json").is_file() for d in trial_dirs)
    rows = list(csv.DictReader((report / "settings.csv").open()))
    got = {(r["label"], r["setting"]) for r in rows}
    assert got == {
        ("SimPO", "gamma=0.0"), ("SimPO", "gamma=1.0"), ("SimPO w/o LN", "length_normalize=False"), ("DPO", "default"),
    }  # fmt: skip
    for r in rows:
        assert r["seeds"] == "2"
        for metric in ("reward_accuracy", "oracle_win_rate", "gen_length", "runtime_s", "peak_memory_mb",
                       "peak_memory_growth_mb"):
            mean = float(r[f"{metric}_mean"])
            assert mean == mean and mean >= 0, (metric, r[f"{metric}_mean"])  # finite, not NaN


def test_report_without_results_exits_2(tmp_path):
    proc = run("-m", "analysis.report", str(tmp_path))
    assert proc.returncode == 2 and "no sweep results" in proc.stderr
