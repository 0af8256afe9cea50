"""The report checks its own cost figures: a cost that moves with the order trials started in, among
trials that do the same work, gets a warning with rho in the efficiency section (hand-made results)."""

from __future__ import annotations

from ablate.readout import drift
from ablate.readout.loader import load_trials
from analysis import stats
from analysis.report import write_report
from tests.analysis_data import metrics, trial_config, write_trial


def sweep_with(tmp_path, memory_of) -> list:
    """SimPO at 3 gammas x 4 seeds and DPO (online) x 4 seeds, 16 trials that started 10 s apart, the
    two methods interleaved; ``memory_of(position, method)`` gives each trial's peak memory."""
    sweep = tmp_path / "drift"
    plan = [("simpo", g, s) for s in range(4) for g in (0.0, 0.5, 1.0)] + [("dpo", None, s) for s in range(4)]
    plan.sort(key=lambda p: (p[2], p[0] == "dpo", p[1] or 0))  # by seed: each round has both methods
    for position, (method, gamma, seed) in enumerate(plan):
        if method == "simpo":
            cfg = trial_config("SimPO", "simpo", {"beta": 2.0, "gamma": gamma}, seed)
        else:
            cfg = trial_config("DPO", "dpo", {"beta": 0.1}, seed, reference="online")
        cfg["index"] = position
        final = metrics(0.6 + 0.01 * seed, 0.55, 5.0, 8.0 + 0.01 * (seed % 2), memory_of(position, method),
                        started_at=1.0e9 + 10.0 * position, peak_memory_growth_mb=100.0 + (position % 3))  # fmt: skip
        write_trial(sweep, f"{position:03d}-{method}-s{seed}", cfg, final)
    return sweep


def trending(position: int, method: str) -> float:
    return (900.0 if method == "dpo" else 850.0) + 10.0 * position  # +10 MB per trial, as the issue saw


def steady(position: int, method: str) -> float:
    return (900.0 if method == "dpo" else 850.0) + (1.0, -1.0, 0.5, -0.5)[position % 4]


def test_trials_that_do_the_same_work_share_a_work_key(tmp_path):
    df = load_trials([sweep_with(tmp_path, steady)])
    # SimPO's gammas change the numbers, not the work; DPO with its online reference does other work
    assert df.groupby("method")["work_key"].nunique().to_dict() == {"dpo": 1, "simpo": 1}
    assert df["work_key"].nunique() == 2


def test_a_cost_that_grows_with_start_order_gets_a_warning_with_rho(tmp_path):
    df = load_trials([sweep_with(tmp_path, trending)])
    found = {d.metric: d for d in drift.order_drift(df)}
    memory = found["peak_memory_mb"]
    assert memory.warns and memory.rho > 0.9 and memory.trials == 16 and memory.groups == 2
    assert memory.slope_pct > 0
    assert not found["runtime_s"].warns and not found["peak_memory_growth_mb"].warns

    out = tmp_path / "report"
    report = write_report(df, "drift", out, "reward_accuracy", "max").read_text()
    efficiency = report.split("## Efficiency", 1)[1].split("## ", 1)[0]
    assert "> Warning: `peak_memory_mb` moves with the order the trials started in" in efficiency
    assert f"Spearman ρ = {memory.rho:+.2f}" in efficiency and "runtime_s` moves" not in efficiency
    assert "Warning: `peak_memory_mb`" in (out / "efficiency.md").read_text()
    assert 'class="note">Warning: <code>peak_memory_mb</code> moves' in (out / "report.html").read_text()


def test_no_warning_without_a_trend(tmp_path):
    df = load_trials([sweep_with(tmp_path, steady)])
    assert not any(d.warns for d in drift.order_drift(df))
    out = tmp_path / "report"
    report = write_report(df, "drift", out, "reward_accuracy", "max").read_text()
    assert "moves with the order" not in report and "drifts with the start order" not in report


def test_finding_6_compares_the_trials_own_memory_and_flags_a_drifting_cost(tmp_path):
    df = load_trials([sweep_with(tmp_path, trending)])
    table = stats.analyze(df, "reward_accuracy", "max")
    assert [d.metric for d in table.drift if d.warns] == ["peak_memory_mb"]
    from analysis.findings_frame import findings

    six = findings(df, "reward_accuracy").query("finding == '6'").set_index("metric")
    # Memory is compared by each trial's own peak growth: the process peak (which drifts here) is not used.
    assert "peak_memory_growth_mb" in six.index and "peak_memory_mb" not in six.index
    assert "own peak growth" in six.loc["peak_memory_growth_mb", "claim"]
    assert "drifts" not in six.loc["peak_memory_growth_mb", "measured"]

    older = df.drop(columns=["peak_memory_growth_mb"])  # records from before the growth metric
    six = findings(older, "reward_accuracy").query("finding == '6'").set_index("metric")
    assert "warning: peak_memory_mb drifts with the start order (ρ = +0.9" in six.loc["peak_memory_mb", "measured"]
