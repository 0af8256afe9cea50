"""Staged sweeps (``stages:``): the paper's tuning protocol in one command.

Without Ray: bad stage references are exit-2 errors before launch; ``--dry-run`` counts (the built-in
and the paper's staged sweeps); how a stage is built from earlier winners; the selection's ties and
stopped methods. On a real local Ray (slow): a 3-stage sweep whose driver is SIGKILLed during stage 2
and resumed; its stages, winners, replays, stopped method and report are checked against the files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from ablate import spec as spec_mod
from ablate.spec import stages as stage_spec
from ablate.sweep import selection
from ablate.sweep.cli import main as run_main
from ablate.sweep.raystart import load_scaled_s
from analysis.report import main as report_main
from tests.analysis_data import trial_config, write_trial
from tests.conftest import REPO, SMALL
from tests.test_faults import cli_env, stop_tree
from tests.test_paper_sweeps import BASELINE_GRIDS, EXPECTED_TRIALS, LR_GRID

# Three methods: A and B have a grid each; C's trials are made to fail in the first stage.
METHODS = [
    {"method": "simpo", "name": "A", "hparams": {"beta": 2.0, "gamma": {"grid": [0.0, 1.0]}}},
    {"method": "simpo", "name": "B", "hparams": {"beta": {"grid": [1.0, 2.0]}, "gamma": 0.5}},
    {"method": "simpo", "name": "C"},
]
STAGES = [
    {"name": "lr", "params": ["learning_rate"], "training": {"learning_rate": {"grid": [1.0e-4, 1.0e-3]}}},
    {"name": "hparams", "from": "best", "params": ["hparams"]},
    {"name": "seeds", "from": "best", "seeds": [0, 1]},
]


def write_sweep(tmp_path: Path, cache_dir, **fields) -> Path:
    sweep = {**SMALL, "name": "staged", "storage": str(tmp_path / "results"), "cache_dir": str(cache_dir),
             "methods": METHODS, "metric": "reward_margin", "stages": STAGES, **fields}  # fmt: skip
    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


# --- bad stage references: exit 2 before anything launches ---------------------------------------

LR = STAGES[0]
BAD = {
    "from on the first stage": ([{**LR, "from": "best"}, *STAGES[1:]], "stages.0.from", "the first stage has no earlier stage"),
    "unknown stage": ([LR, {**STAGES[1], "from": {"stage": "lrs"}}, STAGES[2]], "stages.1.from.stage",
                      "there is no stage 'lrs' before this one (did you mean 'lr'?)"),
    "a later stage": ([LR, {**STAGES[1], "from": {"stage": "seeds"}}, STAGES[2]], "stages.1.from.stage",
                      "there is no stage 'seeds' before this one"),
    "two stages of one name": ([LR, {**STAGES[1], "name": "lr"}], "stages.1.name", "a stage called 'lr' comes earlier"),
    "misspelt parameter": ([{**LR, "params": ["learnig_rate"]}, *STAGES[1:]], "stages.0.params",
                           "'learnig_rate' is not a grid or space of any method entry (did you mean 'learning_rate'?)"),
    "a grid no stage searches": ([LR, STAGES[2]], "methods.0.hparams.gamma", "a grid that no stage searches"),
    "misspelt stage metric": ([LR, {**STAGES[1], "metric": "reward_acc"}], "stages.1.metric",
                              "no trial reports 'reward_acc' (did you mean 'reward_accuracy'?)"),
    "misspelt from": ([LR, {"name": "x", "from": "bset", "params": ["hparams"]}], "stages.1.from",
                      "'bset' is not a stage reference"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_stage_references_are_exit_2_before_launch(case, tmp_path, capsys):
    stages, field, says = BAD[case]
    path = write_sweep(tmp_path, tmp_path / "cache", stages=stages)
    assert run_main([str(path)]) == 2  # launching, not a dry run: refused before Ray or training
    err = capsys.readouterr().err
    assert f"{path}: " in err and field in err and says in err, err
    assert len(err.strip().splitlines()) == 1  # one paragraph
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_duplicate_labels_are_refused(tmp_path, capsys):
    path = write_sweep(tmp_path, tmp_path / "cache", methods=[*METHODS, {"method": "simpo", "name": "A"}])
    assert run_main([str(path), "--dry-run"]) == 2
    assert "methods.3.name: the label 'A' is methods.0's too" in capsys.readouterr().err


# --- --dry-run: each stage's count, later ones as upper bounds -----------------------------------


def test_dry_run_of_the_built_in_staged_sweep(capsys):
    assert run_main([str(REPO / "sweeps" / "staged.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    spec = spec_mod.load_sweep(REPO / "sweeps" / "staged.yaml")
    lrs = len(spec.stages[0].training["learning_rate"].values)
    # Stage 1: each method at one setting x the learning rates; stage 2: each method's grid; 3: 5 seeds.
    grids = [
        len(spec_mod.expand(spec.model_copy(update={"methods": [m], "stages": []}))) for m in spec.methods
    ]
    counts = [len(spec.methods) * lrs, sum(grids), len(spec.methods) * 5]
    assert counts == [20, 23, 25]
    headers = [line for line in out if line.startswith("Stage ")]
    assert headers[0].startswith("Stage 1/3 lr:") and headers[0].endswith(f"; {counts[0]} trials")
    assert headers[1].startswith("Stage 2/3 hparams:") and headers[1].endswith(f"; ≤ {counts[1]} trials")
    assert headers[2].startswith("Stage 3/3 seeds:") and headers[2].endswith(f"; ≤ {counts[2]} trials")
    assert "from lr: best" in headers[1]
    table = out[out.index(headers[0]) + 1 : out.index(headers[1])]  # stage 1's trials, one per line
    assert sum(1 for line in table if line[:3].strip().isdigit()) == counts[0]
    assert out[-2].startswith(f"≤ {sum(counts)} trials in 3 stages")
    assert out[-1] == f"{sum(counts)} trials"


@pytest.mark.parametrize(
    "name", ["llama3-8b-base", "llama3-8b-instruct", "mistral-7b-base", "mistral-7b-instruct"]
)
def test_staged_paper_sweeps_against_the_cross_product(name, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    staged = REPO / "sweeps" / "paper" / "staged" / f"{name}.yaml"
    assert run_main([str(staged), "--dry-run"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    # Stage lr: the 3 SimPO runs + 8 baselines at their default x the learning rates; stage hparams:
    # the 3 SimPO runs + every baseline's grid at its best learning rate.
    lr, hparams = 3 + 8 * LR_GRID, 3 + BASELINE_GRIDS
    assert [lr, hparams] == [35, 52]
    assert out[-1] == f"{lr + hparams} trials" and lr + hparams < EXPECTED_TRIALS == 199
    # The same search space as the cross product: every setting of the cross product is reachable.
    full = spec_mod.load_sweep(REPO / "sweeps" / "paper" / f"{name}.yaml")
    spec = spec_mod.load_sweep(staged)
    assert [m.hparams for m in spec.methods] == [m.hparams for m in full.methods]
    assert spec.model_copy(update={"methods": [], "stages": [], "name": ""}) == full.model_copy(
        update={"methods": [], "stages": [], "name": ""}
    )


# --- a stage from earlier winners --------------------------------------------------------------


def test_a_stage_carries_the_winners_and_holds_the_rest_at_defaults(tmp_path):
    spec = spec_mod.load_sweep(write_sweep(tmp_path, tmp_path / "cache"))
    first = spec_mod.expand(stage_spec.stage_spec(spec, 0, None))
    # Stage lr: every method at its default (A: gamma 1.0 is in its grid; B: beta 2.0), lr searched.
    assert sorted((t["label"], t["setting"]) for t in first) == [
        (label, f"{fixed}learning_rate={lr}")
        for label, fixed in [("A", "beta=2.0,gamma=1.0,"), ("B", "beta=2.0,gamma=0.5,"), ("C", "")]
        for lr in (0.0001, 0.001)
    ]
    bases = {"A": [stage_spec.Base({"beta": 2.0, "gamma": 1.0}, {"learning_rate": 0.001})]}
    second = spec_mod.expand(stage_spec.stage_spec(spec, 1, bases))  # B and C have no winner: left out
    assert [(t["label"], t["hparams"]["gamma"], t["training"]["learning_rate"]) for t in second] == [
        ("A", 0.0, 0.001),
        ("A", 1.0, 0.001),
    ]
    top2 = {"A": [stage_spec.Base({"beta": 2.0, "gamma": 0.0}, {"learning_rate": lr}) for lr in (1e-3, 1e-4)]}
    third = spec_mod.expand(stage_spec.stage_spec(spec, 2, top2))
    assert [(t["setting"], t["seed"]) for t in third] == [
        (f"beta=2.0,gamma=0.0,learning_rate={lr}", s) for lr in (0.001, 0.0001) for s in (0, 1)
    ]
    # Held values: the default when the space holds it, else its first value or a range's centre.
    space = spec_mod.Space
    assert stage_spec.held_value(0.1, space(grid=[0.01, 0.05, 0.1])) == 0.1
    assert stage_spec.held_value(0.1, space(grid=[0.5, 1.0])) == 0.5
    assert stage_spec.held_value(True, space(choice=[1, 0])) == 1  # True is not the number 1 here
    assert stage_spec.held_value(5.0, space(uniform=(1.0, 3.0))) == 2.0
    assert stage_spec.held_value(None, space(loguniform=(1e-5, 1e-3))) == 1e-4


# --- the selection: ties, the top-k cut and stopped methods --------------------------------------


def test_selection_reports_ties_and_stopped_methods(tmp_path):
    stage = tmp_path / "stage"

    def trial(name, label, gamma, seed, value, **kw):
        cfg = trial_config(label, "simpo", {"beta": 2.0, "gamma": gamma}, seed,
                           point={"hparams": {"beta": 2.0, "gamma": gamma}, "training": {}})  # fmt: skip
        final = None if value is None else {"reward_accuracy": value, "train_loss": 0.5}
        write_trial(stage, name, cfg, final, **kw)

    # X: gamma 1 and gamma 2 tie on the mean (0.5); gamma 2 has the lower std, so it wins; gamma 3 is last.
    for i, (gamma, seed, value) in enumerate([(1.0, 0, 0.4), (1.0, 1, 0.6), (2.0, 0, 0.5), (2.0, 1, 0.5),
                                              (3.0, 0, 0.1), (3.0, 1, 0.2)]):  # fmt: skip
        trial(f"{i:03d}-x", "X", gamma, seed, value)
    trial("010-y", "Y", 1.0, 0, None, error="InjectedFault: injected fault at step 1")
    trial("011-z", "Z", 1.0, 0, None)  # unfinished: no final record
    got = {
        m["label"]: m for m in selection.select(stage, ["X", "Y", "Z", "W"], "reward_accuracy", "max", "s")
    }
    x = got["X"]
    assert x["status"] == "selected" and [s["setting"] for s in x["ranking"]] == [
        "beta=2.0,gamma=2.0", "beta=2.0,gamma=1.0", "beta=2.0,gamma=3.0"
    ]  # fmt: skip
    best = x["ranking"][0]
    assert best["point"] == {"hparams": {"beta": 2.0, "gamma": 2.0}, "training": {}}
    assert best["mean"] == pytest.approx(0.5) and best["std"] == 0.0 and best["n"] == 2
    assert x["ranking"][1]["ci_low"] < 0.5 < x["ranking"][1]["ci_high"]  # a 95 % t-interval over 2 seeds
    assert x["tie"] == {"with": ["beta=2.0,gamma=1.0"], "decided_by": "lower standard deviation"}
    assert selection.cut_tie(x["ranking"], 1).endswith("beta=2.0,gamma=1.0")  # top 1 leaves out its tie
    assert selection.cut_tie(x["ranking"], 2) is None
    assert got["Y"]["status"] == "stopped"
    assert (
        "no finished trial in stage s (1 errored)" in got["Y"]["reason"]
        and "InjectedFault" in got["Y"]["reason"]
    )
    assert got["Z"]["status"] == "stopped" and "1 unfinished" in got["Z"]["reason"]
    assert got["W"] == {"label": "W", "status": "stopped", "reason": "no trial of it ran in stage s"}


# --- end to end on a real local Ray: kill during stage 2, --resume ---------------------------------


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stage_trials(stage_dir: Path) -> list[dict]:
    """Each trial of a stage from its own files: its config and its final record (None if none)."""
    out = []
    for d in sorted(p for p in stage_dir.iterdir() if (p / "params.json").is_file()):
        final = next((r for r in reversed(_rows(d / "result.json")) if "status" in r), None)
        out.append({"dir": d, "cfg": json.loads((d / "params.json").read_text())["trial"], "final": final})
    return out


def winners(trials: list[dict], metric: str) -> dict[str, str]:
    """Each label's best setting by its seed mean of ``metric`` among finished trials (ties: run order)."""
    values: dict[tuple[str, str], list[float]] = {}
    order = {}
    for t in trials:
        if t["final"] and t["final"]["status"] == "finished":
            key = (t["cfg"]["label"], t["cfg"]["setting"])
            values.setdefault(key, []).append(t["final"][metric])
            order.setdefault(key, t["cfg"]["index"])
    best: dict[str, tuple] = {}
    for (label, setting), v in values.items():
        rank = (-sum(v) / len(v), order[(label, setting)])
        if label not in best or rank < best[label][0]:
            best[label] = (rank, setting)
    return {label: setting for label, (_, setting) in best.items()}


@pytest.fixture(scope="module")
def staged_run(tmp_path_factory, cache_dir, start) -> dict:
    """The 3-stage sweep through the CLI: C's trials raise in stage lr; stage hparams' first trial hangs
    before step 6 until the test SIGKILLs the driver; then ``--resume`` without faults."""
    tmp = tmp_path_factory.mktemp("staged")
    path = write_sweep(tmp, cache_dir)
    root = tmp / "results" / "staged"
    env = cli_env(TUNE_GLOBAL_CHECKPOINT_S="1")  # Tune saves each stage's state every second
    faults = "stage=lr,index=4,step=1,kind=raise; stage=lr,index=5,step=1,kind=raise; stage=hparams,index=0,step=6,kind=hang"
    log_path = tmp / "first.log"
    t0 = time.time()
    with log_path.open("w") as log:
        driver = subprocess.Popen([sys.executable, "-m", "ablate.run", str(path)], stdout=log, stderr=subprocess.STDOUT,
                                  cwd=REPO, env={**env, "ABLATE_FAULT": faults}, start_new_session=True)  # fmt: skip
        ours = [psutil.Process(driver.pid)]

        def hung_in_stage_2() -> bool:  # stage hparams' trial 0 reported step 4, then blocks before step 6
            return any(
                r.get("step") == 4 for f in root.glob("hparams/000-*/result.json") for r in _safe_rows(f)
            )

        try:
            deadline = time.time() + load_scaled_s(600)
            while not hung_in_stage_2():
                assert driver.poll() is None and time.time() < deadline, log_path.read_text()[-3000:]
                ours += [p for p in ours[0].children(recursive=True) if p not in ours]
                time.sleep(0.2)
            ours += [p for p in ours[0].children(recursive=True) if p not in ours]
            stage_1 = {
                d.name: (d / "result.json").read_bytes() for d in (root / "lr").iterdir() if d.is_dir()
            }
            os.kill(driver.pid, signal.SIGKILL)
        finally:
            stop_tree(ours)  # the driver and the local Ray it started, by pid
    killed_s = time.time() - t0
    resumed = subprocess.run([sys.executable, "-m", "ablate.run", str(path), "--resume"], capture_output=True,
                             text=True, cwd=REPO, env=env, timeout=1800)  # fmt: skip
    out = tmp / "reports"
    report_rc = report_main([str(root), "--out", str(out)])
    print(f"staged sweep: killed after {killed_s:.1f}s, resumed in {time.time() - t0 - killed_s:.1f}s")
    return {"root": root, "first": log_path.read_text(), "resumed": resumed, "stage_1": stage_1,
            "report_rc": report_rc, "report": out / "staged"}  # fmt: skip


def _safe_rows(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being appended
            continue
    return rows


@pytest.mark.slow
def test_kill_during_stage_2_then_resume_finishes_without_rerunning_stage_1(staged_run):
    resumed, root = staged_run["resumed"], staged_run["root"]
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "Stage 1/3 lr: finished before; not rerun." in resumed.stdout
    assert (
        "Stage 2/3 hparams:" in resumed.stdout
        and "(resumed)" in resumed.stdout.split("Stage 2/3")[1].split("\n")[0]
    )
    # Stage 1: the same trial directories, their results untouched.
    now = {d.name: (d / "result.json").read_bytes() for d in (root / "lr").iterdir() if d.is_dir()}
    assert now == staged_run["stage_1"]
    # The trial that hung when the driver was killed ran again, without the fault, to its last step.
    hung = [t for t in stage_trials(root / "hparams") if t["cfg"]["index"] == 0]
    assert len(hung) == 1 and hung[0]["final"]["status"] == "finished" and hung[0]["final"]["steps"] == 8
    assert all(t["final"]["status"] == "finished" for t in stage_trials(root / "hparams"))


@pytest.mark.slow
def test_three_stages_end_to_end(staged_run):
    root = staged_run["root"]
    record = json.loads((root / "stages.json").read_text())
    assert record["stages"] == ["lr", "hparams", "seeds"] and list(record["selections"]) == record["stages"]
    lr, hparams, seeds = (stage_trials(root / s) for s in record["stages"])
    assert len(lr) == 6 and len(hparams) == 4 and len(seeds) == 4  # C stopped after stage lr
    assert {(t["cfg"]["label"], t["cfg"]["seed"]) for t in seeds} == {(m, s) for m in "AB" for s in (0, 1)}
    assert all(t["final"]["status"] == "finished" for t in hparams + seeds)
    for t in lr + hparams + seeds:  # trials know their sweep and stage (the fault hook targets a stage)
        assert t["cfg"]["sweep"] == "staged" and t["cfg"]["stage"] == t["dir"].parent.name
    # The record of each stage: its metric, the winner with its mean and interval, what it beat.
    final = {m["label"]: m for m in record["selections"]["seeds"]["methods"]}
    assert final["A"]["status"] == final["B"]["status"] == "selected"
    for label in "AB":
        best = final[label]["ranking"][0]
        assert best["n"] == 2 and best["ci_low"] <= best["mean"] <= best["ci_high"]
    # The report reads the staged sweep as one: Table 4 from the final stage, and the tuning path.
    assert staged_run["report_rc"] == 0
    main = pd.read_csv(staged_run["report"] / "main.csv")
    assert sorted(main["label"]) == ["A", "B"] and set(main["seeds"]) == {2}  # the final stage's two seeds
    assert dict(zip(main["label"], main["setting"], strict=True)) == {
        label: m["ranking"][0]["setting"] for label, m in final.items() if label in "AB"
    }
    path = pd.read_csv(staged_run["report"] / "tuning_path.csv")
    assert list(path["stage"][path["label"] == "A"]) == ["lr", "hparams", "seeds"]
    assert list(path["status"][path["label"] == "C"]) == ["stopped", "stopped before", "stopped before"]
    md = (staged_run["report"] / "report.md").read_text()
    assert "## Tuning path" in md and "the tables show its final stage, seeds" in md


@pytest.mark.slow
def test_each_stage_uses_exactly_the_previous_stages_winners(staged_run):
    root = staged_run["root"]
    lr, hparams, seeds = (stage_trials(root / s) for s in ("lr", "hparams", "seeds"))
    first = winners(lr, "reward_margin")  # recomputed from the trials' own files
    assert set(first) == {"A", "B"}
    best_lr = {
        t["cfg"]["label"]: t["cfg"]["training"]["learning_rate"]
        for t in lr
        if t["cfg"]["setting"] == first.get(t["cfg"]["label"])
    }
    got = {(t["cfg"]["label"], t["cfg"]["training"]["learning_rate"], t["cfg"]["hparams"]["beta"],
            t["cfg"]["hparams"]["gamma"]) for t in hparams}  # fmt: skip
    assert got == {("A", best_lr["A"], 2.0, g) for g in (0.0, 1.0)} | {
        ("B", best_lr["B"], b, 0.5) for b in (1.0, 2.0)
    }
    second = winners(hparams, "reward_margin")
    assert {(t["cfg"]["label"], t["cfg"]["setting"]) for t in seeds} == set(second.items())
    record = json.loads((root / "stages.json").read_text())["selections"]
    for stage, expected in (("lr", first), ("hparams", second)):
        chosen = {
            m["label"]: m["ranking"][0]["setting"]
            for m in record[stage]["methods"]
            if m["status"] == "selected"
        }
        assert chosen == expected, stage
    # A setting an earlier stage already ran with that seed is replayed, not trained again: stage lr's
    # winner (at the default setting) in stage hparams, seed 0 of each winner in stage seeds.
    for t in hparams + seeds:
        earlier = [u for u in lr + hparams if u["cfg"]["setting"] == t["cfg"]["setting"] and u["cfg"]["seed"] == t["cfg"]["seed"]
                   and u["dir"].parent != t["dir"].parent and not u["final"].get("replayed_from")]  # fmt: skip
        if earlier:
            assert t["final"]["replayed_from"] == str(earlier[0]["dir"])
            assert t["final"]["reward_margin"] == earlier[0]["final"]["reward_margin"]
        else:
            assert "replayed_from" not in t["final"]
    assert sum(bool(t["final"].get("replayed_from")) for t in hparams) == 2


@pytest.mark.slow
def test_a_method_with_no_finished_trial_stops_and_the_others_go_on(staged_run):
    root = staged_run["root"]
    lr = {
        m["label"]: m for m in json.loads((root / "stages.json").read_text())["selections"]["lr"]["methods"]
    }
    assert lr["C"]["status"] == "stopped"
    assert lr["C"]["reason"].startswith("no finished trial in stage lr (2 errored)")
    assert "InjectedFault: injected fault at step 1" in lr["C"]["reason"]
    assert "C                stopped: no finished trial in stage lr (2 errored)" in staged_run["first"]
    later = [t for s in ("hparams", "seeds") for t in stage_trials(root / s)]
    assert later and not any(t["cfg"]["label"] == "C" for t in later)
    seeds = {
        m["label"]: m
        for m in json.loads((root / "stages.json").read_text())["selections"]["seeds"]["methods"]
    }
    assert seeds["C"] == {"label": "C", "status": "stopped before", "reason": "stopped at stage lr"}
    assert "C                stopped before: stopped at stage lr" in staged_run["resumed"].stdout


@pytest.mark.slow
def test_a_finished_staged_sweep_is_not_mixed_with_new_results(staged_run, capsys):
    with capsys.disabled():  # Ray's logger keeps the stream it finds when imported: not this test's capture
        import ray
    path = staged_run["root"].parents[1] / "staged.yaml"
    before = (staged_run["root"] / "stages.json").read_bytes()
    assert run_main([str(path)]) == 2  # exists: --resume or --overwrite
    assert "a sweep called 'staged' already exists" in capsys.readouterr().err
    assert run_main([str(path), "--resume"]) == 0  # in this process: nothing to run, so no Ray starts
    out = capsys.readouterr().out
    assert out.count("finished before; not rerun.") == 3 and "Stage seeds: winners by reward_margin" in out
    assert not ray.is_initialized()
    assert (staged_run["root"] / "stages.json").read_bytes() == before
