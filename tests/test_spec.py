"""Sweep-file validation and expansion, and the CLI's handling of bad input (exit 2, nothing launched)."""

import subprocess
import sys
import textwrap

import pytest

from ablate import spec as spec_mod
from ablate.spec import SpecError
from tests.conftest import REPO


def write(tmp_path, text: str):
    path = tmp_path / "sweep.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_gamma_sweep_expands_methods_grid_and_seeds():
    spec = spec_mod.load_sweep(REPO / "sweeps" / "gamma.yaml")
    trials = spec_mod.expand(spec)
    simpo_gammas = {t["hparams"]["gamma"] for t in trials if t["label"] == "SimPO"}
    assert len(simpo_gammas) >= 5 and 0.0 in simpo_gammas
    assert {t["label"] for t in trials} >= {"SimPO", "SimPO w/o LN", "DPO"}
    assert len(spec.seeds) >= 2
    per_setting = {}
    for t in trials:
        per_setting.setdefault((t["label"], t["setting"]), set()).add(t["seed"])
    assert all(seeds == set(spec.seeds) for seeds in per_setting.values())
    assert [t["index"] for t in trials] == list(range(len(trials)))


def test_gamma_beta_ratio_resolves_to_gamma(tmp_path):
    path = write(
        tmp_path,
        """
        name: r
        methods:
          - method: simpo
            hparams: {beta: 2.5, gamma_beta_ratio: {grid: [0.2, 0.4]}}
    """,
    )
    gammas = sorted(t["hparams"]["gamma"] for t in spec_mod.expand(spec_mod.load_sweep(path)))
    assert gammas == pytest.approx([0.5, 1.0])


def test_expansion_resolves_hyperparameters_once_with_the_signature_defaults(tmp_path, monkeypatch):
    """Every trial's ``hparams`` are the objective's keywords: the sweep file's values over the
    signature's defaults, resolved at expansion (one check per grid point, none later)."""
    import inspect

    from ablate import losses
    from ablate.losses import registry

    path = write(tmp_path, """
        name: r
        seeds: [0, 1]
        methods:
          - method: simpo
            hparams: {gamma_beta_ratio: {grid: [0.2, 0.4]}}
          - method: dpo
    """)  # fmt: skip
    spec = spec_mod.load_sweep(path)
    calls = []
    check = registry.validate_hparams
    monkeypatch.setattr(losses, "validate_hparams", lambda m, hp: calls.append(m) or check(m, hp))
    trials = spec_mod.expand(spec)
    assert calls == ["simpo", "simpo", "dpo"]  # per grid point, not per seed (and never in the loss)
    sig = {m: {p.name: p.default for p in inspect.signature(losses.LOSSES[m].fn).parameters.values()
               if p.kind is inspect.Parameter.KEYWORD_ONLY} for m in ("simpo", "dpo")}  # fmt: skip
    assert [t["hparams"] for t in trials if t["method"] == "dpo"] == [sig["dpo"]] * 2
    simpo = [t["hparams"] for t in trials if t["method"] == "simpo"]
    assert all(set(h) == set(sig["simpo"]) for h in simpo)  # `gamma`, never `gamma_beta_ratio`
    assert sorted({h["gamma"] for h in simpo}) == pytest.approx([0.2 * sig["simpo"]["beta"], 0.4 * sig["simpo"]["beta"]])


@pytest.mark.parametrize(
    "body, needles",
    [
        ("name: x\nmethods: [{method: simpo}]\nbogus: 1\n", ["bogus", "unknown key"]),
        ("name: x\nmethod: [{method: simpo}]\n", ["method", "did you mean 'methods'"]),
        ("name: x\nmethods: [{method: simpoo}]\n", ["methods.0.method", "simpoo", "did you mean 'simpo'"]),
        ("name: x\nmethods: [{method: dpo, hparams: {gamma: 1.0}}]\n", ["methods.0.hparams", "gamma"]),
        (
            "name: x\nmethods: [{method: simpo, hparams: {beta: -1}}]\n",
            ["methods.0.hparams", "beta must be > 0"],
        ),
        ("name: x\nmethods: [{method: simpo, hparams: {beta: {grid: []}}}]\n", ["grid is empty"]),
        (
            "name: x\nmethods: [{method: simpo, hparams: {gamma: 1, gamma_beta_ratio: 0.5}}]\n",
            ["gamma_beta_ratio", "not both"],
        ),
        (
            "name: x\nmethods: [{method: simpo}]\ntraining: {learning_rate: fast}\n",
            ["training.learning_rate"],
        ),
        (
            "name: x\nmethods: [{method: simpo}]\nmodel: {name_or_path: /nonexistent/model}\n",
            ["model.name_or_path", "/nonexistent/model"],
        ),
        ("name: [unclosed\n", ["not valid YAML"]),
        ("- just\n- a list\n", ["mapping"]),
    ],
)
def test_bad_sweep_files_name_the_field(tmp_path, body, needles):
    path = write(tmp_path, body)
    with pytest.raises(SpecError) as e:
        spec_mod.load_sweep(path)
    msg = str(e.value)
    assert str(path) in msg
    for n in needles:
        assert n in msg, (n, msg)


def test_cli_bad_input_exits_2_without_traceback_or_launch(tmp_path):
    path = write(
        tmp_path,
        "name: x\nmethods: [{method: simpo, hparams: {beta: -1}}]\nstorage: %s\n" % (tmp_path / "res"),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "ablate.run", str(path)], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 2
    assert "beta must be > 0" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "res").exists()  # nothing launched, nothing written


def test_cli_dry_run_lists_trials(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ablate.run", str(REPO / "sweeps" / "gamma.yaml"), "--dry-run"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    n = len(spec_mod.expand(spec_mod.load_sweep(REPO / "sweeps" / "gamma.yaml")))
    assert proc.stdout.strip().splitlines()[-1] == f"{n} trials"


def test_task_grid_runs_every_trial_once_per_task_value(tmp_path):
    path = write(
        tmp_path,
        """
        name: tg
        methods: [{method: simpo, hparams: {gamma: {grid: [0.0, 1.0]}}}, {method: dpo}]
        seeds: [0, 1]
        data: {task: {temperature: 0.2}, task_grid: {length_bias: [0.0, 2.0]}}
    """,
    )
    trials = spec_mod.expand(spec_mod.load_sweep(path))
    assert len(trials) == 2 * (2 + 1) * 2
    assert {t["data"]["task"]["length_bias"] for t in trials} == {0.0, 2.0}
    assert all(t["data"]["task"]["temperature"] == 0.2 for t in trials)  # the other knobs stay
    assert {t["setting"] for t in trials if t["method"] == "dpo"} == {"length_bias=0.0", "length_bias=2.0"}
    assert "length_bias=2.0,gamma=1.0" in {t["setting"] for t in trials}


@pytest.mark.parametrize(
    "task_grid, needle",
    [
        ("{version: [1, 2]}", "not a task knob"),
        ("{length_bias: []}", "empty"),
        ("{length_bias: [-1.0]}", "length_bias"),
    ],
)
def test_bad_task_grid_is_refused(tmp_path, task_grid, needle):
    path = write(tmp_path, f"name: x\nmethods: [{{method: simpo}}]\ndata: {{task_grid: {task_grid}}}\n")
    with pytest.raises(SpecError, match=needle):
        spec_mod.load_sweep(path)


def test_label_knobs_share_one_sft_start_point(small_spec, tmp_path):
    from ablate.trial import startpoint

    s = small_spec
    dirs = set()
    for bias in (0.0, 2.0):
        data = s.data.model_dump()
        data["task"] = {**data["task"], "length_bias": bias}
        dirs.add(startpoint.sft_model_dir(s.cache_dir, s.model.model_dump(), data, s.sft.model_dump()))
    assert len(dirs) == 1
