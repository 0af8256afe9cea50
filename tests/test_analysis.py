"""The analysis on hand-made result sets: aggregation over seeds, intervals, best-setting selection,
ratios to DPO, matching across sweeps, trial statuses, and the report command's files and exits."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from ablate.readout.loader import config_key, find_sweeps, load_trials
from ablate.readout.summary import seed_summary, t_interval
from analysis import report, stats, tables
from tests.analysis_data import metrics, paper_like_sweep, trial_config, write_experiment_state, write_trial

T_975_2 = 4.302652729911275  # Student-t 97.5 % quantile, 2 degrees of freedom


def frame(rows: list[dict]) -> pd.DataFrame:
    """Finished trials as ``load_trials`` returns them, from (label, setting, seed, metrics...)."""
    out = []
    for r in rows:
        out.append({"sweep": "s", "status": "finished", "method": r.get("method", "simpo"), "reference": r.get("reference"),
                    "config_key": f"{r['label']}|{r['setting']}", **r})  # fmt: skip
    return pd.DataFrame(out)


def test_seed_mean_std_and_t_interval():
    df = frame(
        [
            {"label": "A", "setting": "x", "seed": s, "reward_accuracy": v}
            for s, v in enumerate([0.5, 0.6, 0.7])
        ]
    )
    row = seed_summary(df).iloc[0]
    assert row["seeds"] == 3 and row["reward_accuracy_n"] == 3
    assert row["reward_accuracy_mean"] == pytest.approx(0.6)
    assert row["reward_accuracy_std"] == pytest.approx(0.1)  # sample std (ddof=1)
    half = T_975_2 * 0.1 / math.sqrt(3)
    assert row["reward_accuracy_ci_low"] == pytest.approx(0.6 - half)
    assert row["reward_accuracy_ci_high"] == pytest.approx(0.6 + half)


def test_interval_needs_two_seeds_and_one_seed_shows_the_mean_only():
    assert all(math.isnan(v) for v in t_interval([0.7]))
    df = frame([{"label": "A", "setting": "x", "seed": 0, "reward_accuracy": 0.7}])
    row = seed_summary(df).iloc[0]
    assert math.isnan(row["reward_accuracy_std"])
    assert tables.fmt_stat(row, "reward_accuracy") == "0.700"
    assert tables.fmt_stat(row, "reward_accuracy", "ci95") == "0.700"


def test_best_setting_highest_mean_then_lower_std():
    rows = []
    for setting, values in {"wide": [0.6, 0.8], "narrow": [0.69, 0.71], "low": [0.5, 0.5]}.items():
        rows += [{"label": "A", "setting": setting, "seed": s, "m": v} for s, v in enumerate(values)]
    rows += [{"label": "B", "setting": "only", "seed": 0, "m": 0.1, "method": "dpo"}]
    summary = seed_summary(frame(rows))
    best = stats.best_settings(summary, "m", "max")
    assert dict(zip(best["label"], best["setting"], strict=True)) == {"B": "only", "A": "narrow"}
    assert list(best["label"]) == ["B", "A"]  # paper order: DPO before SimPO
    assert stats.best_settings(summary, "m", "min").set_index("label").loc["A", "setting"] == "low"


def test_settings_without_the_metric_are_not_eligible():
    df = frame([{"label": "A", "setting": "x", "seed": 0, "m": float("nan")},
                {"label": "A", "setting": "y", "seed": 0, "m": 0.2}])  # fmt: skip
    assert list(stats.best_settings(seed_summary(df), "m", "max")["setting"]) == ["y"]


def test_ratios_to_dpo_online_reference():
    rows = []
    for seed, (simpo_t, dpo_t, pre_t) in enumerate([(8.0, 10.0, 9.0), (8.0, 10.0, 9.0)]):
        rows += [
            {"label": "SimPO", "setting": "g", "seed": seed, "runtime_s": simpo_t, "peak_memory_mb": 900.0},
            {"label": "DPO (precomputed ref.)", "setting": "b", "seed": seed, "method": "dpo", "reference": "precomputed",
             "runtime_s": pre_t, "peak_memory_mb": 950.0},
            {"label": "DPO (online ref.)", "setting": "b", "seed": seed, "method": "dpo", "reference": "online",
             "runtime_s": dpo_t, "peak_memory_mb": 1000.0},
        ]  # fmt: skip
    summary = seed_summary(frame(rows))
    best = stats.best_settings(summary, "runtime_s", "min")
    base = stats.baseline_row(best)
    assert base["label"] == "DPO (online ref.)"
    rel = stats.relative_to(best, base, ["runtime_s", "peak_memory_mb"]).set_index("label")
    assert rel.loc["SimPO", "runtime_s_ratio"] == pytest.approx(0.8)
    assert rel.loc["SimPO", "peak_memory_mb_ratio"] == pytest.approx(0.9)
    assert rel.loc["DPO (precomputed ref.)", "runtime_s_ratio"] == pytest.approx(0.9)
    assert rel.loc["DPO (online ref.)", "runtime_s_ratio"] == pytest.approx(1.0)
    assert rel.loc["SimPO", "runtime_s_ratio_std"] == pytest.approx(0.0)  # no spread over seeds


def test_ratio_std_propagates_both_relative_stds():
    best = pd.DataFrame({"label": ["X"], "m_mean": [2.0], "m_std": [0.2]})
    base = pd.Series({"m_mean": 4.0, "m_std": 0.4})
    out = stats.relative_to(best, base, ["m"]).iloc[0]
    assert out["m_ratio"] == pytest.approx(0.5)
    assert out["m_ratio_std"] == pytest.approx(0.5 * math.sqrt(0.1**2 + 0.1**2))


def test_settings_and_seeds_are_matched_by_config_across_sweeps(tmp_path):
    cfg = lambda seed, **kw: trial_config("SimPO", "simpo", {"beta": 2.0, "gamma": 0.5}, seed, **kw)  # noqa: E731
    write_trial(tmp_path / "first", "000-whatever-a", cfg(0), metrics(0.6, 0.5, 5, 8, 900))
    write_trial(tmp_path / "second", "zzz-other-name", {**cfg(1), "sweep": "second", "index": 7, "cache_dir": "/x"},
                metrics(0.8, 0.5, 5, 8, 900))  # fmt: skip
    other_data = cfg(0, data={"task": {"version": 1, "length_bias": 0.0}})
    write_trial(tmp_path / "second", "001-simpo-s0", other_data, metrics(0.1, 0.5, 5, 8, 900))
    df = load_trials(find_sweeps([tmp_path]))
    assert len(df) == 3
    summary = seed_summary(df)
    assert sorted(summary["seeds"]) == [1, 2]
    merged = summary[summary["seeds"] == 2].iloc[0]
    assert merged["reward_accuracy_mean"] == pytest.approx(0.7) and merged["seed_list"] == "0,1"
    assert summary["setting"].nunique() == 2  # same setting name, different data: told apart
    assert config_key(cfg(0)) == config_key({**cfg(3), "sweep": "z", "start": {"path": "/elsewhere/sft-abc"}})
    assert config_key(cfg(0)) != config_key({**cfg(0), "start": {"path": "/c/sft-other"}})


def test_the_newest_experiment_state_is_the_newest_by_name(tmp_path):
    # A resumed sweep: the first run's state file knows one trial; the resumed run's knows both.
    # Ray's storage sync rewrites both at the end, so the older one can carry the later mtime.
    import os

    sweep = tmp_path / "resumed"
    for i in (0, 1):
        write_trial(sweep, f"00{i}-stopped", trial_config("SimPO", "simpo", {"gamma": 0.5}, i), None)
    new = write_experiment_state(
        sweep, {"000-stopped": "TERMINATED", "001-stopped": "TERMINATED"}, "2026-01-01_00-00-57"
    )
    old = write_experiment_state(sweep, {"000-stopped": "RUNNING"}, "2026-01-01_00-00-30")
    os.utime(old, (new.stat().st_mtime + 1, new.stat().st_mtime + 1))
    status = load_trials([sweep]).set_index("trial")["status"]
    assert list(status) == ["stopped early", "stopped early"]


def test_every_status_is_counted_with_its_message(tmp_path):
    sweep = paper_like_sweep(tmp_path)
    write_trial(sweep, "900-broken", None, None)  # unreadable params.json
    torn = write_trial(sweep, "901-torn", trial_config("SimPO", "simpo", {"gamma": 0.5}, 5), None)
    with (torn / "result.json").open("a") as f:
        f.write('{"status": "finis')
    write_trial(sweep, "902-stopped", trial_config("SimPO", "simpo", {"gamma": 0.5}, 6), None)
    write_experiment_state(sweep, {"902-stopped": "TERMINATED", "903-never-started": "PENDING"})
    df = load_trials([sweep])
    status = df.set_index("trial")["status"]
    assert (
        status["900-broken"] == "unreadable"
        and "params.json" in df.set_index("trial").loc["900-broken", "error"]
    )
    assert status["901-torn"] == "unreadable"
    assert status["902-stopped"] == "stopped early"
    assert status["903-never-started"] == "pending"
    assert (status == "errored").sum() == 1 and (status == "diverged").sum() == 1
    assert (status == "unfinished").sum() == 1 and (status == "finished").sum() == 12
    errors = df.set_index("status")["error"]
    assert "injected fault" in errors["errored"] and "nan" in errors["diverged"]
    problems = tables.problem_trials(df)
    assert len(problems) == len(df) - 12 and set(problems["status"]) >= {"errored", "diverged", "unreadable"}


def test_a_retried_trial_that_finished_counts_as_finished(tmp_path):
    cfg = trial_config("SimPO", "simpo", {"gamma": 0.5}, 0)
    write_trial(
        tmp_path / "s", "000-simpo", cfg, metrics(0.6, 0.5, 5, 8, 900), error="RuntimeError: flaky node"
    )
    row = load_trials([tmp_path / "s"]).iloc[0]
    assert row["status"] == "finished" and row["failures"] == 1


def test_labels_told_apart_by_reference(tmp_path):
    df = load_trials([paper_like_sweep(tmp_path)])
    assert {"DPO (online ref.)", "DPO (precomputed ref.)", "SimPO", "SimPO w/o LN"} == set(
        df["label"].dropna()
    )


def test_ablation_rows_are_found_by_hyperparameters(tmp_path):
    df = load_trials([paper_like_sweep(tmp_path)])
    variants = dict(tables.ablation_rows(seed_summary(df), "reward_accuracy", "max"))
    assert variants["SimPO"]["hp_gamma"] == 0.5  # best gamma > 0 by mean reward accuracy
    assert (
        variants["w/o LN"]["hp_length_normalize"] is False or variants["w/o LN"]["hp_length_normalize"] == 0
    )
    assert variants["gamma=0"]["hp_gamma"] == 0.0


def test_a_setting_without_gamma_counts_at_the_default_not_zero():
    """A SimPO setting that records no gamma ran with the signature's default (1.0 > 0): it is SimPO,
    not the gamma=0 ablation."""
    import inspect

    from ablate.losses import simpo_loss

    default = inspect.signature(simpo_loss).parameters["gamma"].default
    assert default > 0
    summary = pd.DataFrame([
        {"label": "SimPO", "method": "simpo", "setting": "beta=2", "config_key": "k1", "seeds": 2,
         "m_mean": 0.7, "m_std": 0.01},
        {"label": "SimPO", "method": "simpo", "setting": "beta=2,gamma=0", "config_key": "k2", "seeds": 2,
         "m_mean": 0.6, "m_std": 0.01, "hp_gamma": 0.0},
    ])  # fmt: skip
    variants = dict(tables.ablation_rows(summary, "m", "max"))
    assert variants["SimPO"]["setting"] == "beta=2" and variants["gamma=0"]["setting"] == "beta=2,gamma=0"
    variants = dict(tables.ablation_rows(summary.drop(columns="hp_gamma").iloc[:1], "m", "max"))
    assert variants["SimPO"]["setting"] == "beta=2" and variants["gamma=0"] is None


def test_sensitivity_holds_the_other_hyperparameters_at_the_best_setting():
    rows = []
    for beta in (1.0, 2.0):
        for gamma in (0.0, 1.0, 2.0):
            for seed in (0, 1):
                acc = 0.5 + 0.1 * beta + 0.01 * gamma
                rows.append({"label": "SimPO", "setting": f"b{beta}g{gamma}", "seed": seed, "hp_beta": beta,
                             "hp_gamma": gamma, "reward_accuracy": acc})  # fmt: skip
    df = frame(rows)
    r = stats.analyze(df, "reward_accuracy", "max")
    gamma_rows = r.sensitivity[r.sensitivity["param"] == "gamma"]
    assert list(gamma_rows["value"]) == [0.0, 1.0, 2.0]
    assert set(gamma_rows["held"]) == {"others at best"} and list(gamma_rows["trials"]) == [2, 2, 2]
    assert gamma_rows["reward_accuracy_mean"].tolist() == pytest.approx([0.7, 0.71, 0.72])


def test_optuna_importances_rank_the_parameter_that_matters(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        lr, beta = float(10 ** rng.uniform(-4, -2)), float(rng.uniform(1, 3))
        rows.append({"label": "SimPO", "setting": f"t{i}", "seed": 0, "hp_beta": beta, "tr_learning_rate": lr,
                     "reward_accuracy": 0.5 + 0.1 * math.log10(lr) + 0.001 * rng.normal()})  # fmt: skip
    imp = stats.param_importances(frame(rows), "reward_accuracy", "max").set_index("param")
    assert imp.loc["learning_rate", "importance"] > 0.8 > imp.loc["beta", "importance"]
    assert imp.loc["learning_rate", "spearman"] > 0.9 and imp["trials"].eq(24).all()


def test_report_writes_every_table_and_figure(tmp_path):
    sweep = paper_like_sweep(tmp_path / "results")
    code = report.main([str(sweep), "--out", str(tmp_path / "reports")])
    assert code == 0
    out = tmp_path / "reports" / "paper"
    for name in ("main", "ablation", "length", "efficiency", "agreement", "sensitivity", "settings"):
        for ext in ("md", "csv", "tex"):
            assert (out / f"{name}.{ext}").is_file(), f"{name}.{ext}"
    for fig in ("gamma", "efficiency", "length-logp", "contingency", "agreement", "curves"):
        assert (out / f"{fig}.png").stat().st_size > 5000, fig
    tex = (out / "main.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex and r"$\pm$" in tex
    main = pd.read_csv(out / "main.csv").set_index("label")
    assert (
        main.loc["SimPO", "setting"] == "beta=2.0,gamma=0.5,length_normalize=True"
    )  # selection by reward_accuracy
    assert main.loc["SimPO", "reward_accuracy_mean"] == pytest.approx(0.64)
    eff = pd.read_csv(out / "efficiency.csv").set_index("label")
    assert eff.loc["SimPO", "runtime_s_ratio"] == pytest.approx(8.0 / 10.05)
    assert eff.loc["DPO (precomputed ref.)", "peak_memory_mb_ratio"] == pytest.approx(0.95)
    agreement = pd.read_csv(out / "agreement.csv").set_index("label")
    assert agreement.loc["SimPO", "agreement"] == 1.0 and agreement.loc["SimPO", "pairs"] == 80
    md = (out / "report.md").read_text()
    assert "highest mean wins" in md and "`reward_accuracy`" in md
    assert "injected fault at step 2" in md and "diverged: loss became nan" in md and "| unfinished" in md
    assert (
        "14 trials: 11 finished" not in md
        and "15 trials: 12 finished, 1 diverged, 1 errored, 1 unfinished." in md
    )
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 6 and "injected fault" in html


def test_report_metric_option_changes_the_selection(tmp_path):
    sweep = paper_like_sweep(tmp_path / "results")
    assert (
        report.main([str(sweep), "--out", str(tmp_path / "r"), "--metric", "gen_length", "--mode", "min"])
        == 0
    )
    main = pd.read_csv(tmp_path / "r" / "paper" / "main.csv").set_index("label")
    assert main.loc["SimPO", "setting"].startswith("beta=2.0,gamma=0.0")
    assert "lowest mean wins" in (tmp_path / "r" / "paper" / "report.md").read_text()


def test_report_merges_sweeps_into_one(tmp_path):
    a = paper_like_sweep(tmp_path / "results", "a")
    b = paper_like_sweep(tmp_path / "results", "b")
    for d in b.iterdir():  # the second sweep ran seeds 10, 11 of the same settings
        p = d / "params.json"
        cfg = json.loads(p.read_text())["trial"]
        p.write_text(json.dumps({"trial": {**cfg, "seed": cfg["seed"] + 10, "sweep": "b"}}))
    assert report.main([str(a), str(b), "--out", str(tmp_path / "r")]) == 0
    main = pd.read_csv(tmp_path / "r" / "combined" / "main.csv").set_index("label")
    assert main.loc["SimPO", "seeds"] == 4 and main.loc["SimPO", "seed_list"] == "0,1,10,11"


def test_report_exits_2_without_a_finished_trial(tmp_path, capsys):
    sweep = tmp_path / "bad"
    write_trial(sweep, "000-dpo", trial_config("DPO", "dpo", {}, 0), None, error="ValueError: boom")
    assert report.main([str(sweep), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "no finished trial" in err and "1 errored" in err
    assert report.main([str(tmp_path / "nothing-here"), "--out", str(tmp_path / "r")]) == 2


def test_report_exits_2_on_an_unknown_metric(tmp_path, capsys):
    sweep = paper_like_sweep(tmp_path / "results")
    assert report.main([str(sweep), "--out", str(tmp_path / "r"), "--metric", "bleu"]) == 2
    assert "reward_accuracy" in capsys.readouterr().err  # lists the metrics there are


def test_methods_on_different_tasks_get_a_warning(tmp_path):
    write_trial(
        tmp_path / "a", "000", trial_config("SimPO", "simpo", {"gamma": 0.5}, 0), metrics(0.6, 0.5, 5, 8, 900)
    )
    other = trial_config(
        "DPO", "dpo", {}, 0, reference="online", data={"task": {"version": 1, "length_bias": 0.0}}
    )
    write_trial(tmp_path / "b", "000", other, metrics(0.6, 0.5, 5, 8, 900))
    r = stats.analyze(load_trials(find_sweeps([tmp_path])), "reward_accuracy", "max")
    assert any("not directly comparable" in n and "[DPO]" in n and "[SimPO]" in n for n in r.notes)
    assert "Sweeps" in tables.main_table(r, "std").display.columns
