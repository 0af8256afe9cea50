"""The paper's tables from ``analysis.stats.Results``: each a ``Table`` with a display frame
(strings: ``mean ± std`` or ``mean [95 % CI]``) for Markdown/LaTeX/HTML and a numeric frame for CSV.

* ``main``        Table 4: one row per method at its best setting.
* ``ablation``    Table 5: SimPO, SimPO w/o LN and SimPO with gamma=0 side by side.
* ``length``      Table 6 / Fig. 4a: generation length and ρ(average log-likelihood, length).
* ``efficiency``  Fig. 4d: runtime and peak memory, absolute and relative to DPO.
* ``agreement``   Fig. 4b/4c: reward accuracy, likelihood accuracy and their agreement.
* ``sensitivity`` Fig. 3: the metrics across each swept hyperparameter's values.
* ``importance``  Optuna's parameter importances (sweeps of two or more hyperparameters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from ablate.readout import drift, judgments
from analysis import stats
from analysis.stats import Results

DIGITS = {
    "reward_accuracy": 3, "oracle_win_rate": 3, "gen_length": 1, "runtime_s": 2, "peak_memory_mb": 0, "peak_memory_growth_mb": 1,
    "tokens_per_s": 0, "length_logp_spearman": 3, "reward_likelihood_agreement": 3, "reward_margin": 3,
    "chosen_avg_logp": 3, "rejected_avg_logp": 3, "oracle_reward": 3, "train_loss": 4,
}  # fmt: skip
HEADERS = {
    "reward_accuracy": "Reward acc.",
    "oracle_win_rate": "Win rate vs SFT",
    "gen_length": "Gen. length (tokens)",
    "runtime_s": "Runtime (s)",
    "peak_memory_mb": "Peak memory (MB)",
    "peak_memory_growth_mb": "Peak growth (MB)",
    "tokens_per_s": "Tokens/s",
    "length_logp_spearman": "ρ(avg log-lik., length)",
    "reward_likelihood_agreement": "Reward/likelihood agreement",
    "reward_margin": "Reward margin",
    "chosen_avg_logp": "Avg log-lik. chosen (nats/token)",
    "rejected_avg_logp": "Avg log-lik. rejected (nats/token)",
    "oracle_reward": "Oracle reward",
    "train_loss": "Train loss",
}
MAIN = ["reward_accuracy", "oracle_win_rate", "gen_length", "runtime_s", "peak_memory_mb"]
SPREAD_NOTE = {
    "std": "mean ± sample standard deviation over seeds",
    "ci95": "mean [95 % Student-t confidence interval] over seeds",
}


@dataclass
class Table:
    name: str  # file stem: <name>.md, .csv, .tex
    title: str
    caption: str
    display: pd.DataFrame  # strings
    data: pd.DataFrame  # numbers (CSV)
    notes: list[str] = field(default_factory=list)  # warnings printed with the table


def header(metric: str) -> str:
    return HEADERS.get(metric, metric)


def fmt_number(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:,.{digits}f}" if abs(x) >= 10000 else f"{x:.{digits}f}"


def fmt_stat(row, metric: str, spread: str = "std", prefix: str = "") -> str:
    """``mean ± std`` (or ``mean [low, high]``) of ``metric`` in a summary row; just the mean for
    a single seed, ``–`` without a value."""
    d = DIGITS.get(metric, 3)
    mean = row.get(f"{prefix}{metric}_mean", math.nan)
    n = row.get(f"{prefix}{metric}_n", 0)
    if not isinstance(mean, int | float) or not math.isfinite(mean):
        return "–"
    if not n or n < 2:
        return fmt_number(mean, d)
    if spread == "ci95":
        low, high = row.get(f"{prefix}{metric}_ci_low"), row.get(f"{prefix}{metric}_ci_high")
        return f"{fmt_number(mean, d)} [{fmt_number(low, d)}, {fmt_number(high, d)}]"
    return f"{fmt_number(mean, d)} ± {fmt_number(row.get(f'{prefix}{metric}_std'), d)}"


def stat_columns(metric: str, prefix: str = "") -> list[str]:
    return [f"{prefix}{metric}_{k}" for k in ("mean", "std", "ci_low", "ci_high", "n")]


def _numeric(frame: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    cols = [c for c in keys if c in frame.columns]
    for m in metrics:
        cols += [c for c in stat_columns(m) if c in frame.columns]
    return frame[cols].reset_index(drop=True)


def judge_columns(r: Results) -> list[tuple[str, str]]:
    """Table 4's columns per judge: (header, metric): its raw win rate and its LC win rate."""
    cols = []
    for j in judgments.judge_ids(r.trials):
        cols += [(f"WR {j}", f"win_rate@{j}"), (f"LC {j}", judgments.lc_column(r.trials, j))]
    return [(h, m) for h, m in cols if f"{m}_mean" in r.best.columns]


def main_table(r: Results, spread: str) -> Table:
    rows = []
    per_judge = judge_columns(r)
    for _, b in r.best.iterrows():
        row = {"Method": b["label"], "Setting": b["setting"]}
        row.update({header(m): fmt_stat(b, m, spread) for m in MAIN})
        row.update({h: fmt_stat(b, m, spread) for h, m in per_judge})
        row["Seeds"] = int(b["seeds"])
        if r.trials["sweep"].nunique() > 1:
            row["Sweeps"] = b["sweeps"]
        rows.append(row)
    caption = (
        f"Each method at its best setting by `{r.metric}` ({r.mode}); {SPREAD_NOTE[spread]}. "
        "Reward acc.: held-out pairs whose implicit reward ranks chosen above rejected. Win rate: greedy "
        "answers that beat the SFT model's under the task's oracle (ties half). Runtime: training wall time."
        + (" WR <judge>: win rate against the start point's answers under that judge (ties half); LC <judge>: "
           "AlpacaEval 2's length-controlled win rate (with a per-prompt difficulty estimated from the sweep's "
           "trials where two or more share prompts and baseline; docs/judging.md)." if per_judge else "")
    )  # fmt: skip
    return Table(
        "main", "Main comparison (Table 4)", caption, pd.DataFrame(rows),
        _numeric(r.best, ["label", "setting", "config_key", "seeds", "seed_list", "sweeps"],
                 MAIN + [m for _, m in per_judge]),
    )  # fmt: skip


def judges_table(r: Results) -> Table | None:
    """The judges judged (docs/judging.md): accuracy, length weight, ranking agreement (analysis.judged)."""
    from analysis import judged

    frame = judged.judges_frame(r.best, r.trials)
    if frame is None:
        return None
    if "Accuracy vs oracle" in frame.columns:
        caption = (
            "Each judge against the built-in task's oracle: accuracy on held-out pairs the oracle does not tie "
            "(ties count wrong), the length weight φ of AlpacaEval's GLM over the trials (mean ± std; > 0: the "
            "judge prefers longer answers at equal quality), and Kendall's τ between the method ranking the judge "
            "gives (each method at its best setting; raw win rate, and length-controlled) and the oracle's "
            "ranking by oracle win rate."
        )
    else:
        caption = (
            "Pairs of judges: Kendall's τ between the method rankings they give (each method at its best setting), "
            "by raw and by length-controlled win rate, and their length weights φ (mean ± std over trials)."
        )
    return Table("judges", "The judges judged", caption, frame, frame)


def _is_true(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or bool(v)


def ablation_rows(summary: pd.DataFrame, metric: str, mode: str) -> list[tuple[str, pd.Series | None]]:
    """The best SimPO setting (length-normalised, gamma > 0), the best w/o LN and the best gamma=0
    setting, found by their hyperparameters (not their labels); a setting without a recorded gamma
    ran with SimPO's default (its signature's), not 0."""
    simpo = summary[summary["method"] == "simpo"] if not summary.empty else summary
    if simpo.empty:
        return []
    from ablate.losses import LOSSES  # the default γ, from SimPO's signature

    ln = simpo.get("hp_length_normalize", pd.Series(True, index=simpo.index)).map(_is_true).astype(bool)
    default = LOSSES["simpo"].defaults["gamma"]  # a setting that does not record γ ran with the default
    gamma = simpo.get("hp_gamma", pd.Series(default, index=simpo.index)).astype(float).fillna(default)
    variants = [
        ("SimPO", simpo[ln & (gamma > 0)]),
        ("w/o LN", simpo[~ln]),
        ("gamma=0", simpo[ln & (gamma == 0)]),
    ]
    out = []
    for name, rows in variants:
        pick = stats.best_settings(rows.assign(label=name), metric, mode) if not rows.empty else rows
        out.append((name, pick.iloc[0] if not pick.empty else None))
    return out


ABLATION = ["reward_accuracy", "oracle_win_rate", "gen_length", "length_logp_spearman"]


def ablation_table(r: Results, spread: str) -> Table | None:
    variants = ablation_rows(r.summary, r.metric, r.mode)
    if sum(v is not None for _, v in variants) < 2:
        return None
    rows, data = [], []
    for name, v in variants:
        if v is None:
            rows.append({"Variant": name, "Setting": "not in these sweeps", "Seeds": "–"})
            continue
        row = {"Variant": name, "Setting": v["setting"]}
        row.update({header(m): fmt_stat(v, m, spread) for m in ABLATION})
        row["Seeds"] = int(v["seeds"])
        rows.append(row)
        data.append({**v.to_dict(), "variant": name})
    numeric = _numeric(pd.DataFrame(data), ["variant", "setting", "config_key", "seeds"], ABLATION)
    caption = (
        f"SimPO and its ablations, each at its best setting by `{r.metric}`; {SPREAD_NOTE[spread]}. "
        "Found by hyperparameters: SimPO = length-normalised with gamma > 0, w/o LN = length_normalize false, "
        "gamma=0 = length-normalised with gamma = 0."
    )
    return Table("ablation", "Ablation (Table 5)", caption, pd.DataFrame(rows).fillna("–"), numeric)


LENGTH = ["gen_length", "length_logp_spearman", "chosen_avg_logp", "rejected_avg_logp"]


def length_table(r: Results, spread: str) -> Table:
    rows = []
    for _, b in r.best.iterrows():
        row = {"Method": b["label"]}
        row.update({header(m): fmt_stat(b, m, spread) for m in LENGTH})
        row["Seeds"] = int(b["seeds"])
        rows.append(row)
    caption = (
        "Generation length (greedy, held-out prompts) and the Spearman correlation between a response's "
        "average log-likelihood and its length over held-out chosen and rejected responses, per method at "
        f"its best setting; {SPREAD_NOTE[spread]}. The paper: highest for SimPO w/o LN, lowest for SimPO."
    )
    return Table("length", "Length and likelihood (Table 6, Fig. 4a)", caption, pd.DataFrame(rows),
                 _numeric(r.best, ["label", "setting", "config_key", "seeds"], LENGTH))  # fmt: skip


def efficiency_table(r: Results, spread: str) -> Table:
    base = r.baseline
    costs = [m for m in stats.COST_METRICS if f"{m}_mean" in r.best.columns]
    rows = []
    for _, b in r.best.iterrows():
        row = {
            "Method": b["label"],
            "Reference": b["reference"] if isinstance(b["reference"], str) else "none",
            "Fine-tuning": fine_tuning(b),
        }
        for m in costs:
            row[header(m)] = fmt_stat(b, m, spread)
            if base is not None:
                ratio, sd = b.get(f"{m}_ratio", math.nan), b.get(f"{m}_ratio_std", math.nan)
                txt = fmt_number(ratio, 2)
                if spread == "std" and isinstance(sd, float) and math.isfinite(sd) and txt != "–":
                    txt += f" ± {fmt_number(sd, 2)}"
                row[f"{header(m).split(' (')[0]} / DPO"] = txt
        row[header("tokens_per_s")] = fmt_stat(b, "tokens_per_s", spread)
        trainable = b.get("trainable_params_mean", math.nan)
        row["Trainable params"] = f"{trainable:,.0f}" if isinstance(trainable, float) and math.isfinite(trainable) else "–"
        row["Seeds"] = int(b["seeds"])
        rows.append(row)
    extra = [f"{m}_ratio" for m in costs] + [f"{m}_ratio_std" for m in costs]
    numeric = _numeric(r.best, ["label", "reference", "setting", "config_key", "seeds", "lora_r"] + extra,
                       costs + ["tokens_per_s", "trainable_params"])  # fmt: skip
    if base is None:
        ref = "No DPO run in these sweeps, so no ratios."
    else:
        which = (
            base["label"]
            if "ref." in base["label"]
            else f"{base['label']} ({base['reference'] or 'no'} reference)"
        )
        ref = (
            f"Ratios are to {which}, setting {base['setting']}; "
            "± is the ratio's std propagated from both relative stds."
        )
    memory = (
        "Peak growth: the trial's own peak over the process's memory at its start (after the worker's caches), "
        "the memory measure that compares methods; peak memory is the whole process's, which includes what "
        "the worker held before the trial. "
        if "peak_memory_growth_mb" in costs
        else "Peak memory is the whole process's (these trials do not report their own growth). "
    )
    caption = (
        f"Training runtime and peak memory of each method at its best setting; {SPREAD_NOTE[spread]}. {ref} "
        f"{memory}DPO with an online reference runs the reference model every step; with a precomputed one it "
        "reads cached log-probs (computed once, inside its runtime). Fine-tuning: the whole policy, or a LoRA "
        "adapter of rank r on the frozen start point (trainable params: the adapter's; a LoRA policy's online "
        "reference is its own switched-off adapter). Timings on a shared machine are noisy: compare trials of "
        "one sweep."
    )
    notes = drift.warnings(r.drift)
    return Table("efficiency", "Efficiency relative to DPO (Fig. 4d)", caption, pd.DataFrame(rows), numeric, notes)


def fine_tuning(row) -> str:
    """``full``, or ``LoRA r=<rank>`` for a setting trained as a LoRA adapter."""
    r = row.get("lora_r", math.nan)
    return f"LoRA r={int(r)}" if isinstance(r, int | float) and math.isfinite(r) else "full"


AGREEMENT = ["reward_accuracy", "reward_likelihood_agreement"]
CELLS = {  # held-out pairs by which response the reward and the average log-likelihood prefer
    "Both prefer chosen": "both_chosen",
    "Only reward prefers chosen": "reward_chosen_lik_rejected",
    "Only likelihood prefers chosen": "reward_rejected_lik_chosen",
    "Both prefer rejected": "both_rejected",
}


def agreement_table(r: Results, spread: str) -> Table:
    rows, data = [], []
    for _, b in r.best.iterrows():
        row = {"Method": b["label"]}
        row.update({header(m): fmt_stat(b, m, spread) for m in AGREEMENT})
        cells = (
            stats.contingency([rec["pairs"] for rec in r.heldout[b["config_key"]]])
            if b["config_key"] in r.heldout
            else None
        )
        row["Likelihood acc."] = fmt_number(cells["likelihood_accuracy"], 3) if cells else "–"
        for column, key in CELLS.items():
            row[column] = str(cells[key]) if cells else "–"
        row["Seeds"] = int(b["seeds"])
        rows.append(row)
        data.append({"label": b["label"], "config_key": b["config_key"], **(cells or {})})
    numeric = _numeric(r.best, ["label", "setting", "config_key", "seeds"], AGREEMENT)
    if data:
        numeric = numeric.merge(pd.DataFrame(data), on=["label", "config_key"], how="left")
    caption = (
        f"Held-out reward accuracy (Fig. 4c) and how often the method's reward ranks a pair the same way as "
        f"the average log-likelihood does (Fig. 4b), per method at its best setting; {SPREAD_NOTE[spread]}. "
        "Likelihood acc.: pairs where the chosen response has the higher average log-likelihood. The last "
        "four columns count held-out pairs (pooled over seeds) by which response the reward and the average "
        "log-likelihood prefer (the contingency of Fig. 4b)."
    )
    return Table("agreement", "Reward and likelihood (Fig. 4b, 4c)", caption, pd.DataFrame(rows), numeric)


SENSITIVITY = ["reward_accuracy", "oracle_win_rate", "gen_length"]


def sensitivity_table(r: Results, spread: str) -> Table | None:
    sens = r.sensitivity
    if sens.empty:
        return None
    metrics = list(dict.fromkeys([r.metric, *SENSITIVITY]))
    rows = []
    for _, s in sens.iterrows():
        row = {"Method": s["label"], "Hyperparameter": s["param"], "Value": _value(s["value"])}
        row.update({header(m): fmt_stat(s, m, spread) for m in metrics if f"{m}_mean" in s})
        row["Trials"] = int(s["trials"])
        row["Other hyperparameters"] = s["held"]
        rows.append(row)
    numeric = _numeric(sens, ["label", "param", "value", "held", "trials"], metrics)
    caption = (
        f"Each swept hyperparameter's values, per method (the paper's γ study, Fig. 3); {SPREAD_NOTE[spread]} "
        "(Trials = seeds at that value, or all trials at that value when the others are averaged over)."
    )
    return Table("sensitivity", "Hyperparameter sensitivity (Fig. 3)", caption, pd.DataFrame(rows), numeric)


def _value(v) -> str:
    return fmt_number(v, 4).rstrip("0").rstrip(".") if isinstance(v, float) else str(v)


def importance_table(r: Results) -> Table | None:
    imp = r.importances
    if imp.empty:
        return None
    rows = [
        {"Method": i["label"], "Hyperparameter": i["param"], "Importance": fmt_number(i["importance"], 3),
         f"Spearman ρ with {r.metric}": fmt_number(i["spearman"], 3), "Trials": int(i["trials"])}
        for _, i in imp.iterrows()
    ]  # fmt: skip
    caption = (
        f"Optuna's hyperparameter importances for `{r.metric}` (optuna.importance.get_param_importances, "
        "fANOVA), on a study rebuilt from each method's finished trials; importances of a method sum to 1. "
        "The rank correlation gives the direction."
    )
    return Table("importance", "Hyperparameter importance (Optuna)", caption, pd.DataFrame(rows), imp)


ALL_SETTINGS = ["reward_accuracy", "oracle_win_rate", "gen_length", "length_logp_spearman", "runtime_s",
                "peak_memory_mb"]  # fmt: skip


def settings_table(r: Results, spread: str) -> Table:
    """Every setting of every method (the appendix); its CSV has every metric the trials reported."""
    summary = stats.order_methods(r.summary) if not r.summary.empty else r.summary
    rows = []
    for _, s in summary.iterrows():
        row = {"Method": s["label"], "Setting": s["setting"]}
        row.update({header(m): fmt_stat(s, m, spread) for m in ALL_SETTINGS if f"{m}_mean" in s})
        row["Seeds"] = int(s["seeds"])
        row["Best"] = "best" if s["config_key"] in set(r.best["config_key"]) else ""
        rows.append(row)
    caption = f"Every setting of every method, over its finished seeds; {SPREAD_NOTE[spread]}. Best: the method's best setting."
    return Table("settings", "All settings", caption, pd.DataFrame(rows), summary)


def findings_table(df: pd.DataFrame, metric: str, mode: str | None = None) -> Table | None:
    """The paper's findings and the sweep file's own claims with verdicts (analysis.findings_frame,
    ablate.verdicts), when the sweep has what they compare."""
    from ablate.verdicts import decider, paper_claims, sweep_claims
    from analysis import findings_frame as findings

    own = sweep_claims.recorded(df) if not df.empty else []
    if df.empty or not (paper_claims.applies(df) or own):
        return None
    alpha, note = decider.look_alpha(df)
    data = findings.findings(df, metric, own, alpha, mode)
    caption = (
        "The SimPO paper's findings (and the sweep file's `claims`) on these trials, each method at the best "
        f"setting of the method tables (`{metric}`). " + data.attrs.get("caption", "") + note
    )
    return Table("findings", "The paper's findings", caption, data.astype(str), data)


def length_bias_table(df: pd.DataFrame, metric: str, mode: str | None = None) -> Table | None:
    """Each method across the labels' length-bias values (a sweep with data.task_grid)."""
    from analysis import findings_frame as findings

    data = findings.length_bias_table(df, metric, mode) if not df.empty else None
    if data is None:
        return None
    caption = (
        f"Each method's `{metric}` and generation length at every length bias of the preference labels "
        "(the task's `length_bias`: 0 = labels follow the oracle only). Means with 95 % t-intervals over seeds; "
        "a method with several settings shows its best at that bias. Last column: SimPO's mean minus the "
        "method's, with a Welch 95 % interval."
    )
    return Table("length_bias", "Dependence on the labels' length bias", caption, data.astype(str), data)


def build_tables(
    r: Results, spread: str = "std", df: pd.DataFrame | None = None, metric: str = ""
) -> list[Table]:
    df = df if df is not None else pd.DataFrame()
    tables = [findings_table(df, metric, r.mode), length_bias_table(df, metric, r.mode), main_table(r, spread), judges_table(r),
              ablation_table(r, spread), length_table(r, spread), efficiency_table(r, spread),
              agreement_table(r, spread), sensitivity_table(r, spread), importance_table(r),
              settings_table(r, spread)]  # fmt: skip
    return [t for t in tables if t is not None]


def status_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Trials per sweep and status (a column per status that occurs)."""
    counts = df.groupby(["sweep", "status"]).size().unstack(fill_value=0)
    order = [s for s in ["finished", *[s for s in counts.columns if s != "finished"]] if s in counts.columns]
    counts = counts[order]
    counts["total"] = counts.sum(axis=1)
    return counts.reset_index()


def problem_trials(df: pd.DataFrame) -> pd.DataFrame:
    """Every trial that did not finish, with its method, setting, seed and message."""
    bad = df[df["status"] != "finished"]
    cols = ["sweep", "trial", "status", "label", "setting", "seed", "error"]
    out = bad.reindex(columns=cols).astype(object)
    out = out.where(out.notna(), "")
    out["seed"] = [str(int(v)) if isinstance(v, int | float) else str(v) for v in out["seed"]]
    return out.reset_index(drop=True)
