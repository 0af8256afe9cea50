"""The sweep file as a product: every bad input is a clear error with exit code 2 and nothing launched;
search spaces, the random / Optuna searcher and the dry run; periodic held-out evaluation."""

from __future__ import annotations

import json
import math
import socket
import textwrap
from dataclasses import replace

import pytest

from ablate import spec as spec_mod
from ablate.sweep import cli as run
from ablate.sweep import plan as plan_mod
from ablate.trial.runner import run_trial
from tests.conftest import REPO, SMALL, make_trial

SEARCHED = """
name: s
methods:
  - method: simpo
    hparams:
      beta: {uniform: [1.0, 4.0]}
      gamma_beta_ratio: {uniform: [0.1, 1.0]}
    training:
      learning_rate: {loguniform: [1.0e-5, 1.0e-4]}
  - method: dpo
    hparams: {beta: 0.1}
search: optuna
num_samples: 3
seeds: [0, 1]
"""


def write(tmp_path, text: str, name: str = "sweep.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# (sweep file body, words the message must contain: the field path and what to write instead)
BAD = {
    "unknown top-level key": ("name: x\nmethods: [{method: simpo}]\nserach: optuna\n", ["serach", "did you mean 'search'"]),
    "unknown method": ("name: x\nmethods: [{method: dpoo}]\n", ["methods.0.method", "did you mean 'dpo'"]),
    "unknown hyperparameter": ("name: x\nmethods: [{method: simpo, hparams: {tau: 1}}]\n", ["methods.0.hparams", "'tau'", "accepted hyperparameters: beta"]),
    "wrong type of a hyperparameter": ("name: x\nmethods: [{method: simpo, hparams: {beta: high}}]\n", ["methods.0.hparams", "beta must be a number"]),
    "wrong type of a setting": ("name: x\nmethods: [{method: simpo}]\nseeds: 0\n", ["seeds", "valid list"]),
    "wrong type in a space": ("name: x\nmethods: [{method: simpo, hparams: {beta: [1, 2]}}]\n", ["methods.0.hparams.beta", "{grid: [..]}"]),
    "misspelt space": ("name: x\nmethods: [{method: simpo, hparams: {beta: {unifrom: [1, 2]}}}]\nsearch: random\nnum_samples: 2\n", ["methods.0.hparams.beta.unifrom", "did you mean 'uniform'"]),
    "beta = 0": ("name: x\nmethods: [{method: simpo, hparams: {beta: 0}}]\n", ["methods.0.hparams", "beta must be > 0"]),
    "beta range reaching 0": ("name: x\nmethods: [{method: simpo, hparams: {beta: {uniform: [0, 2]}}}]\nsearch: random\nnum_samples: 2\n", ["methods.0.hparams", "beta must be > 0"]),
    "empty grid": ("name: x\nmethods: [{method: dpo, hparams: {beta: {grid: []}}}]\n", ["methods.0.hparams.beta", "grid is empty"]),
    "gamma and gamma_beta_ratio": ("name: x\nmethods: [{method: simpo, hparams: {gamma: {grid: [0.5, 1]}, gamma_beta_ratio: 0.5}}]\n", ["gamma_beta_ratio", "not both"]),
    "num_samples < 1": ("name: x\nmethods: [{method: simpo, hparams: {beta: {uniform: [1, 2]}}}]\nsearch: optuna\nnum_samples: 0\n", ["num_samples", "greater than or equal to 1"]),
    "num_samples missing": ("name: x\nmethods: [{method: simpo, hparams: {beta: {uniform: [1, 2]}}}]\nsearch: optuna\n", ["num_samples", "num_samples: 16"]),
    "num_samples with grid": ("name: x\nmethods: [{method: simpo}]\nnum_samples: 4\n", ["num_samples", "seeds: [0, 1, 2]"]),
    "range in a grid search": ("name: x\nmethods: [{method: simpo, hparams: {beta: {uniform: [1, 2]}}}]\n", ["methods.0.hparams.beta", "search: optuna"]),
    "grid in an optuna search": ("name: x\nmethods: [{method: simpo, hparams: {beta: {grid: [1, 2]}}}]\nsearch: optuna\nnum_samples: 2\n", ["methods.0.hparams.beta", "choice: [1, 2]"]),
    "float range for a whole number": ("name: x\nmethods: [{method: simpo, training: {batch_size: {uniform: [8, 32]}}}]\nsearch: random\nnum_samples: 2\n", ["methods.0.training.batch_size", "randint: [8, 32]"]),
    "nothing to search": ("name: x\nmethods: [{method: simpo}]\nsearch: random\nnum_samples: 2\n", ["search", "uniform"]),
    "model path that does not exist": ("name: x\nmethods: [{method: simpo}]\nmodel: {name_or_path: ./no/such/model}\n", ["model.name_or_path", "./no/such/model", "builtin:tiny"]),
    "data file that does not exist": ("name: x\nmethods: [{method: simpo}]\ndata: {source: ./no/such/pairs.jsonl}\n", ["data.source", "does not exist"]),
    "data file without the fields": ("name: x\nmethods: [{method: simpo}]\ndata: {source: DATA}\n", ["data.source", "['chosen', 'rejected']", "data.fields"]),
    "misspelt metric": ("name: x\nmethods: [{method: simpo}]\nmetric: win_rate\n", ["metric", "did you mean 'oracle_win_rate'"]),
    "scheduler metric no trial reports": ("name: x\nmethods: [{method: simpo}]\nscheduler: {type: asha, metric: reward_acc}\nevaluation: {every_steps: 4}\n", ["scheduler.metric", "no trial reports 'reward_acc'", "did you mean 'reward_accuracy'"]),
    "scheduler metric reported only at the end": ("name: x\nmethods: [{method: simpo}]\nscheduler: {type: asha, metric: oracle_win_rate}\n", ["scheduler.metric", "only when a trial ends", "train_loss"]),
    "scheduler metric without periodic evaluation": ("name: x\nmethods: [{method: simpo}]\nscheduler: asha\n", ["scheduler.metric", "every_steps"]),
    "oracle metric without generation": ("name: x\nmethods: [{method: simpo}]\nmetric: oracle_win_rate\nevaluation: {generate: false}\n", ["metric", "evaluation.generate: true"]),
    "not YAML": ("name: [unclosed\n", ["not valid YAML"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_sweep_file_exits_2_naming_file_and_field(tmp_path, capsys, case):
    body, needles = BAD[case]
    data = jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "good": "a", "bad": "b"}])
    body = body.replace("DATA", str(data)) + f"storage: {tmp_path / 'results'}\n"
    path = write(tmp_path, body)
    assert run.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)
    assert not (tmp_path / "results").exists()  # nothing launched


@pytest.mark.parametrize("target", ["missing", "directory", "binary"])
def test_unreadable_sweep_file_exits_2(tmp_path, capsys, target):
    path = {"missing": tmp_path / "nope.yaml", "directory": tmp_path, "binary": tmp_path / "b.yaml"}[target]
    if target == "binary":
        path.write_bytes(b"\xff\xfe\x00name")
    assert run.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: cannot read the sweep file" in err and "YAML sweep file" in err


def test_unreachable_address_exits_2_before_anything_starts(tmp_path, capsys):
    path = write(tmp_path, f"name: x\nmethods: [{{method: simpo}}]\nstorage: {tmp_path / 'results'}\n")
    assert run.main([str(path), "--address", "127.0.0.1:1"]) == 2  # port 1: nothing listens
    err = capsys.readouterr().err
    assert "--address 127.0.0.1:1: cannot reach a Ray cluster" in err and "omit --address" in err
    assert run.main([str(path), "--address", "head-without-port"]) == 2
    assert "not host:port" in capsys.readouterr().err
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers: ray.init would hang
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        assert run.main([str(path), "--address", address]) == 2
    assert "does not answer like a Ray head" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_resume_without_a_sweep_exits_2(tmp_path, capsys):
    path = write(tmp_path, f"name: x\nmethods: [{{method: simpo}}]\nstorage: {tmp_path / 'results'}\n")
    assert run.main([str(path), "--resume"]) == 2
    assert "no sweep 'x' to resume" in capsys.readouterr().err


def test_data_file_with_the_fields_passes(tmp_path):
    data = jsonl(tmp_path / "pairs.jsonl", [{"q": "p", "good": "a", "bad": "b"}])
    path = write(
        tmp_path, f"name: x\nmethods: [{{method: simpo}}]\ndata: {{source: {data}, fields: [q, good, bad]}}\n"
    )
    assert spec_mod.load_sweep(path).data.fields == ("q", "good", "bad")


def test_scheduler_shorthand_and_schema(tmp_path, capsys):
    path = write(
        tmp_path, "name: x\nmethods: [{method: simpo}]\nscheduler: asha\nevaluation: {every_steps: 5}\n"
    )
    spec = spec_mod.load_sweep(path)
    assert spec.scheduler.type == "asha" and spec_mod.scheduler_metric(spec) == ("reward_accuracy", "max")
    assert run.main(["--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    props = schema["properties"]
    for key in (
        "search",
        "num_samples",
        "scheduler",
        "max_concurrent",
        "storage",
        "name",
        "seeds",
        "resources",
    ):
        assert key in props, key
    assert {"enum": ["none", "asha"]} in props["scheduler"]["anyOf"]
    assert "every_steps" in schema["$defs"]["EvalConfig"]["properties"]


def test_search_dry_run_shows_spaces_seeds_and_trial_count(tmp_path, capsys):
    path = write(
        tmp_path, SEARCHED + "scheduler: {type: asha, grace_period: 4}\nevaluation: {every_steps: 4}\n"
    )
    assert run.main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "search: optuna" in out and "scheduler: asha on reward_accuracy (max), grace period 4" in out
    assert "beta ~ uniform(1, 4)" in out and "learning_rate ~ loguniform(1e-05, 0.0001)" in out
    assert "seeds[k % 2]" in out
    assert out.strip().splitlines()[-1] == "5 trials"  # 3 draws of SimPO + DPO (fixed) once per seed


def test_repository_sweeps_dry_run():
    for name in ("gamma", "tiny", "optuna"):
        spec = spec_mod.load_sweep(REPO / "sweeps" / f"{name}.yaml")
        assert spec.name == name
    spec = spec_mod.load_sweep(REPO / "sweeps" / "optuna.yaml")
    assert spec.search == "optuna" and spec.scheduler.type == "asha"
    spaces = spec_mod.search_plan(spec)[0].spaces
    assert set(spaces) == {"hparams.beta", "hparams.gamma_beta_ratio", "training.learning_rate"}


def test_searcher_suggests_whole_trial_configs_and_survives_save_restore(tmp_path):
    from ablate.records import TRIAL_KEY
    from ablate.sweep.tune import SweepSearcher

    spec = spec_mod.load_sweep(write(tmp_path, SEARCHED))
    searcher = SweepSearcher(replace(plan_mod.build(spec), trial_extra={"start": {"path": "x", "baseline": None}}))
    assert searcher.total == 5
    configs = [searcher.suggest(f"t{i}")[TRIAL_KEY] for i in range(3)]
    grid_keys = set(
        spec_mod.expand(spec.model_copy(update={"methods": spec.methods[1:], "search": "grid"}))[0]
    )
    for i, cfg in enumerate(configs):
        assert set(cfg) == grid_keys | {"start"} and cfg["index"] == i
    simpo0, dpo0, simpo1 = configs
    assert (simpo0["method"], dpo0["method"], simpo1["method"]) == ("simpo", "dpo", "simpo")  # interleaved
    assert (simpo0["seed"], dpo0["seed"], simpo1["seed"]) == (0, 0, 1)  # draw k uses seeds[k % 2]
    assert 1.0 <= simpo0["hparams"]["beta"] <= 4.0 and "gamma_beta_ratio" not in simpo0["hparams"]
    lr = simpo0["training"]["learning_rate"]
    assert 1e-5 <= lr <= 1e-4 and f"learning_rate={lr}" in simpo0["setting"]
    assert simpo0["hparams"]["gamma"] == pytest.approx(
        simpo0["hparams"]["beta"] * float(simpo0["setting"].split("gamma_beta_ratio=")[1].split(",")[0])
    )
    assert dpo0["setting"] == "beta=0.1"

    searcher.on_trial_result("t0", {"step": 4, "reward_accuracy": 0.6, "training_iteration": 1})
    searcher.on_trial_complete("t0", {"reward_accuracy": 0.7, "status": "finished"})
    searcher.save(str(tmp_path / "state.pkl"))
    restored = SweepSearcher(plan_mod.build(spec))
    restored.restore(str(tmp_path / "state.pkl"))
    study = restored._studies[0]._ot_study
    assert [t.value for t in study.trials] == [0.7, None]  # t0 told, t2 still running
    assert restored.suggest("t3")[TRIAL_KEY]["index"] == 3
    restored.suggest("t4")
    assert restored.suggest("t5") == "FINISHED"


def test_random_search_draws_choices_and_inclusive_integers_reproducibly(tmp_path):
    from ablate.records import TRIAL_KEY
    from ablate.sweep.tune import SweepSearcher

    body = """
    name: r
    methods:
      - method: simpo
        hparams: {length_normalize: {choice: [true, false]}, beta: {loguniform: [1.0, 4.0]}}
        training: {batch_size: {randint: [8, 9]}}
    search: random
    num_samples: 12
    search_seed: 3
    """
    spec = spec_mod.load_sweep(write(tmp_path, body))
    draws = [SweepSearcher(plan_mod.build(spec)) for _ in range(2)]
    a, b = ([s.suggest(f"t{i}")[TRIAL_KEY] for i in range(12)] for s in draws)
    assert [t["setting"] for t in a] == [t["setting"] for t in b]  # same seed, same draws
    assert {t["training"]["batch_size"] for t in a} == {8, 9}
    assert {t["hparams"]["length_normalize"] for t in a} == {True, False}
    assert {t["label"] for t in a} == {"SimPO", "SimPO w/o LN"}
    assert all(1.0 <= t["hparams"]["beta"] <= 4.0 for t in a)


def test_periodic_evaluation_reports_held_out_metrics_without_changing_the_trial(small_spec, start):
    plain = run_trial(make_trial(small_spec, start, "simpo"), lambda _: None)
    reports = []
    cfg = make_trial(small_spec, start, "simpo", evaluation={"every_steps": 3})
    final = run_trial(cfg, reports.append)
    held_out = [r for r in reports[:-1] if "reward_accuracy" in r]
    # Logged every 4 steps (SMALL) of 8: evaluated at the first logging step past 3, not at the last.
    assert [r["step"] for r in held_out] == [4]
    assert 0 <= held_out[0]["reward_accuracy"] <= 1 and math.isfinite(held_out[0]["reward_margin"])
    for k in ("train_loss", "reward_accuracy", "reward_margin", "oracle_win_rate"):
        assert final[k] == plain[k], k


def test_small_settings_are_valid():
    assert spec_mod.SweepSpec.model_validate(
        {**SMALL, "evaluation": {**SMALL["evaluation"], "every_steps": 2}}
    )
