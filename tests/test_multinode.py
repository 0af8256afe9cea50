"""A real two-node Ray cluster on this machine: a head on 127.0.0.2 and a second node on 127.0.0.3
(loopback only, one logical CPU each, token authentication on with a throwaway token), a small
sweep submitted with ``--address``, trials placed on both nodes, every result in shared storage.

Both nodes are started with ``ray start --block`` in their own process group and their own
``--temp-dir``; the test stops exactly those processes (never ``ray stop``, which would stop every
Ray on the machine).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import yaml

from analysis.load import load_trials
from tests.conftest import REPO, SMALL

pytestmark = pytest.mark.slow

HEAD_IP, NODE_IP = "127.0.0.2", "127.0.0.3"
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_ports(taken: set[int]) -> list[str]:
    """Every port a node listens on, chosen free and distinct (``taken`` collects them across both
    nodes), so nothing collides with each other or with other Ray instances on this machine."""
    while True:  # a range of 100 worker ports of its own
        low = free_port() // 100 * 100
        if not taken & set(range(low, low + 100)):
            taken.update(range(low, low + 100))
            break

    def pick() -> int:
        port = next(p for p in iter(free_port, None) if p not in taken)
        taken.add(port)
        return port

    names = [
        "node-manager-port", "object-manager-port", "runtime-env-agent-port", "dashboard-agent-grpc-port",
        "dashboard-agent-listen-port", "metrics-export-port",
    ]  # fmt: skip
    return [*(f"--{n}={pick()}" for n in names), f"--min-worker-port={low}", f"--max-worker-port={low + 99}"]


class RayNode:
    """One ``ray start --block`` process (and everything it spawns), stopped on exit."""

    def __init__(self, args: list[str], env: dict, log: Path, temp_dir: str) -> None:
        self.log, self.temp_dir = log, temp_dir
        self.proc = subprocess.Popen(
            [RAY, "start", "--block", *args], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def wait_started(self, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if "Ray runtime started" in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        raise AssertionError(f"ray start did not come up:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # --block then stops the processes it started
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of this node's own process group
        except ProcessLookupError:
            pass
        self.proc.wait()


def leftover_pids(temp_dir: str) -> list[int]:
    """Processes whose command line names this test's Ray temp dir (so started by this test)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if temp_dir in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


WAIT_FOR_NODES = """
import sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
deadline = time.time() + 60
while sum(n["Alive"] for n in ray.nodes()) < int(sys.argv[2]):
    assert time.time() < deadline, ray.nodes()
    time.sleep(0.2)
"""


def wait_for_alive_nodes(address: str, env: dict, n: int) -> None:
    """Block until the cluster's GCS lists ``n`` alive nodes: a sweep submitted earlier could be
    placed before the second node has registered."""
    proc = subprocess.run(
        [sys.executable, "-c", WAIT_FOR_NODES, address, str(n)], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


@contextmanager
def two_node_cluster(tmp_path: Path):
    """A Ray head on 127.0.0.2 and a second node on 127.0.0.3 (one CPU each, token auth with a
    throwaway token, their own temp dir). Yields ``(address, env, node)``; on exit stops both nodes
    and any process of theirs that outlives them, and checks that none is left."""
    temp_dir = tempfile.mkdtemp(
        prefix="ablate-ray-", dir="/tmp"
    )  # short: Ray's socket paths have a length limit
    token = secrets.token_hex(16)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "PYTHONPATH": str(REPO)}
    gcs_port = free_port()
    taken = {gcs_port}
    common = ["--num-cpus=1", "--num-gpus=0", "--object-store-memory=100000000", "--disable-usage-stats",
              f"--temp-dir={temp_dir}"]  # fmt: skip
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
            wait_for_alive_nodes(f"{HEAD_IP}:{gcs_port}", env, 2)
            yield f"{HEAD_IP}:{gcs_port}", env, node
        finally:
            stack.close()
            deadline = time.time() + 10  # processes of this cluster that outlive the stop of their node
            while (leftovers := leftover_pids(temp_dir)) and time.time() < deadline:
                time.sleep(0.5)
            for pid in leftovers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(temp_dir, ignore_errors=True)
    assert not leftovers, leftovers


def test_sweep_spreads_over_two_nodes_and_lands_in_shared_storage(tmp_path, cache_dir, start):
    sweep = {
        **SMALL,
        "name": "multinode",
        "storage": str(tmp_path / "shared" / "results"),  # one path every node can reach
        "cache_dir": str(cache_dir),
        "methods": [{"method": "simpo", "hparams": {"gamma": {"grid": [0.0, 1.0]}}}],
        "seeds": [0, 1],
        # One trial per node at a time (each node has one CPU), and a fresh worker process per trial:
        # Tune stages the first two trials at once, so their workers are placed one on each node, and
        # without worker reuse a trial stays where it was placed. (With reuse, the head's warm worker
        # could take the second trial before the other node's worker had started: a race.)
        "resources": {"cpus": 1},
        "reuse_workers": False,
    }
    path = tmp_path / "multinode.yaml"
    path.write_text(yaml.safe_dump(sweep))

    with two_node_cluster(tmp_path) as (address, env, _node):
        proc = subprocess.run(
            [sys.executable, "-m", "ablate.run", str(path), "--address", address],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "4 trials finished, 0 errored" in proc.stdout

    sweep_dir = tmp_path / "shared" / "results" / "multinode"
    trial_dirs = [d for d in sweep_dir.iterdir() if (d / "params.json").is_file()]
    assert len(trial_dirs) == 4
    finals = []
    for d in trial_dirs:
        rows = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
        assert rows[-1]["status"] == "finished", d
        finals.append(rows[-1])
    placement = sorted((f["node_ip"], f["node_id"][:8]) for f in finals)
    print("trial placement (node ip, node id):", placement)
    assert {ip for ip, _ in placement} == {HEAD_IP, NODE_IP}
    assert len({node for _, node in placement}) == 2
    assert len({f["process_id"] for f in finals}) == 4  # reuse_workers: false, a fresh process per trial
    # The report reads the results from that storage, here through its URI as for s3:// or gs://.
    df = load_trials([sweep_dir])
    assert (df["status"] == "finished").sum() == 4
    report = subprocess.run(
        [sys.executable, "-m", "analysis.report", sweep_dir.as_uri(), "--out", str(tmp_path / "reports")],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    assert "4 trials: 4 finished" in (tmp_path / "reports" / "multinode" / "report.md").read_text()
