"""Ray Tune wiring: builds (or restores) the Tuner over a sweep's trial configs and runs it."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import tune

from ablate import checkpoint, distributed
from ablate.trial import run_trial

TRIAL_KEY = "trial"
FINAL_RECORD = "final.json"  # a trial's final metrics, written by the trial before it reports them
KEEP_CHECKPOINTS = 2  # per trial; Ray deletes older ones (and snapshots the sweep state that often)


def trainable(config: dict) -> None:
    """The function Ray Tune runs for each trial.

    Restores from the trial's latest checkpoint when Ray retries or resumes it. Before reporting its
    final metrics, a trial writes them to ``<trial dir>/final.json`` (atomically); a trial that
    starts and finds that record re-reports it instead of training again. This covers the window in
    which Ray's own record of the sweep (snapshotted every few seconds) is older than a trial's end:
    after a driver kill, ``--resume`` restarts such a trial, which then only replays its result."""
    final = read_from_trial_dir(FINAL_RECORD)
    if final is not None:
        tune.report({**final, "replayed_final_record": True})
        return
    resume = None
    if (ckpt := tune.get_checkpoint()) is not None:
        with ckpt.as_directory() as d:
            resume = checkpoint.load(d)

    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics: dict) -> None:
        if "status" in metrics:
            metrics = {**metrics, "node_id": metrics.get("node_id", node_id)}  # where the trial ran
            save_to_trial_dir(FINAL_RECORD, json.dumps(metrics, default=str).encode())
        tune.report(metrics)

    def report_checkpoint(metrics: dict, directory: str) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    if distributed.is_distributed(config[TRIAL_KEY]):  # Ray Train workers with DeepSpeed; starts over
        distributed.run_distributed_trial(config[TRIAL_KEY], report=report, save_artifact=save_to_trial_dir)
        return
    run_trial(
        config[TRIAL_KEY], report=report, save_artifact=save_to_trial_dir,
        report_checkpoint=report_checkpoint, resume=resume,
    )  # fmt: skip


def save_to_trial_dir(name: str, data: bytes) -> None:
    """Write a file into this trial's directory in storage (a local path or a URI), at once.

    Files in the trial's working directory reach storage only with ``SyncConfig(sync_artifacts=True)``
    and then on a timer (every 5 min by default, none forced at the trial's end), so a small result
    file goes straight through the storage filesystem instead: written under a temporary name, then
    moved, so a reader sees the whole file or none."""
    storage = tune.get_context().get_storage()
    fs, trial_dir = storage.storage_filesystem, storage.trial_fs_path
    fs.create_dir(trial_dir, recursive=True)
    tmp = f"{trial_dir}/.{name}.{os.getpid()}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, f"{trial_dir}/{name}")


def read_from_trial_dir(name: str) -> dict | None:
    """A JSON file of this trial's directory in storage; None if absent or unreadable (then: train)."""
    storage = tune.get_context().get_storage()
    try:
        with storage.storage_filesystem.open_input_stream(f"{storage.trial_fs_path}/{name}") as f:
            return json.loads(f.readall())
    except (FileNotFoundError, OSError, ValueError):
        return None


def trial_resources(resources: dict) -> dict:
    """What Tune reserves per trial: the whole trial, or for multi-worker trials only their driver."""
    if resources.get("workers", 1) > 1:
        return {"cpu": distributed.DRIVER_CPUS}
    return {"cpu": resources["cpus"], "gpu": resources["gpus"]}


def trial_dirname(trial) -> str:
    cfg = trial.config[TRIAL_KEY]
    label = re.sub(r"[^A-Za-z0-9]+", "-", cfg["label"]).strip("-").lower()
    return f"{cfg['index']:03d}-{label}-s{cfg['seed']}-{trial.trial_id}"


def storage_uri(storage: str) -> str:
    """Ray Tune wants an absolute path or a URI."""
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def experiment_path(storage: str, name: str) -> str:
    return f"{storage_uri(storage).rstrip('/')}/{name}"


class Progress(tune.Callback):
    """One line per finished or errored trial: done/running/pending/errored and elapsed time."""

    def __init__(self, total: int, log=print) -> None:
        self.total, self.log, self.t0 = total, log, time.time()
        self.done = self.errored = 0

    def _line(self, trials, what: str) -> None:
        running = sum(t.status == "RUNNING" for t in trials)
        pending = self.total - self.done - self.errored - running
        elapsed = time.strftime("%M:%S", time.gmtime(time.time() - self.t0))
        self.log(
            f"[{self.done} done, {running} running, {max(pending, 0)} pending, {self.errored} errored, {elapsed}] {what}"
        )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        cfg, res = trial.config[TRIAL_KEY], trial.last_result or {}
        shown = ", ".join(
            f"{k}={res[k]:.3f}" for k in ("reward_accuracy", "oracle_win_rate", "gen_length") if k in res
        )
        self._line(
            trials, f"{cfg['label']} {cfg['setting']} seed={cfg['seed']}: {res.get('status', '?')} {shown}"
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.errored += 1
        cfg = trial.config[TRIAL_KEY]
        self._line(trials, f"{cfg['label']} {cfg['setting']} seed={cfg['seed']}: ERROR (see {trial.path})")


@dataclass
class SweepOutcome:
    path: str
    finished: int
    errored: int
    results: list[dict]


def connect(address: str | None) -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``, as under ``ray job submit``); else start a
    local Ray instance. Never attach silently to some other cluster running on this machine."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)


def run(
    trials: list[dict],
    name: str,
    storage: str,
    resources: dict,
    max_concurrent: int | None,
    max_failures: int,
    resume: bool = False,
    log=print,
) -> SweepOutcome:
    path = experiment_path(storage, name)
    # Keeping KEEP_CHECKPOINTS per trial makes Ray snapshot the sweep state after that many checkpoints
    # (so it never points at a deleted one); with short trials it then warns about frequent snapshots.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    wrapped = tune.with_resources(trainable, trial_resources(resources))
    progress = Progress(len(trials), log)
    run_config = tune.RunConfig(
        name=name,
        storage_path=storage_uri(storage),
        failure_config=tune.FailureConfig(max_failures=max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
        verbose=0,
        callbacks=[progress],
    )
    if resume:
        tuner = tune.Tuner.restore(path, wrapped, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            wrapped,
            param_space={TRIAL_KEY: tune.grid_search(trials)},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=max_concurrent, reuse_actors=False, trial_dirname_creator=trial_dirname
            ),
            run_config=run_config,
        )
    grid = tuner.fit()
    results = []
    for r in grid:
        row = {
            "config": r.config[TRIAL_KEY],
            "metrics": r.metrics or {},
            "error": repr(r.error) if r.error else None,
        }
        results.append(row)
    errored = sum(1 for r in results if r["error"])
    return SweepOutcome(path=path, finished=len(results) - errored, errored=errored, results=results)


def exists(storage: str, name: str) -> bool:
    return tune.Tuner.can_restore(experiment_path(storage, name))
