"""Ray Tune wiring: builds (or restores) the Tuner over a sweep's trial configs and runs it."""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import tune
from ray.tune.search import Searcher

from ablate import faults
from ablate import spec as spec_mod
from ablate.cache import cache_key
from ablate.records import TRIAL_KEY
from ablate.sweep import order as order_mod
from ablate.sweep import raystart, sweepdir
from ablate.sweep.plan import SweepPlan
from ablate.trial import checkpoint
from ablate.trial import config as trial_config
from ablate.trial import memory_probe as memory
from ablate.trial.backends import deepspeed as deepspeed_backend
from ablate.trial.record import (
    FINAL_RECORD,
    earlier_attempt,
    read_from_trial_dir,
    replay,
    replay_from,
    save_to_trial_dir,
)
from ablate.trial.runner import run_trial

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
    if config[TRIAL_KEY].get("replay") and (final := replay(config[TRIAL_KEY]["replay"])) is not None:
        tune.report(final)
        return
    if (earlier := earlier_attempt(config[TRIAL_KEY])) and (final := replay_from(*earlier)) is not None:
        tune.report(final)
        return
    resume = None
    if (ckpt := tune.get_checkpoint()) is not None:
        with ckpt.as_directory() as d:
            resume = checkpoint.load(d)

    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics: dict) -> None:
        if "status" in metrics:
            metrics = {**metrics, "node_id": metrics.get("node_id", node_id)}  # where the trial ran
            # record_id: which write this is (a record is written once: a replay keeps it); trial_key:
            # which trial it is, whatever folder Ray gives the trial.
            metrics["record_id"], metrics["trial_key"] = uuid.uuid4().hex, cache_key(config[TRIAL_KEY])
            save_to_trial_dir(FINAL_RECORD, json.dumps(metrics, default=str).encode())
        tune.report(metrics)

    def report_checkpoint(metrics: dict, directory: str) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    cfg = trial_config.parse(config[TRIAL_KEY])
    if cfg.distributed:  # Ray Train workers with DeepSpeed; a retry starts over
        deepspeed_backend.run_distributed_trial(cfg, report=report, save_artifact=save_to_trial_dir)
        return
    run_trial(cfg, report=report, save_artifact=save_to_trial_dir, report_checkpoint=report_checkpoint, resume=resume)


def trial_resources(plan: SweepPlan) -> dict:
    """What Tune reserves per trial: the whole trial, or for DeepSpeed trials only their driver."""
    if plan.spec.uses_deepspeed:
        return {"cpu": deepspeed_backend.DRIVER_CPUS}
    return {"cpu": plan.spec.resources.cpus, "gpu": plan.spec.resources.gpus}


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
    """A line per finished, stopped or errored trial (and every ``every_s`` seconds otherwise) with the
    sweep's trials done/running/pending/errored and the elapsed time. Counts come from Tune's trial
    states, so a resumed sweep starts from what its storage already holds."""

    def __init__(self, total: int, log=print, every_s: float = 60.0) -> None:
        self.total, self.log, self.every_s = total, log, every_s
        self.t0 = self.last = time.time()

    def counts(self, trials, ending=None, as_status: str = "") -> dict[str, int]:
        """Trials by state; ``ending`` (a trial Tune is finishing right now) counts as ``as_status``."""
        status = Counter(as_status if t is ending else t.status for t in trials)
        done, errored, running = status["TERMINATED"], status["ERROR"], status["RUNNING"]
        return {
            "done": done,
            "running": running,
            "pending": max(self.total - done - errored - running, 0),
            "errored": errored,
        }

    def _line(self, trials, what: str, ending=None, as_status: str = "") -> None:
        self.last = time.time()
        c = self.counts(trials, ending, as_status)
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.time() - self.t0))
        self.log(
            f"[{c['done']}/{self.total} done, {c['running']} running, {c['pending']} pending, "
            f"{c['errored']} errored, {elapsed}] {what}"
        )

    def on_step_end(self, iteration, trials, **info) -> None:
        if time.time() - self.last >= self.every_s:
            self._line(trials, "...")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        cfg, res = trial.config[TRIAL_KEY], trial.last_result or {}
        shown = ", ".join(
            f"{k}={res[k]:.3f}" for k in ("reward_accuracy", "oracle_win_rate", "gen_length") if k in res
        )
        status = res.get("status") or f"stopped early at step {res.get('step', '?')}"
        self._line(
            trials,
            f"{cfg['label']} {cfg['setting']} seed={cfg['seed']}: {status} {shown}",
            trial,
            "TERMINATED",
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        cfg = trial.config[TRIAL_KEY]
        self._line(
            trials,
            f"{cfg['label']} {cfg['setting']} seed={cfg['seed']}: ERROR (see {trial.path})",
            trial,
            "ERROR",
        )


def search_domain(space: spec_mod.Space):
    """The Ray Tune search space of one sweep-file space (random / optuna search)."""
    low_high = space.values
    if space.kind == "choice":
        return tune.choice(list(space.values))
    if space.kind == "uniform":
        return tune.uniform(*low_high)
    if space.kind == "loguniform":
        return tune.loguniform(*low_high)
    if space.kind == "randint":
        return tune.randint(low_high[0], low_high[1] + 1)  # the sweep file's high end is included
    raise ValueError(f"a {space.kind} space is enumerated by grid search, not sampled")


class SweepSearcher(Searcher):
    """Random or Optuna search over a sweep's method entries: one Ray Tune ``OptunaSearch`` per entry
    with spaces (Optuna's RandomSampler or TPESampler), entries interleaved (``spec.search_order``).

    It suggests whole trial configs, made by ``ablate.spec.sampled_trial`` like grid trials, so each
    trial's params.json is the plain dict that determines it. Its state, the Optuna studies included,
    is pickled by Tune with the experiment state into the sweep's storage (``searcher-state-*.pkl``),
    so ``--resume`` continues the same studies instead of starting new ones."""

    def __init__(self, plan: SweepPlan) -> None:
        spec = plan.spec
        super().__init__(metric=spec.metric, mode=spec.mode)
        self._spec, self._extra = spec, plan.trial_extra
        self._plan = plan.search
        self._order = spec_mod.search_order(self._plan)
        self._studies = {j: self._study(j, e) for j, e in enumerate(self._plan) if e.spaces}
        self._next = 0
        self._live: dict[str, int] = {}  # trial id -> plan position

    @property
    def total(self) -> int:
        return len(self._order)

    def _study(self, j: int, entry: spec_mod.SearchEntry):
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        seed = self._spec.search_seed + j
        if self._spec.search == "random":
            sampler = optuna.samplers.RandomSampler(seed=seed)
        else:  # TPE; with a small budget, fewer random start-up trials than Optuna's 10
            startup = min(10, max(2, entry.trials // 3))
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
        space = OptunaSearch.convert_search_space({p: search_domain(s) for p, s in entry.spaces.items()})
        return OptunaSearch(space=space, metric=self._spec.metric, mode=self._spec.mode, sampler=sampler)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metric, mode and spaces all come from the sweep file

    def suggest(self, trial_id: str) -> dict | None:
        if self._next >= len(self._order):
            return Searcher.FINISHED
        j, sample_number = self._order[self._next]
        sample = {}
        if j in self._studies:
            sample = self._studies[j].suggest(trial_id)
            if sample is None:
                return None
        trial = spec_mod.sampled_trial(self._spec, self._plan[j], sample, sample_number, self._next)
        self._next += 1
        self._live[trial_id] = j
        return {TRIAL_KEY: {**trial, **self._extra}}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        study = self._studies.get(self._live.get(trial_id, -1))
        if study is not None and self._spec.metric in result:  # training rows lack held-out metrics
            study.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        # A trial stopped early reports its last held-out value; without one Optuna records it as pruned.
        study = self._studies.get(self._live.pop(trial_id, -1))
        if study is not None:
            study.on_trial_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__.copy(), f)

    def restore(self, checkpoint_path: str) -> None:
        # Trusted: this process wrote it into the sweep's own storage, as Ray writes tuner.pkl there
        # (which Tuner.restore unpickles anyway); never a user-supplied file.
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


def make_scheduler(plan: SweepPlan):
    """ASHA on a metric trials report during training, with the training step as its clock."""
    s = plan.scheduler
    if s is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="step",
        metric=s.metric,
        mode=s.mode,
        grace_period=s.grace_period,
        reduction_factor=s.reduction_factor,
        max_t=10**6,  # no cap: a trial's step count is only known once its data are loaded
        stop_last_trials=False,
    )


@dataclass
class SweepOutcome:
    path: str
    finished: int
    errored: int
    results: list[dict]
    stopped: int = 0  # by the early-stopping scheduler


def connect(address: str | None) -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``, as under ``ray job submit``); else start a
    local Ray instance. Never attach silently to some other cluster running on this machine."""
    if ray.is_initialized():
        return
    joins = address is not None  # --address: the cluster's workers do not inherit this environment
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    # Ray merges these into a job's own runtime env per variable; one the driver's environment sets
    # already (the user's choice, or a job's runtime env) is left alone, so the two cannot conflict.
    env = {k: v for k, v in memory.WORKER_ENV.items() if k not in os.environ}
    env.update(faults.worker_env() if joins else {})  # the testing hook, on a cluster too

    def init() -> None:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": env} if env else None)  # fmt: skip
        except Exception as e:
            ray.shutdown()  # whatever half of it was set up, so that the next attempt starts clean
            if address == "local" and raystart.is_start_failure(e):
                print(f"local Ray did not start; its logs: {raystart.latest_session_logs()}", file=sys.stderr)
            raise

    if address != "local":  # joining a cluster: its failure is the cluster's, reported as it is
        init()
        return
    raystart.retry_start(init, log=lambda line: print(line, file=sys.stderr, flush=True), what="local Ray")


def run(plan: SweepPlan, resume: bool = False, log=print) -> SweepOutcome:
    """Run (or with ``resume`` continue) a sweep's plan: its grid trials, or the draws of its search.
    With ``reuse_workers`` (the default) a worker process runs trial after trial, so imports, the
    start point and the tokenized data are loaded once per worker, not per trial."""
    spec = plan.spec
    path = experiment_path(spec.storage, spec.name)
    # Keeping KEEP_CHECKPOINTS per trial makes Ray snapshot the sweep state after that many checkpoints
    # (so it never points at a deleted one); with short trials it then warns about frequent snapshots.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # ablate.spec checks every metric name before launch; trials report held-out metrics only on some
    # rows, which Tune's per-result check would reject.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    wrapped = tune.with_resources(trainable, trial_resources(plan))
    searcher = SweepSearcher(plan) if plan.search else None
    run_config = tune.RunConfig(
        name=spec.name,
        storage_path=storage_uri(spec.storage),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
        verbose=0,
        callbacks=[Progress(plan.total, log), *tracking_callbacks(plan, path)],  # trackers: ablate/tracking/
    )
    sweepdir.write_marker(path, spec.name)  # a stage's folder too: ablate's own (--overwrite)
    if resume:  # the order was recorded when the sweep started
        tuner = tune.Tuner.restore(path, wrapped, resume_unfinished=True, resume_errored=True)
    else:
        order_mod.write_record(path, plan.run_order())
        tuner = tune.Tuner(
            wrapped,
            param_space={} if searcher else {TRIAL_KEY: tune.grid_search(plan.trials)},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=spec.max_concurrent,
                reuse_actors=spec.reuse_workers,
                trial_dirname_creator=trial_dirname,
                search_alg=searcher,
                num_samples=plan.total if searcher else 1,
                scheduler=make_scheduler(plan),
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
    stopped = sum(1 for r in results if not r["error"] and "status" not in r["metrics"])
    return SweepOutcome(
        path=path,
        finished=len(results) - errored - stopped,
        errored=errored,
        results=results,
        stopped=stopped,
    )


def tracking_callbacks(plan: SweepPlan, experiment_path: str) -> list:
    """The Ray Tune callbacks of the sweep's ``tracking`` section; none (and no tracker imported) when it
    asks for nothing."""
    if not plan.spec.tracking.any:
        return []
    from ablate.tracking.callbacks import callbacks

    return callbacks(plan, experiment_path)


def delete_experiment(storage: str, name: str) -> None:
    """Remove what ablate and Ray Tune wrote of a sweep, on local disk or behind a URI (through pyarrow's
    file systems, as Tune); anything else in its directory stays (``ablate.sweep.sweepdir``)."""
    sweepdir.delete_known(experiment_path(storage, name))


def exists(storage: str, name: str) -> bool:
    return tune.Tuner.can_restore(experiment_path(storage, name))
