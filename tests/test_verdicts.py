"""Verdicts: the per-example bootstrap, the comparison of two arms, the many-claims correction, and the
sweep file's own claims (checked at load, tested in the report)."""

import math

import numpy as np
import pandas as pd
import pytest

from ablate import spec as spec_mod
from ablate.readout.loader import config_key, load_trials
from ablate.spec import SpecError
from ablate.trial.evaluate import spearman
from ablate.verdicts import claim_tests as V
from ablate.verdicts import compare as C
from ablate.verdicts import examples
from tests.analysis_data import metrics, trial_config, write_trial


def test_draws_recompute_each_metric_on_the_drawn_examples():
    rng = np.random.default_rng(0)
    n = 60
    pairs = np.column_stack([rng.integers(2, 9, n), rng.integers(2, 9, n), np.round(rng.normal(size=n), 1),
                             np.round(rng.normal(size=n), 1)]).astype(float)  # fmt: skip
    idx = rng.integers(0, n, (20, n))
    got = examples.replicates([pairs], idx)[:, 0]
    want = [spearman(np.r_[pairs[i, 2], pairs[i, 3]], np.r_[pairs[i, 0], pairs[i, 1]]) for i in idx]
    assert np.allclose(got, want)  # ties share their average rank, as the trial computes it
    x = rng.random(n)
    assert np.allclose(examples.replicates([x, 2 * x], idx), np.column_stack([x[idx].mean(1), 2 * x[idx].mean(1)]))


def sweep(tmp_path, arms: dict, seeds=(0, 1, 2), claims=None):
    """Trials with hand-made held-out records (tests.analysis_data) for each (label, method, hparams, acc)."""
    i = 0
    for label, (method, hparams, acc) in arms.items():
        for seed in seeds:
            cfg = trial_config(label, method, hparams, seed, claims=claims or [])
            write_trial(tmp_path / "s", f"{i:03d}", cfg, metrics(acc + 0.01 * seed, 0.5, 4.0, 1.0 + 0.1 * seed, 9.0))
            i += 1
    return load_trials([tmp_path / "s"])


def test_compare_adds_the_examples_variance_to_the_seeds(tmp_path):
    df = sweep(tmp_path, {"SimPO": ("simpo", {"beta": 2.0}, 0.7), "DPO": ("dpo", {"beta": 0.1}, 0.6)})
    a, b = df[df["label"] == "SimPO"], df[df["label"] == "DPO"]
    c = C.compare(a, b, "reward_accuracy", pair_seeds=True)
    assert c.paired and c.n_a == 3 and c.delta == pytest.approx(0.1)
    assert c.se_seeds == 0.0 and c.se_examples > 0 and c.examples == 40  # seeds agree; the 40 pairs do not
    lo, hi = c.interval()
    assert lo < c.delta < hi and c.df == pytest.approx(39)
    runtime = C.compare(a, b, "runtime_s")  # one value per trial: the seed term only
    assert runtime.se_examples == 0.0 and runtime.se == runtime.se_seeds > 0 and runtime.p_difference() == 1.0
    welch = C.compare(a, b, "reward_accuracy")  # the default: Welch over seeds
    assert not welch.paired and welch.se_seeds > 0 and welch.se > c.se  # the shared seed shift is not removed
    unpaired = C.compare(a.iloc[:2], b.iloc[1:], "reward_accuracy", pair_seeds=True)
    assert not unpaired.paired and unpaired.se_seeds > 0
    single = C.compare(a.iloc[:1], b.iloc[:1], "reward_accuracy")
    assert single.interval() == (-math.inf, math.inf) and single.p_difference() == 1.0
    assert C.compare(a, b, "reward_accuracy", pair_seeds=True).se == c.se  # a fixed RNG seed: reproducible


def comparison(delta, se, df=30.0):
    return C.Comparison("m", delta, se, df, 3, 3, True, se, 0.0, 0, 0.5)


def test_holm_with_shaffers_constraint_and_the_four_verdicts():
    arms = (pd.DataFrame({"trial_s": [3600.0]}), pd.DataFrame({"trial_s": [7200.0]}))
    tests = [V.simple_test("1", "a", "reward_accuracy", ">", comparison(0.1, 0.01), None, ("A", "B"), arms),
             V.simple_test("2", "b", "reward_accuracy", ">", comparison(-0.1, 0.01), None, ("A", "B"), arms),
             V.simple_test("3", "c", "reward_accuracy", ">", comparison(0.0005, 0.002), None, ("A", "B"), arms),
             V.simple_test("4", "d", "reward_accuracy", ">", comparison(0.02, 0.02), None, ("A", "B"), arms),
             V.simple_test("5", "e", "reward_accuracy", "=", comparison(0.0, 0.002), 0.01, ("A", "B"), arms)]  # fmt: skip
    V.adjust(tests)
    assert [t.verdict for t in tests] == [V.SUPPORTED, V.CONTRADICTED, V.EQUIVALENT, V.UNDECIDED, V.SUPPORTED]
    # 10 hypotheses, at most 5 true at once: the smallest p is multiplied by 5, not 10.
    p, i, k = min((p, i, k) for i, t in enumerate(tests) for k, p in t.p.items())
    assert tests[i].adjusted[k] == pytest.approx(min(1.0, 5 * p)) and sum(len(t.p) for t in tests) == 10
    table = V.table(tests)
    undecided = table.loc[3, "to decide"]
    assert "seeds per arm (difference)" in undecided and "trial-h" in undecided
    n = int(undecided.split()[0])
    assert undecided.endswith(f"+{(n - 3) * 3:.3g} trial-h")  # (n − 3) more seeds of 1 h and of 2 h


def test_claims_are_checked_when_the_sweep_file_is_read(tmp_path):
    head = "name: c\nmethods: [{method: simpo, hparams: {gamma: {grid: [0.0, 1.0]}}}, {method: dpo}]\n"
    cases = {
        "claims: [{better: SimPo, than: DPO, metric: reward_accuracy}]": "no method labelled 'SimPo'",
        "claims: [{better: SimPO, than: DPO, metric: reward_acc}]": "did you mean 'reward_accuracy'",
        "claims: [{same: SimPO, as: 'SimPO gamma=0', metric: reward_accuracy, margin: -0.1}]": "claims.0.margin",
        "claims: [{same: SimPO, as: 'SimPO tau=0', metric: reward_accuracy}]": "sets no hyperparameter tau",
        "claims: [{better: SimPO, metric: reward_accuracy}]": "needs `than: B`",
    }
    for text, needle in cases.items():
        path = tmp_path / "sweep.yaml"
        path.write_text(head + text + "\n")
        with pytest.raises(SpecError) as e:
            spec_mod.load_sweep(path)
        assert str(path) in str(e.value) and needle in str(e.value), (needle, str(e.value))
    path.write_text(head + "claims: [{same: SimPO, as: 'SimPO gamma=0', metric: reward_accuracy, margin: 0.02}]\n")
    trials = spec_mod.expand(spec_mod.load_sweep(path))
    assert trials[0]["claims"] == [{"same": "SimPO", "as": "SimPO gamma=0", "metric": "reward_accuracy", "margin": 0.02}]
    assert config_key(trials[0]) == config_key({**trials[0], "claims": []})  # claims do not change a setting


def test_the_sweep_files_claims_are_in_the_findings_table(tmp_path):
    from analysis.tables import findings_table

    claims = [{"better": "SimPO", "than": "DPO", "metric": "reward_accuracy"},
              {"same": "SimPO", "as": "SimPO gamma=1", "metric": "reward_accuracy", "margin": 0.5}]  # fmt: skip
    df = sweep(tmp_path, {"SimPO": ("simpo", {"beta": 2.0, "gamma": 1.0}, 0.9), "DPO": ("dpo", {"beta": 0.1}, 0.3)},
               claims=claims)  # fmt: skip
    table = findings_table(df, "reward_accuracy")
    own = table.data[table.data["finding"].str.startswith("claim")].set_index("finding")
    assert own.loc["claim 1", "claim"] == "SimPO better than DPO on reward_accuracy"
    assert own.loc["claim 1", "verdict"] == V.SUPPORTED and own.loc["claim 2", "verdict"] == V.SUPPORTED
    assert "Holm" in table.caption
