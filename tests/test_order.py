"""The order a grid sweep's trials run in: interleaved by default (every method early, mid and late,
reproducible from ``order_seed``), ``order: file`` as written; shown by --dry-run, recorded in storage."""

from __future__ import annotations

import json
import textwrap

from ablate import spec as spec_mod
from ablate.sweep import cli as run
from ablate.sweep import order as order_mod
from ablate.sweep import plan as plan_mod
from tests.conftest import REPO

SWEEP = """
name: o
methods:
  - method: simpo
    hparams: {gamma: {grid: [0.0, 0.5, 1.0, 1.6, 2.4, 4.0]}}
  - method: simpo
    hparams: {gamma: 1.0, length_normalize: false}
  - method: dpo
seeds: [0, 1]
"""


def load(tmp_path, extra: str = ""):
    path = tmp_path / "o.yaml"
    path.write_text(textwrap.dedent(SWEEP) + extra)
    return path, spec_mod.load_sweep(path)


def indices(spec) -> list[int]:
    return [t["index"] for t in plan_mod.build(spec).trials]


def test_interleaved_is_the_default_and_no_method_runs_last(tmp_path):
    _, spec = load(tmp_path)
    assert spec.order == "interleaved" and spec.order_seed == 0
    trials = plan_mod.build(spec).trials
    expanded = spec_mod.expand(spec)
    n = len(expanded)
    assert sorted(t["index"] for t in trials) == list(range(n))  # every trial once, with its file index
    assert [t["index"] for t in trials] != list(range(n))
    for t in trials:  # index names the same trial as in the file's expansion
        assert t == expanded[t["index"]]
    for label in ("SimPO", "SimPO w/o LN", "DPO"):
        positions = [p for p, t in enumerate(trials) if t["label"] == label]
        # spread evenly: half of each method's trials (each has an even number here) in each half of the run
        assert sum(p < n // 2 for p in positions) == len(positions) // 2, (label, positions)
    # SimPO's 12 trials: settings and seeds do not run in file order either
    simpo = [t["index"] for t in trials if t["label"] == "SimPO"]
    assert simpo != sorted(simpo)


def test_interleaved_order_is_reproducible_from_the_sweep_seed(tmp_path):
    _, spec = load(tmp_path)
    again = spec_mod.load_sweep(tmp_path / "o.yaml")
    assert indices(spec) == indices(again)
    other = spec.model_copy(update={"order_seed": 1})
    assert indices(other) != indices(spec)
    assert indices(other) == indices(spec.model_copy(update={"order_seed": 1}))


def test_order_file_runs_the_trials_as_the_file_expands(tmp_path):
    _, spec = load(tmp_path, "order: file\n")
    assert indices(spec) == list(range(len(spec_mod.expand(spec))))


def test_dry_run_prints_the_run_order(tmp_path, capsys):
    path, spec = load(tmp_path, "order_seed: 7\n")
    assert run.main([str(path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("order: "))  # after the data split
    assert lines[at].startswith("order: interleaved (seed 7)")
    rows = []
    for line in lines[at + 2 :]:  # the header, then one row per trial (the memory plan follows)
        if not line.split() or not line.split()[0].isdigit():
            break
        rows.append(line.split())
    assert [int(r[0]) for r in rows] == list(range(len(rows)))  # run position
    assert [int(r[1]) for r in rows] == indices(spec)  # the trial's index, in that order
    assert lines[-1] == f"{len(rows)} trials"


def test_the_record_in_storage_lists_the_run_order(tmp_path):
    _, spec = load(tmp_path)
    plan = plan_mod.build(spec)
    order_mod.write_record(str(tmp_path / "results" / "o"), plan.run_order())
    record = json.loads((tmp_path / "results" / "o" / order_mod.RECORD).read_text())
    assert record["order"] == "interleaved" and record["order_seed"] == 0
    assert [t["index"] for t in record["trials"]] == indices(spec)
    assert [t["position"] for t in record["trials"]] == list(range(len(plan.trials)))
    assert record["trials"][0]["label"] == plan.trials[0]["label"]


def test_order_file_with_a_search_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nmethods: [{method: simpo, hparams: {beta: {uniform: [1.0, 4.0]}}}]\n"
        "search: random\nnum_samples: 2\norder: file\n"
    )
    assert run.main([str(path), "--dry-run"]) == run.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"{path}: order:" in err and "search: grid" in err


def test_a_misspelt_order_field_gets_a_suggestion(tmp_path, capsys):
    path, _ = load(tmp_path)
    path.write_text(path.read_text() + "ordr: file\n")
    assert run.main([str(path), "--dry-run"]) == run.EXIT_BAD_INPUT
    assert "order" in capsys.readouterr().err


def test_the_gamma_sweep_puts_dpo_before_the_end():
    # The case: DPO is listed last in sweeps/gamma.yaml; interleaved, one of its two trials
    # runs in the first half of the sweep.
    plan = plan_mod.build(spec_mod.load_sweep(REPO / "sweeps" / "gamma.yaml"))
    positions = [p for p, t in enumerate(plan.trials) if t["method"] == "dpo"]
    assert min(positions) < len(plan.trials) // 2 <= max(positions)


def test_the_schema_lists_the_order_fields(capsys):
    assert run.main(["--schema"]) == 0
    props = json.loads(capsys.readouterr().out)["properties"]
    assert props["order"]["enum"] == ["interleaved", "file"] and props["order"]["default"] == "interleaved"
    assert props["order_seed"]["default"] == 0
