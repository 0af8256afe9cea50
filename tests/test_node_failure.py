"""A node of a two-node Ray cluster dies mid-trial: its trial finishes on the other node from its
last checkpoint, and the final step count equals the configured one (the reliability issue's
cluster case). Reuses the two-node set-up of tests/test_multinode.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import REPO, SMALL
from tests.test_multinode import HEAD_IP, NODE_IP, two_node_cluster

pytestmark = pytest.mark.slow


def trial_rows(sweep_dir) -> dict[str, list[dict]]:
    out = {}
    for d in sweep_dir.iterdir() if sweep_dir.is_dir() else []:
        f = d / "result.json"
        if f.is_file():
            rows = []
            for line in f.read_text(errors="replace").splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
            out[d.name] = rows
    return out


def test_a_dead_node_s_trial_finishes_on_the_other_node_from_its_checkpoint(tmp_path, cache_dir, start):
    steps_per_trial = 4 * -(-3000 // SMALL["training"]["batch_size"])
    sweep = {
        **SMALL,
        "name": "nodefail",
        "storage": str(tmp_path / "shared" / "results"),
        "cache_dir": str(cache_dir),
        "methods": [{"method": "simpo", "hparams": {"gamma": {"grid": [0.0, 1.0]}}}],
        "data": {"task": {**SMALL["data"]["task"], "n_train": 3000}},
        "training": {**SMALL["training"], "epochs": 4, "checkpoint_every": 10},
        "resources": {"cpus": 1},  # one trial per node
        "reuse_workers": False,  # so the second trial stays on the second node (tests/test_multinode.py)
        "max_failures": 3,
    }
    path = tmp_path / "nodefail.yaml"
    path.write_text(yaml.safe_dump(sweep))
    sweep_dir = tmp_path / "shared" / "results" / "nodefail"

    with two_node_cluster(tmp_path) as (address, env, node):
        with (tmp_path / "driver.log").open("w") as log:
            driver = subprocess.Popen(
                [sys.executable, "-m", "ablate.run", str(path), "--address", address],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
            )  # fmt: skip
            try:
                # Wait until the trial on the second node has reported a checkpoint step, then kill that node.
                deadline, victim = time.time() + 240, None
                while time.time() < deadline and victim is None and driver.poll() is None:
                    for name, rows in trial_rows(sweep_dir).items():
                        on_node = [r for r in rows if r.get("node_ip") == NODE_IP and r.get("step", 0) >= 10]
                        if on_node and not any("status" in r for r in rows):
                            victim = name
                    time.sleep(0.3)
                assert victim, (
                    "no trial reported a checkpoint on the second node:\n"
                    + (tmp_path / "driver.log").read_text()[-3000:]
                )
                os.killpg(node.proc.pid, signal.SIGKILL)  # the node dies: raylet, workers and all
                driver.wait(timeout=400)
            finally:
                if driver.poll() is None:
                    driver.kill()
                    driver.wait()
    out = (tmp_path / "driver.log").read_text()
    assert driver.returncode == 0, out[-3000:]
    assert "2 trials finished, 0 errored" in out, out[-3000:]
    rows = trial_rows(sweep_dir)[victim]
    final = rows[-1]
    print(
        "victim trial:",
        victim,
        "resumed from step",
        final.get("resumed_from_step"),
        "on",
        final.get("node_ip"),
    )
    assert final["status"] == "finished"
    assert final["steps"] == steps_per_trial  # the configured count, not more, not fewer
    assert final.get("resumed_from_step", 0) >= 10  # continued from its checkpoint, not from scratch
    assert final["node_ip"] == HEAD_IP  # finished on the surviving node
