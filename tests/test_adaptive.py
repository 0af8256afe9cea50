"""Adaptive seeds (``seeds: {start, max}``): the look rule (ablate.sweep.sequential), the sweep file's
validation and ``--dry-run``; on a real local Ray (slow), a sweep whose undecided claim's arms, and
only those, get another seed, checked against the verdicts the report's code computes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from ablate.sweep import sequential as S
from ablate.sweep.cli import main as run_main
from tests.conftest import REPO, SMALL
from tests.test_faults import cli_env

# A and B differ by a negligible beta (a claim on them stays undecided); A and C take the same number
# of steps (a claim on that is decided at once: Δ = 0 with no variance).
METHODS = [
    {"method": "simpo", "name": "A", "hparams": {"beta": 2.0}},
    {"method": "simpo", "name": "B", "hparams": {"beta": 2.0001}},
    {"method": "simpo", "name": "C", "hparams": {"beta": 2.5}},
]
CLAIMS = [
    {"same": "A", "as": "C", "metric": "steps"},
    {"same": "A", "as": "B", "metric": "reward_accuracy", "margin": 0},
]


def write_sweep(tmp_path, cache_dir, **fields):
    sweep = {**SMALL, "name": "adaptive", "storage": str(tmp_path / "results"), "cache_dir": str(cache_dir),
             "methods": METHODS, "claims": CLAIMS, "seeds": {"start": 2, "max": 3},
             **fields}  # fmt: skip
    path = tmp_path / "adaptive.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


# --- the rule ----------------------------------------------------------------------------------


def test_looks_and_their_level():
    assert S.looks(2, 5) == 4 and S.look_alpha(0.05, 2, 5) == pytest.approx(0.0125)
    assert S.looks(3, 3) == 1 and S.look_alpha(0.05, 3, 3) == 0.05  # a fixed design: one look at α


def arms(*keys: str) -> tuple[frozenset[str], frozenset[str]]:
    return frozenset(keys[:1]), frozenset(keys[1:])


def test_only_undecided_claims_arms_get_another_seed_up_to_max():
    decided: dict[str, str] = {}
    looked = [S.ClaimLook("x", "supported", arms("a", "c")), S.ClaimLook("y", "undecided", arms("a", "b")),
              S.ClaimLook("z", "not measured", arms("d", "e"))]  # fmt: skip
    have = {"a": 2, "b": 3, "c": 2, "d": 2, "e": 2}
    assert S.next_round(looked, {}, have, 3) == {"a"}  # b is at max already
    have["b"] = 2
    assert S.next_round(looked, decided, have, 3) == {"a", "b"}  # more seeds cannot measure z
    assert decided == {"x": "supported"}
    # Decided once, a claim stays decided: its arms get no seed when a later look leaves it open.
    later = [S.ClaimLook("x", "undecided", arms("a", "c")), S.ClaimLook("y", "equivalent", arms("a", "b"))]
    assert S.next_round(later, decided, {"a": 3, "b": 3, "c": 2}, 4) == set()
    assert decided == {"x": "supported", "y": "equivalent"}


# --- the sweep file ----------------------------------------------------------------------------

BAD = {
    "max below start": ({"start": 3, "max": 2}, "max (2) is below start (3)"),
    "start 0": ({"start": 0, "max": 2}, "start: Input should be greater than or equal to 1"),
    "misspelt key": ({"start": 2, "mx": 4}, "mx: Extra inputs are not permitted"),
    "not an int": ({"start": "two", "max": 4}, "start: Input should be a valid integer"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_adaptive_seeds_are_exit_2_before_launch(case, tmp_path, capsys):
    seeds, message = BAD[case]
    path = write_sweep(tmp_path, tmp_path / "cache", seeds=seeds)
    assert run_main([str(path)]) == 2  # launching, not a dry run: refused before Ray or training
    err = capsys.readouterr().err
    assert str(path) in err and "seeds:" in err and message in err and "{start: 2, max: 8}" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "results").exists()


def test_adaptive_seeds_need_a_grid_sweep_without_stages(tmp_path, capsys):
    stages = [{"name": "lr", "params": ["learning_rate"], "training": {"learning_rate": {"grid": [1e-4, 1e-3]}}}]
    path = write_sweep(tmp_path, tmp_path / "cache", stages=stages)
    assert run_main([str(path), "--dry-run"]) == 2
    assert "adaptive seeds ({start, max}) run a grid sweep without stages" in capsys.readouterr().err


def test_dry_run_prints_the_worst_case_and_a_list_still_works(tmp_path, capsys):
    path = write_sweep(tmp_path, tmp_path / "cache", seeds={"start": 2, "max": 5})
    assert run_main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "at most 4 rounds, each look at α/4 = 0.0125" in out and "Round 1: 6 trials" in out
    assert out.rstrip().endswith("Worst case (every setting to 5 seeds): 15 trials; at least 6\n15 trials")
    path = write_sweep(tmp_path, tmp_path / "cache", seeds=[0, 1, 2])
    assert run_main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Adaptive" not in out and out.rstrip().endswith("9 trials")


# --- a real sweep ------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_adaptive_sweep_gives_seeds_only_to_the_undecided_claims_arms(tmp_path, cache_dir, start):
    from ablate.readout.loader import find_sweeps, load_trials
    from ablate.verdicts import claim_tests as verdicts
    from ablate.verdicts import decider as adaptive
    from ablate.verdicts import sweep_claims as claims

    path = write_sweep(tmp_path, cache_dir)
    proc = subprocess.run([sys.executable, "-m", "ablate.run", str(path)], capture_output=True, text=True,
                          cwd=REPO, env=cli_env(), timeout=1800)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    root = tmp_path / "results" / "adaptive"
    record = json.loads((root / "rounds.json").read_text())
    assert [r["trials"] for r in record["rounds"]] == [6, 2]  # 2 looks at most (start 2, max 3)

    # The verdicts at the first look, recomputed by the report's code on round 1's trials at α/2.
    first = load_trials(find_sweeps([root / "round-1"]))
    tests = claims.tests(first, CLAIMS, "reward_accuracy")
    verdicts.adjust(tests, 0.05 / 2)
    assert [t.verdict for t in tests] == ["supported", "undecided"]
    assert record["rounds"][0]["verdicts"] == {t.claim: t.verdict for t in tests}
    undecided_arms = {k for t in tests if t.verdict == "undecided" for arm in t.arms for k in arm["config_key"]}
    # Round 2: seed 2 of exactly those settings (A and B), nothing of C.
    second = load_trials(find_sweeps([root / "round-2"]))
    assert set(second["config_key"]) == undecided_arms and set(second["label"]) == {"A", "B"}
    assert set(second["seed"]) == {2} and (second["status"] == "finished").all()
    every = load_trials(find_sweeps([root]))
    assert every.groupby("label")["seed"].apply(sorted).to_dict() == {"A": [0, 1, 2], "B": [0, 1, 2], "C": [0, 1]}
    # The report tests these trials at the looks' level, not at α.
    alpha, note = adaptive.look_alpha(every)
    assert alpha == 0.025 and "α/2 = 0.025" in note and adaptive.look_alpha(first.iloc[0:0]) == (0.05, "")

    # --resume of a finished sweep reruns nothing (and starts no Ray).
    again = subprocess.run([sys.executable, "-m", "ablate.run", str(path), "--resume"], capture_output=True,
                           text=True, cwd=REPO, env=cli_env(), timeout=900)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Round 1: finished before; not rerun." in again.stdout and "Round 2: finished before" in again.stdout
