"""Ray Tune's own tracker callbacks (``MLflowLoggerCallback``, ``WandbLoggerCallback``,
``TBXLoggerCallback``), set up for a sweep: each keeps Ray's life cycle (a run opened at a trial's
start, results logged as Tune receives them, closed at its end) and changes only what ablate needs:

* the run is named ``<label> <setting> seed=<s>`` and carries the flattened trial config as its
  parameters and the sweep, method, label and setting hash as tags (``ablate.tracking``);
* the x-axis is the trial's training step (Ray's default is its count of reports), and only the
  trial's own metrics are logged, not the bookkeeping Ray adds to every result;
* a sweep-level parent run (MLflow) or a run in the sweep's group (W&B) holds the sweep file;
* a retried or resumed trial continues its run: MLflow finds it by its trial-id tag, W&B resumes the
  run whose id is the trial id (``resume="allow"``), TensorBoard appends to the run's directory.

Ray pickles these callbacks with the experiment when the sweep starts and ``--resume`` restores them
from there, so they hold no secret: trackers read credentials from the environment. A tracker that
fails while the sweep runs (server down) prints one warning and is skipped; trials go on.
"""

from __future__ import annotations

import functools
import re
import sys
import time
import uuid
from pathlib import Path

import ray
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor
from ray.air.util.node import _force_on_current_node
from ray.tune.logger import TBXLoggerCallback

from ablate import records, tracking
from ablate.tracking import SweepInfo

MLFLOW_BATCH = 100  # parameters per log_batch request (MLflow's limit)
_MLFLOW_UNSAFE = re.compile(r"[^/\w.\- :]")


def mlflow_key(name: str) -> str:
    """A metric name MLflow accepts (letters, digits, ``_ - . : /`` and spaces): a judge's metrics such
    as ``lc_win_rate@builtin:reward-model`` become ``lc_win_rate.builtin:reward-model``."""
    key = _MLFLOW_UNSAFE.sub("_", name.replace("@", "."))
    return re.sub(r"/{2,}", "/", key).strip("/")


def _never_fatal(method):
    """A tracker's failure costs its logging, never the sweep: one warning per tracker, then it is off."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        if getattr(self, "_broken", False):
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any tracker error must leave the sweep running
            self._broken = True
            print(f"warning: {type(self).__name__}: {type(e).__name__}: {str(e)[:300]}; the sweep goes on "
                  "without logging to it.", file=sys.stderr, flush=True)  # fmt: skip
            return None

    return guarded


def _trial_cfg(trial) -> dict:
    """The trial's config (its ``params.json``), under ``ablate.records.TRIAL_KEY`` of Ray's config."""
    return records.trial_config(trial.config)


class MLflowTracker(MLflowLoggerCallback):
    """One MLflow run per trial, nested under one parent run per sweep launch."""

    def __init__(self, settings, info: SweepInfo) -> None:
        super().__init__(
            tracking_uri=settings.tracking_uri, experiment_name=settings.experiment_name or info.name
        )
        self.info = info
        self.parent_run_id: str | None = None
        self._steps: dict = {}

    @_never_fatal
    def setup(self, *args, **kwargs) -> None:
        super().setup(*args, **kwargs)  # the experiment, created if missing
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(self.mlflow_util._mlflow.get_tracking_uri())
        self.parent_run_id = self._parent()
        tracking.write_record(self.info, "mlflow", {
            "tracking_uri": self.client.tracking_uri, "experiment_id": self.mlflow_util.experiment_id,
            "experiment_name": self.experiment_name, "parent_run_id": self.parent_run_id,
        })  # fmt: skip

    def _find(self, **tag_values: str) -> str | None:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tag_values.items())
        found = self.client.search_runs([self.mlflow_util.experiment_id], filter_string=query, max_results=1)
        return found[0].info.run_id if found else None

    def _parent(self) -> str:
        """This launch's parent run (found again on ``--resume``), holding the sweep file."""
        run_id = self._find(**{"ablate.launch": self.info.launch, "ablate.role": "sweep"})
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {"sweep": self.info.name, "ablate.launch": self.info.launch, "ablate.role": "sweep"}
        run = self.client.create_run(
            self.mlflow_util.experiment_id, run_name=f"{self.info.name} (sweep)", tags=tags
        )
        if self.info.sweep_text is not None:
            name = Path(self.info.sweep_file or "sweep.yaml").name
            self.client.log_text(run.info.run_id, self.info.sweep_text, f"sweep/{name}")
        return run.info.run_id

    @_never_fatal
    def log_trial_start(self, trial) -> None:
        from mlflow.entities import Param

        if trial in self._trial_runs:  # a retry in this driver: the same run goes on
            self.client.update_run(self._trial_runs[trial], status="RUNNING")
            return
        run_id = self._find(**{"ablate.trial_id": trial.trial_id, "ablate.launch": self.info.launch})
        if run_id is not None:  # a resumed sweep: the trial's run goes on
            self.client.update_run(run_id, status="RUNNING")
        else:
            cfg = _trial_cfg(trial)
            tags = {
                **tracking.tags(cfg, trial.trial_id, self.info.launch),
                "mlflow.parentRunId": self.parent_run_id,
            }
            run = self.client.create_run(
                self.mlflow_util.experiment_id, run_name=tracking.run_name(cfg), tags=tags
            )
            run_id = run.info.run_id
            params = [Param(k, tracking.param_text(v)) for k, v in tracking.params(cfg).items()]
            for s in range(0, len(params), MLFLOW_BATCH):
                self.client.log_batch(run_id, params=params[s : s + MLFLOW_BATCH])
        self._trial_runs[trial] = run_id

    @_never_fatal
    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        from mlflow.entities import Metric, RunTag

        if trial not in self._trial_runs:
            self.log_trial_start(trial)
        step = self._steps[trial] = tracking.step_of(result, self._steps.get(trial, 0))
        now = int(time.time() * 1000)
        values = [Metric(mlflow_key(k), v, now, step) for k, v in tracking.metrics(result).items()]
        status = [RunTag("status", str(result["status"]))] if "status" in result else []
        self.client.log_batch(self._trial_runs[trial], metrics=values, tags=status)

    @_never_fatal
    def log_trial_end(self, trial, failed: bool = False) -> None:
        if trial in self._trial_runs:
            super().log_trial_end(trial, failed)  # FINISHED or FAILED

    @_never_fatal
    def on_experiment_end(self, trials, **info) -> None:
        if self.parent_run_id is not None:
            self.client.set_terminated(self.parent_run_id, "FINISHED")


class _WandbTrialActor(_WandbLoggingActor):
    """Ray's per-trial W&B logging process, with the training step as the x-axis of every chart."""

    def run(self) -> None:
        try:
            super().run()
        finally:
            # Ray kills this process and its children (W&B's service) as soon as run() returns; without
            # waiting for the service, a run that ended early (a trial that failed) lost its records.
            self._wandb.teardown()

    def _handle_result(self, result: dict):
        if not getattr(self, "_step_axis", False):
            self._wandb.define_metric("step")
            self._wandb.define_metric("*", step_metric="step")
            self._step_axis = True
        return super()._handle_result(result)


class WandbTracker(WandbLoggerCallback):
    """One W&B run per trial (id: the trial id, so a retry or resume continues it), in the sweep's group,
    plus one run of the group holding the sweep file."""

    _logger_actor_cls = _WandbTrialActor

    def __init__(self, settings, info: SweepInfo) -> None:
        self.settings, self.info = settings, info
        extra = {"entity": settings.entity} if settings.entity else {}
        super().__init__(project=settings.project or info.name, group=settings.group or info.name,
                         mode=settings.mode, resume="allow", reinit="finish_previous", dir=info.files_dir,
                         **extra)  # fmt: skip

    @_never_fatal
    def setup(self, *args, **kwargs) -> None:
        if self.settings.mode == "online":  # Ray's set-up checks the API key (from the environment)
            super().setup(*args, **kwargs)
        Path(self.info.files_dir).mkdir(parents=True, exist_ok=True)
        self._sweep_run()
        tracking.write_record(self.info, "wandb", {
            "project": self.project, "entity": self.settings.entity, "group": self.group, "mode": self.settings.mode,
            "dir": str(Path(self.info.files_dir) / "wandb"), "sweep_run_id": f"{self.info.launch}-sweep",
        })  # fmt: skip

    def _sweep_run(self) -> None:
        """The group's run that holds the sweep file (as an artifact), logged from the driver."""
        import wandb

        run = wandb.init(**self._init_args(f"{self.info.name} (sweep)", f"{self.info.launch}-sweep", "sweep"))
        if self.info.sweep_text is not None:
            artifact = wandb.Artifact(f"{self.info.name}-sweep-file", type="sweep-file")
            with artifact.new_file(Path(self.info.sweep_file or "sweep.yaml").name) as f:
                f.write(self.info.sweep_text)
            run.log_artifact(artifact)
        run.finish()

    def _init_args(self, name: str, run_id: str, job_type: str) -> dict:
        return {**self.kwargs, "project": self.project, "group": self.group, "name": name, "id": run_id,
                "job_type": job_type, "reinit": "create_new"}  # fmt: skip

    def _start_logging_actor(self, trial, exclude_results, **wandb_init_kwargs) -> None:
        if not self._remote_logger_class:
            # Ray's own version hands WANDB_API_KEY to the actor as a runtime_env variable, which Ray's
            # runtime_env_agent.log then prints in clear text. Without it the actor, which runs on the
            # driver's node, inherits the key from that node's environment like every Ray worker there.
            self._remote_logger_class = ray.remote(
                num_cpus=0, **_force_on_current_node(), max_restarts=-1, max_task_retries=-1
            )(self._logger_actor_cls)
        cfg = _trial_cfg(trial)
        labels = tracking.tags(cfg, trial.trial_id, self.info.launch)
        wandb_init_kwargs.update(
            name=tracking.run_name(cfg), config=tracking.params(cfg), job_type="trial",
            tags=[f"{k}:{labels[k]}"[:64] for k in ("sweep", "method", "label", "config_hash")],
        )  # fmt: skip
        super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)

    @_never_fatal
    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        step = tracking.step_of(result)
        super().log_trial_result(iteration, trial, {**tracking.metrics(result), "step": step})


def _run_dir_name(name: str) -> str:
    return re.sub(r"[/\\]", "_", name)


class TensorBoardTracker(TBXLoggerCallback):
    """One TensorBoard run per trial: ``<sweep dir>/tensorboard/<label> <setting> seed=<s>/``, scalars
    against the training step, the trial's parameters and final metrics in the HParams tab."""

    def __init__(self, info: SweepInfo) -> None:
        super().__init__()
        self.info = info
        self._steps: dict = {}

    @_never_fatal
    def setup(self, *args, **kwargs) -> None:
        tracking.write_record(
            self.info, "tensorboard", {"logdir": str(Path(self.info.files_dir) / "tensorboard")}
        )

    def log_trial_start(self, trial) -> None:
        if trial in self._trial_writer:
            self._trial_writer[trial].close()
        logdir = (
            Path(self.info.files_dir) / "tensorboard" / _run_dir_name(tracking.run_name(_trial_cfg(trial)))
        )
        self._trial_writer[trial] = self._summary_writer_cls(str(logdir), flush_secs=30)
        self._trial_result[trial] = {}

    @_never_fatal
    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        step = self._steps[trial] = tracking.step_of(result, self._steps.get(trial, 0))
        values = tracking.metrics(result)
        for k, v in values.items():
            self._trial_writer[trial].add_scalar(k, v, global_step=step)
        self._trial_result[trial].update(values)
        self._trial_writer[trial].flush()

    @_never_fatal
    def log_trial_end(self, trial, failed: bool = False) -> None:
        from tensorboardX.summary import hparams

        writer = self._trial_writer.pop(trial, None)
        if writer is None:
            return
        final = self._trial_result.pop(trial, {})
        scalars = {k: (v if isinstance(v, int | float | str | bool) else tracking.param_text(v))
                   for k, v in tracking.params(_trial_cfg(trial)).items()}  # fmt: skip
        if final:  # the HParams tab: parameters against each metric's last value
            for summary in hparams(hparam_dict=scalars, metric_dict=final):
                writer.file_writer.add_summary(summary)
        writer.close()


def callbacks(plan, experiment_path: str) -> list:
    """The tracker callbacks of a sweep's ``tracking`` section (none by default)."""
    spec = plan.spec
    t = spec.tracking
    if not t.any:
        return []
    path = getattr(plan, "source_file", None)
    text = Path(path).read_text(encoding="utf-8") if path and Path(path).is_file() else None
    info = SweepInfo(
        name=spec.name, launch=uuid.uuid4().hex[:12], experiment_path=experiment_path, sweep_file=path,
        sweep_text=text, files_dir=tracking.files_dir(experiment_path, spec.cache_dir, spec.name),
    )  # fmt: skip
    out: list = []
    if t.mlflow is not None:
        out.append(MLflowTracker(t.mlflow, info))
    if t.wandb is not None:
        out.append(WandbTracker(t.wandb, info))
    if t.tensorboard:
        out.append(TensorBoardTracker(info))
    return out


__all__ = ["MLflowTracker", "TensorBoardTracker", "WandbTracker", "callbacks"]
