"""The report's aggregation of trials (plain pandas/scipy, no plotting, no formatting), on the seed
summaries every reader of a sweep shares (``ablate.readout.summary``: ``seed_summary``, ``direction``).

* ``best_settings``: each method's best setting by the selection rule (``SELECTION_RULE``).
* ``relative_to``: ratios of means to a baseline row, with propagated uncertainty.
* ``swept_params`` / ``sensitivity``: how the metric moves with each swept hyperparameter.
* ``param_importances``: Optuna's importances on a study rebuilt from the trials.
* ``analyze``: all of these at once, as the tables and figures take them (``Results``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as st

from ablate import best as best_rule
from ablate.readout.drift import order_drift
from ablate.readout.loader import load_heldout
from ablate.readout.summary import PARAM_PREFIXES, aggregate, finished, seed_summary

SELECTION_RULE = best_rule.RULE  # the one best-setting rule (ablate.best)
# The paper's order of methods (baselines, then SimPO last); unknown methods go before SimPO.
METHOD_ORDER = ["sft", "rrhf", "slic_hf", "dpo", "ipo", "cpo", "kto", "orpo", "rdpo", "simpo"]


def best_settings(summary: pd.DataFrame, metric: str, mode: str = "max") -> pd.DataFrame:
    """The best setting of each label (see ``SELECTION_RULE``), in the paper's method order.
    Labels with no eligible setting are left out (the report lists them)."""
    col = f"{metric}_mean"
    if summary.empty or col not in summary.columns:
        return summary.iloc[0:0]
    return order_methods(rank_settings(summary, metric, mode).groupby("label", sort=False).head(1))


def rank_settings(summary: pd.DataFrame, metric: str, mode: str = "max") -> pd.DataFrame:
    """Every eligible setting, grouped by label, best first by the one rule (``ablate.best.rank``)."""
    return best_rule.rank(summary, metric, mode)


def order_methods(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in the paper's order: baselines by ``METHOD_ORDER``, SimPO variants last, then by label."""
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    key = frame["method"].map(lambda m: rank.get(m, len(METHOD_ORDER) - 1.5))
    return (
        frame.assign(_rank=key.values)
        .sort_values(["_rank", "label"], kind="stable")
        .drop(columns="_rank")
        .reset_index(drop=True)
    )


def baseline_row(best: pd.DataFrame) -> pd.Series | None:
    """The DPO row that costs are compared with: DPO with an online reference (as the paper ran it)
    if there is one, else the row labelled ``DPO``, else any DPO row; None without DPO."""
    dpo = best[best["method"] == "dpo"]
    if dpo.empty:
        return None
    for mask in (dpo["reference"] == "online", dpo["label"] == "DPO"):
        if mask.any():
            return dpo[mask].iloc[0]
    return dpo.iloc[0]


def relative_to(best: pd.DataFrame, base: pd.Series, metrics: list[str]) -> pd.DataFrame:
    """``<m>_ratio`` = mean / baseline mean, and ``<m>_ratio_std``, the ratio's std propagated from
    both relative stds (first order; NaN where a std is unknown)."""
    out = best.copy()
    for m in metrics:
        b_mean, b_std = base.get(f"{m}_mean", math.nan), base.get(f"{m}_std", math.nan)
        ratio = out[f"{m}_mean"] / b_mean if b_mean else math.nan
        rel = np.sqrt((out[f"{m}_std"] / out[f"{m}_mean"]) ** 2 + (b_std / b_mean) ** 2)
        out[f"{m}_ratio"] = ratio
        out[f"{m}_ratio_std"] = ratio * rel
    return out


def swept_params(summary: pd.DataFrame, label: str) -> list[str]:
    """``hp_*``/``tr_*`` columns that take more than one value among ``label``'s settings."""
    rows = summary[summary["label"] == label]
    cols = [c for c in rows.columns if c.startswith(PARAM_PREFIXES)]
    return [c for c in cols if rows[c].dropna().astype(str).nunique() > 1]


def param_name(col: str) -> str:
    return "lora." + col[5:] if col.startswith("lora_") else col.split("_", 1)[1]


def sensitivity(
    df: pd.DataFrame, summary: pd.DataFrame, best: pd.DataFrame, metrics: list[str], max_values: int = 12
) -> pd.DataFrame:
    """For each method and each of its swept hyperparameters with at most ``max_values`` values,
    the metrics at every value, over seeds. Where the method sweeps several hyperparameters, the
    others are held at the method's best setting (``held``: "others at best"), or, if that slice
    has a single value, averaged over (``held``: "others averaged")."""
    done = finished(df)
    rows = []
    for _, b in best.iterrows():
        label = b["label"]
        params = swept_params(summary, label)
        trials = done[done["label"] == label]
        for p in params:
            values = trials[p].dropna()
            if values.astype(str).nunique() > max_values:
                continue
            others = [q for q in params if q != p]
            held = "-"
            sel = trials
            if others:
                at_best = trials[np.logical_and.reduce([trials[q].astype(str) == str(b[q]) for q in others])]
                if at_best[p].astype(str).nunique() > 1:
                    sel, held = at_best, "others at best"
                else:
                    held = "others averaged"
            for value, group in sel.groupby(p, sort=True):
                row = {
                    "label": label,
                    "param": param_name(p),
                    "value": value,
                    "held": held,
                    "trials": len(group),
                }
                for m in metrics:
                    if m in group.columns:
                        row.update({f"{m}_{k}": v for k, v in aggregate(group[m]).items()})
                rows.append(row)
    return pd.DataFrame(rows)


def param_importances(df: pd.DataFrame, metric: str, mode: str, min_trials: int = 4) -> pd.DataFrame:
    """Optuna's hyperparameter importances (its default evaluator, fANOVA) for each method that
    sweeps at least two hyperparameters, on a study rebuilt from the finished trials (one Optuna
    trial per Ray trial, value = ``metric``), with each parameter's Spearman rank correlation with
    ``metric`` next to it. Columns: label, param, importance, spearman, trials."""
    import optuna  # imported here: only sweeps with several swept hyperparameters need it

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line per method

    done = finished(df)
    done = done[done[metric].notna()] if metric in done.columns else done.iloc[0:0]
    rows = []
    for label, trials in done.groupby("label", sort=False):
        cols = [c for c in trials.columns if c.startswith(PARAM_PREFIXES)]
        swept = [c for c in cols if trials[c].dropna().astype(str).nunique() > 1 and trials[c].notna().all()]
        if len(swept) < 2 or len(trials) < min_trials:
            continue
        dists = {param_name(c): _distribution(trials[c]) for c in swept}
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
        for _, t in trials.iterrows():
            params = {param_name(c): _plain(t[c]) for c in swept}
            study.add_trial(
                optuna.trial.create_trial(params=params, distributions=dists, value=float(t[metric]))
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study)
        for c in swept:
            name = param_name(c)
            rho = math.nan
            if pd.api.types.is_numeric_dtype(trials[c]) or trials[c].map(type).eq(bool).all():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    rho = float(st.spearmanr(trials[c].astype(float), trials[metric]).statistic)
            rows.append(
                {
                    "label": label,
                    "param": name,
                    "importance": importances.get(name, 0.0),
                    "spearman": rho,
                    "trials": len(trials),
                }
            )
    out = pd.DataFrame(rows, columns=["label", "param", "importance", "spearman", "trials"])
    return out.sort_values(["label", "importance"], ascending=[True, False], kind="stable").reset_index(
        drop=True
    )


def _plain(v):
    """numpy scalars → Python values (Optuna checks types of categorical choices)."""
    return v.item() if hasattr(v, "item") else v


def _distribution(values: pd.Series):
    """An Optuna distribution covering the observed values: categorical for bools and strings,
    int or float ranges (log scale when they span two decades) for numbers."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    vals = [_plain(v) for v in values.dropna()]
    if any(isinstance(v, bool | str) for v in vals) or not all(isinstance(v, int | float) for v in vals):
        return CategoricalDistribution(sorted(set(vals), key=str))
    low, high = min(vals), max(vals)
    if all(isinstance(v, int) for v in vals):
        return IntDistribution(int(low), int(high))
    log = low > 0 and high / low >= 100
    return FloatDistribution(float(low), float(high), log=log)


def contingency(records: list[dict]) -> dict[str, float]:
    """Reward ranking vs average-log-likelihood ranking over held-out pairs (pooled ``heldout.json``
    ``pairs``): counts of the four cells, both accuracies and their agreement."""
    r_w = np.concatenate([np.asarray(r["chosen_reward"], float) for r in records])
    r_l = np.concatenate([np.asarray(r["rejected_reward"], float) for r in records])
    a_w = np.concatenate([np.asarray(r["chosen_avg_logp"], float) for r in records])
    a_l = np.concatenate([np.asarray(r["rejected_avg_logp"], float) for r in records])
    reward = r_w > r_l
    lik = a_w > a_l
    n = len(reward)
    return {
        "pairs": n,
        "both_chosen": int((reward & lik).sum()),
        "reward_chosen_lik_rejected": int((reward & ~lik).sum()),
        "reward_rejected_lik_chosen": int((~reward & lik).sum()),
        "both_rejected": int((~reward & ~lik).sum()),
        "reward_accuracy": float(reward.mean()) if n else math.nan,
        "likelihood_accuracy": float(lik.mean()) if n else math.nan,
        "agreement": float((np.sign(r_w - r_l) == np.sign(a_w - a_l)).mean()) if n else math.nan,
    }


def length_logp(records: list[dict]) -> tuple[np.ndarray, np.ndarray, float]:
    """Lengths and average log-likelihoods of all held-out responses (chosen and rejected, pooled
    over ``records``) and their Spearman correlation."""
    lengths = np.concatenate(
        [np.r_[np.asarray(r["chosen_len"], float), np.asarray(r["rejected_len"], float)] for r in records]
    )
    avg = np.concatenate(
        [
            np.r_[np.asarray(r["chosen_avg_logp"], float), np.asarray(r["rejected_avg_logp"], float)]
            for r in records
        ]
    )
    rho = math.nan
    if len(avg) > 2 and np.ptp(avg) > 0 and np.ptp(lengths) > 0:  # undefined for a constant input
        rho = float(st.spearmanr(avg, lengths).statistic)
    return lengths, avg, rho


# The metrics every report aggregates (others the trials report are summarised too, in CSVs).
REPORT_METRICS = [
    "reward_accuracy", "oracle_win_rate", "gen_length", "runtime_s", "peak_memory_mb", "peak_memory_growth_mb",
    "tokens_per_s",
    "length_logp_spearman", "reward_likelihood_agreement", "reward_margin", "chosen_avg_logp",
    "rejected_avg_logp", "oracle_reward", "train_loss",
]  # fmt: skip
# Costs compared with DPO. Peak growth (the trial's own memory over its start, ablate.trial.memory_probe) is the
# memory measure that compares methods; peak memory is the whole process's (docs/reports.md).
COST_METRICS = ["runtime_s", "peak_memory_mb", "peak_memory_growth_mb"]


@dataclass
class Results:
    """Everything the tables and figures are drawn from, computed once."""

    trials: pd.DataFrame  # a row per trial, every status
    summary: pd.DataFrame  # a row per setting (finished seeds)
    best: pd.DataFrame  # a row per method: its best setting
    metric: str
    mode: str
    baseline: pd.Series | None  # the DPO row costs are compared with
    heldout: dict[str, list[dict]] = field(default_factory=dict)  # config_key -> heldout.json of its seeds
    sensitivity: pd.DataFrame = field(default_factory=pd.DataFrame)
    importances: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)
    drift: list = field(default_factory=list)  # ablate.readout.drift.Drift per cost metric: trend with start order


def analyze(df: pd.DataFrame, metric: str, mode: str) -> Results:
    """Aggregate the trials: summaries, best settings, costs relative to DPO, sensitivity,
    importances, and the per-response data of the best settings."""
    summary = seed_summary(df)
    metrics = [m for m in REPORT_METRICS if f"{m}_mean" in summary.columns]
    if metric not in metrics and f"{metric}_mean" in summary.columns:
        metrics.append(metric)
    best = best_settings(summary, metric, mode)
    notes = []
    missing = sorted(set(summary["label"]) - set(best["label"])) if not summary.empty else []
    if missing:
        notes.append(
            f"No finished trial of {', '.join(missing)} reported `{metric}`; left out of the method tables."
        )
    if "task_key" in best.columns and best["task_key"].nunique() > 1:
        groups = best.groupby("task_key", sort=False)["label"].apply(lambda x: ", ".join(x))
        notes.append(
            "The methods' best settings come from different data, model or evaluation configs, so they are not "
            "directly comparable: " + "; ".join(f"[{g}]" for g in groups) + ". Compare within a group, or "
            "pass sweeps of one task."
        )
    base = baseline_row(best)
    if base is not None:
        best = relative_to(best, base, [m for m in COST_METRICS if f"{m}_mean" in best.columns])
    heldout: dict[str, list[dict]] = {}
    done = finished(df)
    for key in best["config_key"] if "heldout" in done.columns else []:
        paths = done.loc[done["config_key"] == key, "heldout"].tolist()
        records = [r for r in map(load_heldout, paths) if r is not None]
        if records:
            heldout[key] = records
    sens = sensitivity(df, summary, best, metrics) if not best.empty else pd.DataFrame()
    try:
        imp = param_importances(df, metric, mode)
    except (ImportError, ValueError, RuntimeError) as e:  # e.g. scikit-learn missing for fANOVA
        imp = pd.DataFrame()
        notes.append(f"Parameter importances not computed: {type(e).__name__}: {e}")
    return Results(df, summary, best, metric, mode, base, heldout, sens, imp, notes, order_drift(df))
