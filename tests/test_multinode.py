"""A real two-node Ray cluster on this machine: a head on 127.0.0.2 and a second node on 127.0.0.3
(loopback only, one logical CPU each, token authentication on with a throwaway token), a small
sweep submitted with ``--address``, trials placed on both nodes, every result in shared storage;
then the second node dies mid-trial and its trial finishes on the head from its checkpoint. Both
tests share one cluster (started once for this file, each node started again if its start fails).

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
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import yaml

from ablate.readout.loader import load_trials
from ablate.sweep.raystart import load_scaled_s
from tests.conftest import REPO, SMALL
from tests.infra import Service, StartFailed, free_port, log_says, start_service

pytestmark = pytest.mark.slow

HEAD_IP, NODE_IP = "127.0.0.2", "127.0.0.3"
RAY = str(Path(sys.executable).parent / "ray")


def node_ports(taken: set[int]) -> list[str]:
    """Every port a node listens on, chosen free and distinct (``taken`` collects them across both
    nodes), so nothing collides with each other or with other Ray instances on this machine."""
    while True:  # a range of 100 worker ports of its own
        low = free_port("") // 100 * 100
        if not taken & set(range(low, low + 100)):
            taken.update(range(low, low + 100))
            break

    def pick() -> int:
        port = next(p for p in iter(lambda: free_port(""), None) if p not in taken)
        taken.add(port)
        return port

    names = [
        "node-manager-port", "object-manager-port", "runtime-env-agent-port", "dashboard-agent-grpc-port",
        "dashboard-agent-listen-port", "metrics-export-port",
    ]  # fmt: skip
    return [*(f"--{n}={pick()}" for n in names), f"--min-worker-port={low}", f"--max-worker-port={low + 99}"]


def ray_node(args: list[str], env: dict, log: Path) -> Service:
    """One ``ray start --block`` process (and everything it spawns; SIGINT stops its node)."""
    return Service([RAY, "start", "--block", *args], log, log_says("Ray runtime started"), env=env,
                   stop_signal=signal.SIGINT)  # fmt: skip


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
deadline = time.time() + float(sys.argv[3])
while sum(n["Alive"] for n in ray.nodes()) < int(sys.argv[2]):
    assert time.time() < deadline, ray.nodes()
    time.sleep(0.2)
"""


def wait_for_alive_nodes(address: str, env: dict, n: int, timeout_s: float) -> None:
    """Block until the cluster's GCS lists ``n`` alive nodes (a sweep submitted earlier could be
    placed before the second node has registered); StartFailed if it does not within ``timeout_s``."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", WAIT_FOR_NODES, address, str(n), str(timeout_s)], env=env,
            capture_output=True, text=True, timeout=2 * timeout_s,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:
        raise StartFailed(f"{n} nodes not alive after {2 * timeout_s:.0f}s") from e
    if proc.returncode != 0:
        raise StartFailed(f"{n} nodes not alive:\n{proc.stderr[-3000:]}")


@contextmanager
def two_node_cluster(tmp_path: Path):
    """A Ray head on 127.0.0.2 and a second node on 127.0.0.3 (one CPU each, token auth with a
    throwaway token, their own temp dir), each started again if its start fails (tests/infra.py).
    Yields ``(address, env, node)``; on exit stops both nodes and any process of theirs that
    outlives them, and checks that none is left."""
    temp_dir = tempfile.mkdtemp(
        prefix="ablate-ray-", dir="/tmp"
    )  # short: Ray's socket paths have a length limit
    token = secrets.token_hex(16)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "PYTHONPATH": str(REPO)}
    common = ["--num-cpus=1", "--num-gpus=0", "--object-store-memory=100000000", "--disable-usage-stats",
              f"--temp-dir={temp_dir}"]  # fmt: skip
    taken: set[int] = set()
    address = ""

    def head(attempt: int) -> Service:
        nonlocal address
        gcs_port = free_port("")
        taken.add(gcs_port)
        address = f"{HEAD_IP}:{gcs_port}"
        return ray_node(
            ["--head", f"--node-ip-address={HEAD_IP}", f"--port={gcs_port}", "--include-dashboard=false",
             *common, *node_ports(taken)],
            env, tmp_path / f"head-{attempt}.log",
        )  # fmt: skip

    def node(attempt: int) -> Service:
        return ray_node([f"--address={address}", f"--node-ip-address={NODE_IP}", *common, *node_ports(taken)],
                        env, tmp_path / f"node-{attempt}.log")  # fmt: skip

    with ExitStack() as stack:
        try:
            stack.callback(start_service(head, 60, "Ray head").stop)
            second = start_service(
                node, 60, "second Ray node", then=lambda _, timeout_s: wait_for_alive_nodes(address, env, 2, timeout_s)
            )  # fmt: skip
            stack.callback(second.stop)
            yield address, env, second
        finally:
            stack.close()
            # Processes of this cluster that outlive the stop of their node (a busy machine: slower).
            deadline = time.time() + load_scaled_s(10)
            while (leftovers := leftover_pids(temp_dir)) and time.time() < deadline:
                time.sleep(0.5)
            for pid in leftovers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(temp_dir, ignore_errors=True)
    assert not leftovers, leftovers


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One two-node cluster for this file's tests (two Ray starts instead of two per test); the
    node-failure test, which kills the second node, runs last."""
    with two_node_cluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


def test_sweep_spreads_over_two_nodes_and_lands_in_shared_storage(cluster, tmp_path, cache_dir, start):
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

    address, env, _node = cluster
    proc = subprocess.run(
        [sys.executable, "-m", "ablate.run", str(path), "--address", address],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=load_scaled_s(900),
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
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    assert "4 trials: 4 finished" in (tmp_path / "reports" / "multinode" / "report.md").read_text()


ON_RAY = """import json, sys
import ray
from ablate.onpolicy import build as onpolicy
from ablate.onpolicy.ray_tasks import ray_shards
onpolicy.Sampler = None  # this driver cannot build a shard itself: every shard comes from a Ray task
ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
path, _ = onpolicy.build(onpolicy.Job.of_trial(json.loads(sys.argv[2])), log=print, shard_map=ray_shards)
print("built", path)
"""


def test_on_policy_shards_built_by_ray_tasks_are_the_bytes_of_a_local_build(cluster, small_spec, start, tmp_path):
    """On a cluster (``--address``) an on-policy build's shards are sampled and judged by Ray tasks and
    streamed back to the driver, which writes them: the same files, byte for byte, as a local build."""
    from ablate.onpolicy import build as onpolicy
    from tests.test_onpolicy import trial_for

    trial = trial_for(small_spec, start, tmp_path / "local")
    local, _ = onpolicy.build(onpolicy.Job.of_trial(trial), log=lambda *_: None)
    address, env, _node = cluster
    on_ray = {**trial, "cache_dir": str(tmp_path / "ray")}
    proc = subprocess.run([sys.executable, "-c", ON_RAY, address, json.dumps(on_ray)], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=load_scaled_s(900))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    built = Path(proc.stdout.split("built ", 1)[1].strip())
    assert built != local and built.name == local.name
    shards = sorted(p.name for p in local.parent.glob("shard-*.jsonl"))
    assert len(shards) == 3 and sorted(p.name for p in built.parent.glob("shard-*.jsonl")) == shards
    for name in [*shards, local.name]:
        assert (built.parent / name).read_bytes() == (local.parent / name).read_bytes(), name


# --- a node dies mid-trial (runs last: it kills this file's second node) -------------------------


def trial_rows(sweep_dir: Path) -> dict[str, list[dict]]:
    """Each trial's result rows so far, by its directory name (a line being appended is skipped)."""
    out = {}
    for f in sweep_dir.glob("*/result.json"):
        rows = []
        for line in f.read_text(errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        out[f.parent.name] = rows
    return out


def test_a_dead_node_s_trial_finishes_on_the_other_node_from_its_checkpoint(cluster, tmp_path, cache_dir, start):  # noqa: E501
    """The reliability issue's cluster case: the second node's Ray processes are SIGKILLed while its
    trial holds a checkpoint; the trial finishes on the head from that checkpoint, with the configured
    step count. Both trials hang at step 10 (after their checkpoint at step 8) until the test acts, so
    the kill lands mid-trial by construction, on any machine; the head's trial is then released by a
    SIGKILL of its worker (a retried attempt from a checkpoint meets no fault again)."""
    address, env, node = cluster
    steps_per_trial = 3 * SMALL["data"]["task"]["n_train"] // SMALL["training"]["batch_size"]
    sweep = {
        **SMALL,
        "name": "nodefail",
        "storage": str(tmp_path / "shared" / "results"),
        "cache_dir": str(cache_dir),
        "methods": [{"method": "simpo", "hparams": {"gamma": {"grid": [0.0, 1.0]}}}],
        "training": {**SMALL["training"], "epochs": 3, "checkpoint_every": 8},
        "resources": {"cpus": 1},  # one trial per node
        "reuse_workers": False,  # so the second trial stays on the second node (as above)
        "max_failures": 3,
    }
    path = tmp_path / "nodefail.yaml"
    path.write_text(yaml.safe_dump(sweep))
    sweep_dir = tmp_path / "shared" / "results" / "nodefail"
    hang = "index=0,step=10,kind=hang; index=1,step=10,kind=hang"

    with (tmp_path / "driver.log").open("w") as log:
        driver = subprocess.Popen(
            [sys.executable, "-m", "ablate.run", str(path), "--address", address],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            env={**env, "ABLATE_FAULT": hang, "TUNE_GLOBAL_CHECKPOINT_S": "1"},  # rows reach storage each second
        )  # fmt: skip
        try:
            deadline, at_checkpoint = time.time() + load_scaled_s(600), {}
            while time.time() < deadline and len(at_checkpoint) < 2 and driver.poll() is None:
                at_checkpoint = {
                    name: row for name, rows in trial_rows(sweep_dir).items() for row in rows if row.get("step") == 8
                }  # fmt: skip
                time.sleep(0.3)
            assert len(at_checkpoint) == 2, (
                "the trials did not both reach their checkpoint:\n" + (tmp_path / "driver.log").read_text()[-3000:]
            )
            by_ip = {row["node_ip"]: (name, row) for name, row in at_checkpoint.items()}
            assert set(by_ip) == {HEAD_IP, NODE_IP}, at_checkpoint
            victim = by_ip[NODE_IP][0]
            os.killpg(node.proc.pid, signal.SIGKILL)  # the node dies: raylet, workers and all
            os.kill(by_ip[HEAD_IP][1]["pid"], signal.SIGKILL)  # the head's hanging trial, by its pid
            driver.wait(timeout=load_scaled_s(900))
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    out = (tmp_path / "driver.log").read_text()
    assert driver.returncode == 0, out[-3000:]
    assert "2 trials finished, 0 errored" in out, out[-3000:]
    final = trial_rows(sweep_dir)[victim][-1]
    print(f"victim trial: {victim} resumed from step {final.get('resumed_from_step')} on {final.get('node_ip')}")
    assert final["status"] == "finished"
    assert final["steps"] == steps_per_trial  # the configured count, not more, not fewer
    assert final["resumed_from_step"] == 8  # continued from its checkpoint, not from scratch
    assert final["node_ip"] == HEAD_IP  # finished on the surviving node
