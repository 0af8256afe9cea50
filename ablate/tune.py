"""Ray Tune wiring: builds (or restores) the Tuner over a sweep's trial configs and runs it."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import tune

from ablate.trial import run_trial

TRIAL_KEY = "trial"


def trainable(config: dict) -> None:
    """The function Ray Tune runs for each trial."""
    run_trial(config[TRIAL_KEY], report=tune.report)


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
    reuse_actors: bool = True,
) -> SweepOutcome:
    """Run (or resume) the trials. ``reuse_actors``: a worker process runs trial after trial, so
    imports, the start point and the tokenized data are loaded once per worker, not per trial."""
    path = experiment_path(storage, name)
    wrapped = tune.with_resources(trainable, {"cpu": resources["cpus"], "gpu": resources["gpus"]})
    progress = Progress(len(trials), log)
    run_config = tune.RunConfig(
        name=name,
        storage_path=storage_uri(storage),
        failure_config=tune.FailureConfig(max_failures=max_failures),
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
                max_concurrent_trials=max_concurrent,
                reuse_actors=reuse_actors,
                trial_dirname_creator=trial_dirname,
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
