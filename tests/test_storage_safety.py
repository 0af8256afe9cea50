"""A sweep owns its directory: names that leave `storage` are refused, ``--overwrite`` deletes only what
ablate wrote, a second driver of a sweep is refused while the first lives, a duplicated key in a sweep
file is an error, the report counts a (setting, seed) once, liblinear's label warning stays off the
console. Real files and processes, no Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from ablate.readout.loader import duplicates_note, load_trials
from ablate.sweep import lease, sweepdir
from ablate.sweep.cli import main as run_main
from tests.analysis_data import metrics, trial_config, write_experiment_state, write_trial
from tests.conftest import REPO

SWEEP = {"name": "mine", "methods": [{"method": "simpo"}], "data": {"task": {"n_train": 64, "n_eval": 16}}}


def write_sweep(tmp_path, text: str | None = None, **fields) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(text if text is not None else yaml.safe_dump({**SWEEP, "storage": str(tmp_path / "results"),
                                                                   **fields}))  # fmt: skip
    return str(path)


@pytest.mark.parametrize("name", ["..", "."])
def test_a_name_that_is_not_a_folder_of_its_own_is_refused(tmp_path, capsys, name):
    (tmp_path / "results").mkdir()
    (tmp_path / "keep.txt").write_text("the user's")
    assert run_main([write_sweep(tmp_path, name=name), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "name:" in err and "not a folder name of its own" in err and err.count("\n") == 1
    assert (tmp_path / "keep.txt").read_text() == "the user's" and (tmp_path / "results").is_dir()


def test_a_stage_named_dot_dot_is_refused(tmp_path, capsys):
    path = write_sweep(tmp_path, stages=[{"name": "..", "params": ["learning_rate"]}],
                       training={"learning_rate": {"grid": [1e-4, 1e-3]}})  # fmt: skip
    assert run_main([path, "--dry-run"]) == 2
    assert "stages.0.name" in capsys.readouterr().err


def test_a_name_that_links_out_of_storage_is_refused(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "results" / "mine").symlink_to(tmp_path / "elsewhere")
    assert run_main([write_sweep(tmp_path)]) == 2
    assert "outside" in capsys.readouterr().err
    assert os.listdir(tmp_path / "elsewhere") == []


def test_a_key_written_twice_names_the_key_and_both_lines(tmp_path, capsys):
    text = "name: a\nmethods: [{method: simpo}]\nseeds: [0]\nname: b\n"
    assert run_main([write_sweep(tmp_path, text), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "'name' is written twice" in err and "lines 1 and 4" in err
    nested = "name: a\nmethods:\n  - method: simpo\n    hparams: {beta: 2.0, beta: 3.0}\n"
    assert run_main([write_sweep(tmp_path, nested), "--dry-run"]) == 2
    assert "'beta' is written twice" in capsys.readouterr().err


def fake_sweep(directory, marker: bool = True) -> None:
    """A finished sweep's top level as ablate and Ray Tune leave it."""
    directory.mkdir(parents=True)
    write_experiment_state(directory, {"000-simpo-s0-ab12c_00000": "TERMINATED"})
    (directory / "tuner.pkl").write_bytes(b"x")
    (directory / "run_order.json").write_text("{}")
    (directory / "000-simpo-s0-ab12c_00000").mkdir()
    if marker:
        (directory / sweepdir.MARKER).write_text(json.dumps({"ablate_sweep": directory.name}))


@pytest.mark.parametrize("uri", [False, True])
def test_overwrite_refuses_a_directory_with_a_foreign_file_and_keeps_it(tmp_path, capsys, uri):
    where = tmp_path / "results" / "mine"
    fake_sweep(where)
    (where / "notes.txt").write_text("not ablate's")
    storage = f"file://{tmp_path / 'results'}" if uri else str(tmp_path / "results")
    assert run_main([write_sweep(tmp_path, storage=storage), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "files ablate did not write: notes.txt" in err and "nothing was deleted" in err
    assert sorted(os.listdir(where)) == sorted([sweepdir.MARKER, "notes.txt", "tuner.pkl", "run_order.json",
        "000-simpo-s0-ab12c_00000", "experiment_state-2026-01-01_00-00-00.json"])  # fmt: skip


def test_overwrite_refuses_a_directory_without_the_marker(tmp_path, capsys):
    fake_sweep(tmp_path / "results" / "mine", marker=False)
    assert run_main([write_sweep(tmp_path), "--overwrite"]) == 2
    assert "does not carry ablate's marker" in capsys.readouterr().err
    assert (tmp_path / "results" / "mine" / "tuner.pkl").exists()
    assert not (tmp_path / "results" / "mine" / sweepdir.LEASE).exists()  # the refused driver let go


@pytest.mark.parametrize("uri", [False, True])
def test_delete_known_removes_only_ablates_files(tmp_path, uri):
    where = tmp_path / "mine"
    fake_sweep(where)
    (where / "stage1").mkdir()
    (where / "stage1" / sweepdir.MARKER).write_text("{}")
    path = f"file://{where}" if uri else str(where)
    assert sweepdir.overwrite_problem(path) is None
    sweepdir.delete_known(path)
    assert os.listdir(where) == [sweepdir.MARKER]


def other_driver(tmp_path) -> subprocess.Popen:
    """A live process (not this one) that holds a sweep's lease."""
    code = ("import sys, time; from ablate.sweep import lease; h = lease.acquire(sys.argv[1], 'other', 'x'); "
            "assert not isinstance(h, str), h; print('held', flush=True); time.sleep(60)")  # fmt: skip
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "s")], cwd=REPO, stdout=subprocess.PIPE,
                         text=True, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert p.stdout.readline().strip() == "held"
    return p


@pytest.mark.parametrize("uri", [False, True])
def test_a_live_lease_refuses_a_second_driver_and_a_dead_one_is_taken_over(tmp_path, uri, monkeypatch):
    monkeypatch.setattr(lease, "SETTLE_S", 0.1)
    where = f"file://{tmp_path / 's'}" if uri else str(tmp_path / "s")
    holder = other_driver(tmp_path)
    try:
        refused = lease.acquire(where, "me", "sweeps/x.yaml: sweep 'x'")
        assert isinstance(refused, str) and f"pid {holder.pid}" in refused and "--resume" in refused
    finally:
        holder.kill()
        holder.wait()
    held = lease.acquire(where, "me", "x")  # its process is gone: taken over at once
    assert isinstance(held, lease.Lease)
    assert isinstance(lease.acquire(where, "again", "x"), str)  # one holder at a time, even in one process
    held.release()
    assert not (tmp_path / "s").exists()  # made for the lease alone, left as it was


def test_a_lease_of_another_host_is_taken_over_only_when_not_renewed(tmp_path):
    path = tmp_path / sweepdir.LEASE
    stale = {"host": "elsewhere", "pid": 1, "started_at": 0.0, "token": "t", "command": "c"}
    path.write_text(json.dumps({**stale, "renewed_at": time.time()}))
    assert "on host elsewhere" in lease.acquire(str(tmp_path), "me", "x")
    path.write_text(json.dumps({**stale, "renewed_at": time.time() - lease.STALE_S - 1}))
    held = lease.acquire(str(tmp_path), "me", "x")
    assert isinstance(held, lease.Lease)
    held.release()


def test_the_report_counts_a_setting_and_seed_once(tmp_path):
    sweep = tmp_path / "twice"
    cfg = trial_config("SimPO", "simpo", {"beta": 2.0}, seed=0)
    write_trial(sweep, "000-simpo-s0-aaaaa_00000", cfg, {**metrics(0.6, 0.5, 5, 10, 100), "timestamp": 100})
    write_trial(sweep, "000-simpo-s0-bbbbb_00000", cfg, {**metrics(0.7, 0.5, 5, 10, 100), "timestamp": 200})
    write_trial(sweep, "001-simpo-s1-aaaaa_00001", {**cfg, "seed": 1}, metrics(0.65, 0.5, 5, 10, 100))
    df = load_trials([sweep]).set_index("trial")
    assert df.loc["000-simpo-s0-bbbbb_00000", "status"] == "finished"  # the later one counts
    assert df.loc["000-simpo-s0-aaaaa_00000", "status"] == "duplicate"
    assert "000-simpo-s0-bbbbb_00000" in df.loc["000-simpo-s0-aaaaa_00000", "error"]
    assert df.loc["001-simpo-s1-aaaaa_00001", "status"] == "finished"
    df = df.reset_index()
    assert "1 finished trial(s) repeat the setting and seed" in duplicates_note(df)
    assert duplicates_note(df[df["status"] == "finished"]) is None


def test_liblinears_label_warning_does_not_reach_the_console(capfd):
    from ablate.judging.winrate import fit_soft_logistic

    x = np.random.default_rng(0).normal(size=(20, 3))
    fit_soft_logistic(x, np.zeros(20))  # a policy that lost every judgment: some folds lack label 1
    assert "class label" not in capfd.readouterr().err
