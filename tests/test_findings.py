"""The findings verdicts on hand-made result sets."""

import math

import pandas as pd
import pytest

from ablate.best import best_rows
from ablate.readout.summary import seed_summary
from ablate.verdicts import claim_tests as V
from ablate.verdicts import paper_claims as F
from ablate.verdicts import sweep_claims as claims
from analysis import findings_frame as findings
from analysis import stats, tables


def rows(label, setting, values: dict, seeds=(0, 1, 2), **extra):
    out = []
    for i, s in enumerate(seeds):
        out.append({"label": label, "setting": setting, "seed": s, "status": "finished", **extra,
                    **{k: v[i] if isinstance(v, list) else v for k, v in values.items()}})  # fmt: skip
    return out


def test_interval_matches_the_t_distribution():
    iv = F.interval([1.0, 2.0, 3.0])
    assert iv.mean == 2.0 and iv.n == 3
    assert iv.hi - iv.mean == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)
    single = F.interval([5.0])
    assert single.lo == -math.inf and F.verdict(single, F.interval([0.0, 0.1]), ">") == F.INCONCLUSIVE


def test_verdict_directions():
    hi, lo = F.interval([0.9, 0.91, 0.92]), F.interval([0.1, 0.11, 0.12])
    assert F.verdict(hi, lo, ">") == F.REPRODUCED
    assert F.verdict(lo, hi, ">") == F.NOT_REPRODUCED
    assert F.verdict(hi, F.interval([0.5, 0.95, 0.2]), ">") == F.INCONCLUSIVE
    assert F.verdict(hi, F.interval([]), ">") == F.MISSING


def test_best_setting_uses_mean_then_lower_std():
    df = pd.DataFrame(rows("SimPO", "a", {"m": [0.5, 0.7, 0.6]}) + rows("SimPO", "b", {"m": [0.6, 0.6, 0.6]})
                      + rows("SimPO", "c", {"m": [0.1, 0.2, 0.3]}))  # fmt: skip
    assert set(best_rows(df, "m")["setting"]) == {"b"}  # a and b tie on the mean; b has no spread
    assert set(best_rows(df, "m", mode="min")["setting"]) == {"c"}


def _disputed() -> pd.DataFrame:
    """SimPO's "b" (three seeds, no spread) and "a" (one seed, run later) tie on the mean. The former
    findings rule took a single seed's missing std as 0 and broke the tie by name ("a"); the main table's
    rule ranks a single seed below any measured spread ("b")."""
    data = []
    for label, method, setting, values, extra in [
        ("SimPO", "simpo", "b", [0.75, 0.75, 0.75], {"hp_gamma": 1.0, "hp_length_normalize": True}),
        ("SimPO", "simpo", "a", [0.75], {"hp_gamma": 2.0, "hp_length_normalize": True}),
        ("DPO", "dpo", "beta=0.1", [0.6, 0.61, 0.59], {"reference": "online"}),
        ("SimPO w/o LN", "simpo", "ln=False", [0.5, 0.52, 0.48], {"hp_gamma": 1.0, "hp_length_normalize": False}),
    ]:
        data += rows(label, setting, {"reward_accuracy": values, "oracle_win_rate": 0.5, "gen_length": 4.0,
                      "reward_likelihood_agreement": 1.0},
                     seeds=range(len(values)), method=method, config_key=f"{label}/{setting}", sweep="s", **extra)  # fmt: skip
    return pd.DataFrame(data)


def test_the_findings_and_every_table_name_the_same_best_setting():
    df = _disputed()
    metric = "reward_accuracy"
    main = stats.best_settings(seed_summary(df), metric, "max").set_index("label")
    assert main.loc["SimPO", "setting"] == "b"
    test = next(t for t in F.paper_tests(df, metric) if t.claim.startswith("SimPO's held-out reward accuracy"))
    assert set(test.arms[0]["setting"]) == {"b"}  # the findings' SimPO arm is the main table's
    assert set(claims.arm(df, "SimPO", metric)["setting"]) == {"b"}  # and a sweep file's claim's
    ablation = dict(tables.ablation_rows(seed_summary(df), metric, "max"))
    assert ablation["SimPO"]["setting"] == "b"
    assert set(best_rows(df[df["label"] == "SimPO"], metric)["setting"]) == {"b"}


def test_findings_on_a_result_set_shaped_like_the_paper():
    base = {
        "reward_likelihood_agreement": 1.0,
        "runtime_s": [10.0, 10.1, 9.9],
        "peak_memory_mb": [90.0, 91.0, 89.0],
    }
    data = []
    for gamma, win, acc in [(0.0, 0.50, 0.60), (1.0, 0.70, 0.65), (2.0, 0.62, 0.70)]:
        data += rows("SimPO", f"gamma={gamma}", {**base, "oracle_win_rate": [win, win + 0.01, win - 0.01],
                     "reward_accuracy": [acc, acc + 0.005, acc - 0.005], "gen_length": [4.0, 4.1, 3.9],
                     "length_logp_spearman": [0.30, 0.31, 0.29]}, hp_gamma=gamma)  # fmt: skip
    data += rows("SimPO w/o LN", "ln=False", {"oracle_win_rate": [0.3, 0.31, 0.29], "gen_length": [8.0, 8.2, 7.9],
                 "length_logp_spearman": [0.8, 0.81, 0.79], "reward_accuracy": 0.6, "reward_likelihood_agreement": 0.8})  # fmt: skip
    data += rows("DPO", "beta=0.1", {"oracle_win_rate": 0.6, "reward_accuracy": [0.5, 0.51, 0.49], "gen_length": 5.0,
                 "length_logp_spearman": [0.55, 0.56, 0.54], "reward_likelihood_agreement": [0.5, 0.52, 0.48],
                 "runtime_s": [13.0, 13.2, 12.8], "peak_memory_mb": [100.0, 101.0, 99.0]}, reference="online")  # fmt: skip
    table = findings.findings(pd.DataFrame(data))
    got = dict(zip(table["claim"], table["verdict"], strict=True))
    assert all(v == V.SUPPORTED for v in got.values()), table[["claim", "verdict", "measured"]].to_string()
    assert len(got) == 13


def test_a_finding_that_goes_the_other_way_is_reported_as_such():
    data = rows("SimPO", "g=1", {"reward_accuracy": [0.5, 0.51, 0.49], "oracle_win_rate": 0.5,
                "reward_likelihood_agreement": 1.0}, hp_gamma=1.0)  # fmt: skip
    data += rows(
        "DPO", "b=0.1", {"reward_accuracy": [0.7, 0.71, 0.69], "oracle_win_rate": 0.5}, reference="online"
    )
    table = findings.findings(pd.DataFrame(data)).set_index("claim")
    assert table.loc["SimPO's held-out reward accuracy is higher than DPO's", "verdict"] == V.CONTRADICTED
    assert table.loc["w/o LN generates longer responses than SimPO", "verdict"] == V.MISSING
    assert table.loc["gamma study", "verdict"] == V.MISSING


def test_length_bias_table_shows_simpo_advantage_per_bias():
    data = []
    for bias, simpo_win, dpo_win in [(0.0, 0.6, 0.7), (2.0, 0.6, 0.3)]:
        data += rows("SimPO", f"length_bias={bias}", {"oracle_win_rate": [simpo_win, simpo_win + 0.01, simpo_win - 0.01],
                     "gen_length": 4.0}, length_bias=bias)  # fmt: skip
        data += rows("DPO", f"length_bias={bias}", {"oracle_win_rate": [dpo_win, dpo_win + 0.02, dpo_win - 0.02],
                     "gen_length": 6.0}, length_bias=bias)  # fmt: skip
    table = findings.length_bias_table(pd.DataFrame(data))
    dpo = table[table["label"] == "DPO"].set_index("length_bias")
    col = "SimPO minus this method (oracle_win_rate)"
    assert dpo.loc[0.0, col].startswith("-0.100") and dpo.loc[2.0, col].startswith("+0.300")
    low, high = (float(x) for x in dpo.loc[2.0, col].split("[")[1].rstrip("]").split(","))
    assert 0 < low < 0.3 < high  # the Welch interval brackets the difference and excludes 0
    assert findings.length_bias_table(pd.DataFrame(data[:6])) is None  # one bias value: no table
