"""``python -m analysis.report RESULTS_DIR --log-to-tracking``: the report's files, as artifacts, next to
the sweep's runs: under ``report/`` of the sweep's MLflow parent run, and in a ``report`` run of its
W&B group. Where the runs are comes from the sweep's ``tracking.json`` (written when it ran); the
trackers' credentials come from the environment, as for the sweep."""

from __future__ import annotations

from pathlib import Path

from ablate import tracking


class TrackingError(ValueError):
    """The report cannot be logged; the message says why and what to do."""


def log_report(sweep_dirs: list[Path], report_dir: Path) -> list[str]:
    """Log every file of ``report_dir`` to the trackers of each sweep; one line per place logged to."""
    done = []
    for sweep_dir in sweep_dirs:
        record = tracking.read_record(sweep_dir)
        if record is None:
            raise TrackingError(
                f"--log-to-tracking: {sweep_dir} has no {tracking.RECORD_FILE}: the sweep ran without a "
                "`tracking:` section (MLflow or W&B). Add one to the sweep file and run it, or drop the flag."
            )
        for name, log in (("mlflow", _mlflow), ("wandb", _wandb)):
            if name not in record:
                continue
            try:
                done.append(log(record, report_dir))
            except Exception as e:  # noqa: BLE001 - server down, credentials: the report is written anyway
                raise TrackingError(
                    f"--log-to-tracking: could not log the report of sweep {record.get('sweep')} to {name} "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}). The report is "
                    "written; check the tracker (credentials come from the environment) and run again."
                ) from None
        if set(record) <= {"sweep", "launch", "tensorboard"}:
            raise TrackingError(
                f"--log-to-tracking: sweep {record.get('sweep')} logs to TensorBoard only, which holds no "
                "files; its report is in the report folder. Drop the flag, or add MLflow or W&B to the sweep."
            )
    return done


def _mlflow(record: dict, report_dir: Path) -> str:
    from mlflow.tracking import MlflowClient

    entry = record["mlflow"]
    client = MlflowClient(entry["tracking_uri"])
    client.log_artifacts(entry["parent_run_id"], str(report_dir), artifact_path="report")
    return f"MLflow: {entry['tracking_uri']}, run {entry['parent_run_id']}, artifacts report/"


def _wandb(record: dict, report_dir: Path) -> str:
    import wandb

    entry = record["wandb"]
    extra = {"entity": entry["entity"]} if entry.get("entity") else {}
    run = wandb.init(project=entry["project"], group=entry["group"], name=f"{record['sweep']} (report)",
                     id=f"{record['launch']}-report", job_type="report", resume="allow", reinit="create_new",
                     mode=entry["mode"], dir=str(Path(entry["dir"]).parent), **extra)  # fmt: skip
    artifact = wandb.Artifact(f"{record['sweep']}-report", type="report")
    artifact.add_dir(str(report_dir))
    run.log_artifact(artifact)
    run.finish()
    return f"W&B ({entry['mode']}): project {entry['project']}, group {entry['group']}, run {run.id}"
