"""A node of a two-node Ray cluster dies mid-trial: its trial finishes on the other node from its
last checkpoint, and the final step count equals the configured one (the reliability issue's
cluster case). Reuses the two-node set-up of tests/test_multinode.py."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack

import pytest
import yaml

from tests.conftest import REPO, SMALL
from tests.test_multinode import HEAD_IP, NODE_IP, RayNode, free_port, leftover_pids, node_ports

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
    temp_dir = tempfile.mkdtemp(prefix="ablate-ray-", dir="/tmp")
    token = secrets.token_hex(16)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "PYTHONPATH": str(REPO)}
    gcs_port = free_port()
    taken = {gcs_port}
    common = ["--num-cpus=1", "--num-gpus=0", "--object-store-memory=100000000", "--disable-usage-stats",
              f"--temp-dir={temp_dir}"]  # fmt: skip
    # 4 epochs of 3000 pairs: several seconds of training, so the node dies while its trial runs.
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
        "max_failures": 3,
    }
    path = tmp_path / "nodefail.yaml"
    path.write_text(yaml.safe_dump(sweep))
    sweep_dir = tmp_path / "shared" / "results" / "nodefail"

    with ExitStack() as stack:
        try:
            head = RayNode(
                ["--head", f"--node-ip-address={HEAD_IP}", f"--port={gcs_port}", "--include-dashboard=false",
                 *common, *node_ports(taken)],
                env, tmp_path / "head.log", temp_dir,
            )  # fmt: skip
            stack.callback(head.stop)
            head.wait_started()
            node = RayNode(
                [f"--address={HEAD_IP}:{gcs_port}", f"--node-ip-address={NODE_IP}", *common, *node_ports(taken)],
                env, tmp_path / "node.log", temp_dir,
            )  # fmt: skip
            stack.callback(node.stop)
            node.wait_started()

            log = (tmp_path / "driver.log").open("w")
            driver = subprocess.Popen(
                [sys.executable, "-m", "ablate.run", str(path), "--address", f"{HEAD_IP}:{gcs_port}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
            )  # fmt: skip
            stack.callback(lambda: driver.poll() is None and driver.kill())
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
            log.close()
        finally:
            stack.close()
            deadline = time.time() + 10
            while (leftovers := leftover_pids(temp_dir)) and time.time() < deadline:
                time.sleep(0.5)
            for pid in leftovers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(temp_dir, ignore_errors=True)
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
