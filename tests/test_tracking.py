"""Experiment trackers with the real parts: an MLflow tracking server started here (``mlflow server`` on
127.0.0.1, a free port, SQLite backend, a temporary artifact root; stopped by its pid), W&B in offline
mode read back with W&B's own reader of its run files (``wandb leet inspect --json``), and TensorBoard
event files read with TensorBoard's ``EventAccumulator``.

One 4-trial built-in sweep logs to all three at once through the CLI (module fixture). Its last trial
raises at step 6 (``ABLATE_FAULT``, no retry), so the sweep ends with 3 finished and 1 errored trial;
``--resume`` then runs that trial again, which must continue its runs, not add new ones. Finally
``analysis.report --log-to-tracking`` logs the report to the sweep's MLflow parent run and W&B group.
Fake credentials are planted in the environment throughout and must never be written anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from ablate import tracking
from ablate.sweep.raystart import load_scaled_s
from tests.conftest import REPO, SMALL
from tests.infra import Service, free_port, start_service
from tests.test_faults import cli_env, trial_dirs

FAKE_WANDB_KEY = "fake0wandb0key0c0ffee0123456789abcdef01"
FAKE_MLFLOW_PASSWORD = "fake-mlflow-password-5e1f9a"
RUN_NAMES = {"SimPO default seed=0", "SimPO default seed=1", "DPO default seed=0", "DPO default seed=1"}
RESUMED = "DPO default seed=1"  # trial 3: raised at step 6, then resumed
FINAL = [
    "reward_accuracy",
    "reward_margin",
    "oracle_win_rate",
    "gen_length",
    "train_loss",
    "steps",
    "runtime_s",
]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow")

    def server(attempt: int) -> Service:
        url = f"http://127.0.0.1:{free_port()}"
        return Service(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1],
             "--backend-store-uri", f"sqlite:///{tmp / f'mlflow-{attempt}.db'}",
             "--artifacts-destination", str(tmp / "artifacts"), "--workers", "1"],
            tmp / f"server-{attempt}.log", lambda _: answers(url), cwd=tmp,
        )  # fmt: skip

    # Started again if it does not answer (tests/infra.py); stopped with its workers, by process group.
    service = start_service(server, 60, "MLflow server")
    try:
        yield {"url": f"http://127.0.0.1:{service.cmd[service.cmd.index('--port') + 1]}", "dir": tmp}
    finally:
        service.stop()


def ray_session_dirs(pid: int) -> list[Path]:
    """The local Ray session a CLI run started (Ray names it after the driver's pid): its logs."""
    return list((Path(tempfile.gettempdir()) / "ray").glob(f"session_*_{pid}"))


def cli(args: list[str], env: dict, timeout: float = 900) -> tuple[subprocess.CompletedProcess, int]:
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=env)  # fmt: skip
    out, err = proc.communicate(timeout=load_scaled_s(timeout))
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), proc.pid


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, cache_dir, start, mlflow_server) -> dict:
    tmp = tmp_path_factory.mktemp("tracked")
    sweep = {**SMALL, "name": "tracked", "storage": str(tmp / "results"), "cache_dir": str(cache_dir),
             "methods": [{"method": "simpo"}, {"method": "dpo"}], "seeds": [0, 1],
             "tracking": {"mlflow": {"tracking_uri": mlflow_server["url"]},
                          "wandb": {"project": "ablate-tests", "mode": "offline"}, "tensorboard": True}}  # fmt: skip
    path = tmp / "tracked.yaml"
    path.write_text(yaml.safe_dump(sweep))
    env = cli_env(WANDB_API_KEY=FAKE_WANDB_KEY, MLFLOW_TRACKING_USERNAME="tester",
                  MLFLOW_TRACKING_PASSWORD=FAKE_MLFLOW_PASSWORD, WANDB_DIR=str(tmp / "wandb-home"),
                  WANDB_CACHE_DIR=str(tmp / "wandb-home"), WANDB_CONFIG_DIR=str(tmp / "wandb-home"),
                  WANDB_DATA_DIR=str(tmp / "wandb-home"))  # fmt: skip
    t0 = time.time()
    first, pid1 = cli(["-m", "ablate.run", str(path)], {**env, "ABLATE_FAULT": "index=3,step=6,kind=raise"})
    t1 = time.time()
    resumed, pid2 = cli(["-m", "ablate.run", str(path), "--resume"], env)
    t2 = time.time()
    report, _ = cli(["-m", "analysis.report", str(tmp / "results" / "tracked"), "--out", str(tmp / "reports"),
                     "--log-to-tracking"], env)  # fmt: skip
    print(f"tracked sweep: {t1 - t0:.1f}s, resume {t2 - t1:.1f}s, report {time.time() - t2:.1f}s")
    return {"first": first, "resumed": resumed, "report": report, "tmp": tmp, "sweep_file": path,
            "dir": tmp / "results" / "tracked", "ray_sessions": ray_session_dirs(pid1) + ray_session_dirs(pid2)}  # fmt: skip


def trial_configs(sweep_dir: Path) -> dict[str, dict]:
    """Each trial's params.json config, by its run name."""
    out = {}
    for d in trial_dirs(sweep_dir).values():
        cfg = json.loads((d / "params.json").read_text())["trial"]
        out[tracking.run_name(cfg)] = cfg
    return out


@pytest.mark.slow
def test_the_sweep_ran_resumed_and_reported(tracked):
    first, resumed, report = tracked["first"], tracked["resumed"], tracked["report"]
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "3 trials finished, 1 errored" in first.stdout
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "4 trials finished, 0 errored" in resumed.stdout
    assert report.returncode == 0, report.stderr[-3000:]
    assert "Report logged to MLflow" in report.stdout and "Report logged to W&B (offline)" in report.stdout
    # The split each trial used is recorded in its config.
    for cfg in trial_configs(tracked["dir"]).values():
        assert cfg["data_split"] == {"train": "builtin:synthetic train", "held_out": "builtin:synthetic eval",
                                     "train_pairs": 128, "held_out_pairs": 32}  # fmt: skip


@pytest.mark.slow
def test_mlflow_one_run_per_trial_with_params_metric_histories_and_the_parent_artifacts(
    tracked, mlflow_server
):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server["url"])
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("ablate.role") == "sweep"]
    trials = {r.info.run_name: r for r in runs if r not in parents}
    # One parent run and one run per trial: the resumed trial continued its run, no fifth one.
    assert len(parents) == 1 and set(trials) == RUN_NAMES and len(runs) == 5
    parent = parents[0]
    configs = trial_configs(tracked["dir"])
    counts = {}
    for name, run in trials.items():
        cfg = configs[name]
        assert run.info.status == "FINISHED", (name, run.info.status)
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert {k: run.data.tags[k] for k in ("sweep", "method", "label")} == {
            "sweep": "tracked", "method": cfg["method"], "label": cfg["label"]}  # fmt: skip
        assert run.data.params == {k: tracking.param_text(v) for k, v in tracking.params(cfg).items()}
        assert all(k in run.data.metrics for k in FINAL) and run.data.metrics["steps"] == 8
        # A judge's metrics, named with '@' (which MLflow refuses), arrive under an accepted name.
        assert "lc_win_rate.builtin:oracle" in run.data.metrics
        history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss")]
        counts[name] = (len(run.data.params), len(run.data.metrics), len(history))
        if (
            name == RESUMED
        ):  # step 4 of the attempt that raised at step 6, then steps 4 and 8, then the final record
            assert [s for s, _ in history] == [4, 4, 8, 8]
        else:  # steps 4 and 8, then the final record at step 8
            assert [s for s, _ in history] == [4, 8, 8]
        assert history[-1][1] == run.data.metrics["train_loss"]
    # Seeds of one setting share the setting's hash; the two methods do not.
    hashes = {name: run.data.tags["config_hash"] for name, run in trials.items()}
    assert hashes["SimPO default seed=0"] == hashes["SimPO default seed=1"] != hashes["DPO default seed=0"]
    print(f"MLflow: {len(runs)} runs; (params, metrics, train_loss points) per trial run: {counts}")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert artifacts == {"sweep/tracked.yaml"}
    sweep_file = client.download_artifacts(
        parent.info.run_id, "sweep/tracked.yaml", str(tracked["tmp"] / "dl")
    )
    assert Path(sweep_file).read_text() == tracked["sweep_file"].read_text()
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/main.csv"} <= report


def wandb_records(run_dir: Path) -> list[dict]:
    """A W&B run's records, read from its .wandb file by W&B's own reader."""
    proc = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.mark.slow
def test_wandb_offline_run_directories_read_back(tracked):
    run_dirs = sorted((tracked["dir"] / "wandb").glob("offline-run-*"))
    by_id: dict[str, list[list[dict]]] = {}
    for d in run_dirs:
        records = wandb_records(d)
        run = next(r["run"] for r in records if r["type"] == "run")
        by_id.setdefault(run["run_id"], []).append(records)
    configs = trial_configs(tracked["dir"])
    trial_ids = {cfg_id for cfg_id in by_id if not cfg_id.endswith(("-sweep", "-report"))}
    assert len(trial_ids) == 4 and sum(i.endswith("-sweep") for i in by_id) == 1
    assert sum(i.endswith("-report") for i in by_id) == 1
    for run_id in trial_ids:
        attempts = by_id[run_id]
        run = next(r["run"] for r in attempts[0] if r["type"] == "run")
        name = run["display_name"]
        assert (
            run["run_group"] == "tracked" and run["project"] == "ablate-tests" and run["job_type"] == "trial"
        )
        assert set(run["tags"]) >= {"sweep:tracked", f"method:{configs[name]['method']}"}
        config = run["config"]["update"]
        assert {k: config[k] for k in tracking.params(configs[name])} == tracking.params(configs[name])
        # Offline, W&B writes a resumed run (same id) into a new directory; `wandb sync` merges them.
        assert len(attempts) == (2 if name == RESUMED else 1)
        steps = [r["history"]["item"]["step"] for rec in attempts for r in rec if r["type"] == "history"]
        assert steps == ([4, 4, 8, 8] if name == RESUMED else [4, 8, 8])
        last = [r["history"]["item"] for r in attempts[-1] if r["type"] == "history"][-1]
        assert all(k in last for k in FINAL)
        axis = [r["metric"] for r in attempts[0] if r["type"] == "metric"]
        assert {
            "glob_name": "*",
            "options": {"defined": True, "step_sync": True},
            "step_metric": "step",
        } in axis
    sweep_run = by_id[next(i for i in by_id if i.endswith("-sweep"))][0]
    artifact = next(r["artifact"] for r in sweep_run if r["type"] == "artifact")
    assert [c["path"] for c in artifact["manifest"]["contents"]] == ["tracked.yaml"]
    report_run = by_id[next(i for i in by_id if i.endswith("-report"))][0]
    artifact = next(r["artifact"] for r in report_run if r["type"] == "artifact")
    assert {"report.md", "report.html"} <= {c["path"] for c in artifact["manifest"]["contents"]}


@pytest.mark.slow
def test_tensorboard_event_files_one_run_per_trial(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = tracked["dir"] / "tensorboard"
    assert {d.name for d in logdir.iterdir()} == RUN_NAMES
    for name in RUN_NAMES:
        events = EventAccumulator(str(logdir / name))
        events.Reload()
        scalars = events.Tags()["scalars"]
        assert all(k in scalars for k in FINAL)
        steps = [e.step for e in events.Scalars("train_loss")]
        # The resumed attempt writes a second event file into the same run, after the failed attempt's.
        assert steps == ([4, 4, 8, 8] if name == RESUMED else [4, 8, 8])
        assert len(list((logdir / name).glob("events.out.tfevents.*"))) == (2 if name == RESUMED else 1)
        assert events.Scalars("steps")[-1].value == 8
        assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")  # the HParams tab


@pytest.mark.slow
def test_planted_credentials_are_never_written(tracked, mlflow_server):
    """The fake W&B key and MLflow password were in the environment of every command: no file of the
    results, the report, the trackers' files, the MLflow server's store, the runs' Ray logs or the
    commands' output holds them."""
    roots = [tracked["tmp"], mlflow_server["dir"], *tracked["ray_sessions"]]
    assert tracked["ray_sessions"], "the runs' Ray session logs were not found"
    files = [f for root in roots for f in root.rglob("*") if f.is_file()]
    assert len(files) > 100
    for secret in (FAKE_WANDB_KEY, FAKE_MLFLOW_PASSWORD):
        found = [f for f in files if secret.encode() in f.read_bytes()]
        assert not found, f"{secret} written to {found[:5]}"
        for proc in (tracked["first"], tracked["resumed"], tracked["report"]):
            assert secret not in proc.stdout + proc.stderr


# --- checked before launch: exit 2, nothing launched ---------------------------------------------


def sweep_with(tmp_path: Path, tracking_section: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**SMALL, "name": "t", "storage": str(tmp_path / "results"),
                                    "cache_dir": str(tmp_path / "cache"), "tracking": tracking_section}))  # fmt: skip
    return path


def test_an_unreachable_tracking_uri_exits_2_before_anything_starts(tmp_path, capsys):
    from ablate.sweep import cli as run

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    sweep = sweep_with(tmp_path, {"mlflow": {"tracking_uri": url}})
    assert run.main([str(sweep)]) == run.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"error: {sweep}: tracking.mlflow.tracking_uri: cannot reach the MLflow tracking server at {url}"
    )
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()  # nothing launched


def test_wandb_online_without_a_key_exits_2(tmp_path, capsys, monkeypatch):
    from ablate.sweep import cli as run

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    sweep = sweep_with(tmp_path, {"wandb": {"project": "p"}})
    assert run.main([str(sweep)]) == run.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "tracking.wandb: W&B online needs an API key: set WANDB_API_KEY" in err and "mode: offline" in err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "section, message",
    [
        ({"mlfow": {}}, "tracking.mlfow: unknown key; did you mean 'mlflow'?"),
        (
            {"wandb": {"project": "p", "mode": "onlin"}},
            "tracking.wandb.mode: Input should be 'online' or 'offline'",
        ),
        ({"wandb": {"project": "p", "api_key": "x"}}, "tracking.wandb.api_key: unknown key"),
        ({"mlflow": {"tracking_uri": "http://me:secret@host:5000"}}, "the URI holds a password"),
    ],
)
def test_the_tracking_section_is_validated_like_the_rest(tmp_path, capsys, section, message):
    from ablate.sweep import cli as run

    sweep = sweep_with(tmp_path, section)
    assert run.main([str(sweep), "--dry-run"]) == run.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_schema_and_dry_run_show_the_trackers(tmp_path, capsys):
    from ablate.sweep import cli as run

    assert run.main(["--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["$defs"]["TrackingConfig"]["properties"]) == {"mlflow", "wandb", "tensorboard"}
    sweep = sweep_with(tmp_path, {"mlflow": {"tracking_uri": "http://127.0.0.1:1"}, "tensorboard": True})
    assert run.main([str(sweep), "--dry-run"]) == 0  # a dry run checks the file, not the server
    out = capsys.readouterr().out
    assert "Tracking: MLflow at http://127.0.0.1:1, TensorBoard" in out


@pytest.mark.slow
def test_log_to_tracking_needs_a_sweep_that_ran_with_a_tracker(tracked, tmp_path, capsys):
    import shutil

    from analysis import report

    sweep = tmp_path / "untracked"
    shutil.copytree(tracked["dir"], sweep, ignore=shutil.ignore_patterns("wandb", "tensorboard"))
    (sweep / tracking.RECORD_FILE).unlink()  # as a sweep without a `tracking:` section leaves it
    code = report.main([str(sweep), "--out", str(tmp_path / "reports"), "--log-to-tracking"])
    err = capsys.readouterr().err
    assert code == 2 and f"--log-to-tracking: {sweep} has no tracking.json" in err
    assert (tmp_path / "reports" / "untracked" / "report.md").is_file()  # the report itself is written
