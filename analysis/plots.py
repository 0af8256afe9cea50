"""The report's figures (matplotlib, Agg backend): each saved as PNG and SVG.

* ``gamma`` (and ``sensitivity-<method>-<param>``): a swept hyperparameter against reward accuracy,
  win rate and generation length, with error bars over seeds (Fig. 3);
* ``efficiency``: runtime and peak memory relative to DPO (Fig. 4d);
* ``length-logp``: average log-likelihood against length of held-out responses, per method, with
  Spearman's ρ (Fig. 4a);
* ``contingency``: reward ranking against likelihood ranking of held-out pairs (Fig. 4b);
* ``agreement``: reward accuracy and reward/likelihood agreement per method (Fig. 4c);
* ``curves``: training loss and reward accuracy over steps per method.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ablate.readout import judgments  # noqa: E402
from ablate.readout.summary import finished  # noqa: E402
from analysis import stats  # noqa: E402
from analysis.stats import Results  # noqa: E402
from analysis.tables import header  # noqa: E402

plt.rcParams.update({"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "legend.fontsize": 8})
DPI = 120
MAX_POINTS = 4000  # per scatter panel: beyond this a cloud is ink, and the PNG and HTML grow with the sweep
# Axis labels: a hyperparameter keeps its sweep file's name (the name its column and tables use too),
# with what it is in brackets.
PARAM_LABELS = {
    "gamma": "gamma (γ, target reward margin)",
    "beta": "beta (β, reward scale)",
    "tau": "tau (τ)",
    "alpha": "alpha (α, length penalty)",
    "delta": "delta (δ)",
    "batch_size": "batch_size (pairs)",
}
AXIS = {
    "reward_accuracy": "held-out reward accuracy (fraction)",
    "oracle_win_rate": "win rate vs SFT (fraction)",
    "gen_length": "generation length (tokens)",
    "runtime_s": "training runtime (s)",
    "peak_memory_mb": "peak memory (MB)",
    "peak_memory_growth_mb": "peak growth over the trial's start (MB)",
    "length_logp_spearman": "Spearman ρ (avg log-lik., length)",
    "reward_likelihood_agreement": "reward/likelihood agreement (fraction)",
    "train_loss": "training loss",
    "train_reward_accuracy": "training reward accuracy (fraction)",
}


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    png: Path
    svg: Path | None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def colors(labels) -> dict[str, tuple]:
    """One colour per method, the same in every figure."""
    cmap = plt.get_cmap("tab10")
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def _save(fig, out: Path, name: str, title: str, caption: str, svg: bool = True) -> Figure:
    png = out / f"{name}.png"
    fig.savefig(png, dpi=DPI, bbox_inches="tight")
    svg_path = None
    if svg:
        svg_path = out / f"{name}.svg"
        fig.savefig(svg_path, bbox_inches="tight")
    plt.close(fig)
    return Figure(name, title, caption, png, svg_path)


def _errors(frame: pd.DataFrame, metric: str, spread: str):
    """Error bar half-widths (std) or the asymmetric CI around the mean; zeros where unknown."""
    mean = frame[f"{metric}_mean"].to_numpy(float)
    if spread == "ci95":
        low = np.nan_to_num(mean - frame[f"{metric}_ci_low"].to_numpy(float))
        high = np.nan_to_num(frame[f"{metric}_ci_high"].to_numpy(float) - mean)
        return np.vstack([low, high])
    return np.nan_to_num(frame[f"{metric}_std"].to_numpy(float))


SWEEP_METRICS = ["reward_accuracy", "oracle_win_rate", "gen_length"]


def param_figure(r: Results, label: str, param: str, out: Path, spread: str, name: str) -> Figure | None:
    """A swept hyperparameter of one method against the sweep metrics (others' best as lines)."""
    rows = r.sensitivity[(r.sensitivity["label"] == label) & (r.sensitivity["param"] == param)]
    metrics = [m for m in dict.fromkeys([*SWEEP_METRICS, r.metric]) if f"{m}_mean" in rows.columns]
    metrics = [m for m in metrics if rows[f"{m}_mean"].notna().any()][:4]
    if len(rows) < 2 or not metrics:
        return None
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in rows["value"])
    x = rows["value"].to_numpy(float) if numeric else np.arange(len(rows))
    palette = colors(r.best["label"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        ax.errorbar(x, rows[f"{m}_mean"], yerr=_errors(rows, m, spread), marker="o", capsize=3,
                    color=palette.get(label, "C0"), label=f"{label} (over seeds)")  # fmt: skip
        for _, other in r.best[r.best["label"] != label].iterrows():
            v = other.get(f"{m}_mean", math.nan)
            if isinstance(v, float) and math.isfinite(v):
                ax.axhline(
                    v,
                    linestyle="--",
                    linewidth=1.2,
                    color=palette[other["label"]],
                    label=f"{other['label']} (best)",
                )
        if not numeric:
            ax.set_xticks(x, [str(v) for v in rows["value"]])
        elif len(x) > 1 and x.min() > 0 and x.max() / x.min() >= 100:
            ax.set_xscale("log")
        ax.set_xlabel(PARAM_LABELS.get(param, param))
        ax.set_ylabel(AXIS.get(m, header(m)))
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout()
    held = rows["held"].iloc[0]
    fig.suptitle(f"{label}: {param} sweep" + (f" ({held})" if held != "-" else ""), y=1.02)
    bars = "standard deviation" if spread == "std" else "95 % t-interval"
    caption = (
        f"{label} across {PARAM_LABELS.get(param, param)}; points are means over seeds, bars the {bars}. "
        "Dashed lines: the other methods at their best settings."
    )
    return _save(fig, out, name, f"{label}: {param}", caption)


def sweep_figures(r: Results, out: Path, spread: str, limit: int = 8) -> list[Figure]:
    """``gamma`` for SimPO's γ study, ``sensitivity-*`` for every other swept hyperparameter."""
    if r.sensitivity.empty:
        return []
    figs = []
    pairs = r.sensitivity[["label", "param"]].drop_duplicates().itertuples(index=False)
    methods = dict(zip(r.best["label"], r.best["method"], strict=True))
    gamma_done = False
    for label, param in list(pairs)[:limit]:
        if param == "gamma" and methods.get(label) == "simpo" and not gamma_done:
            name, gamma_done = "gamma", True
        else:
            name = f"sensitivity-{slug(label)}-{slug(param)}"
        fig = param_figure(r, label, param, out, spread, name)
        if fig is not None:
            figs.append(fig)
    return figs


def efficiency_figure(r: Results, out: Path, spread: str) -> Figure | None:
    best = r.best
    cost = [m for m in stats.COST_METRICS if f"{m}_mean" in best.columns and best[f"{m}_mean"].notna().any()]
    if best.empty or not cost:
        return None
    relative = r.baseline is not None
    palette = colors(best["label"])
    fig, axes = plt.subplots(1, len(cost), figsize=(5.2 * len(cost), 3.8), squeeze=False)
    x = np.arange(len(best))
    for ax, m in zip(axes[0], cost, strict=True):
        if relative:
            vals, err = (
                best[f"{m}_ratio"].to_numpy(float),
                np.nan_to_num(best[f"{m}_ratio_std"].to_numpy(float)),
            )
            ax.axhline(1.0, color="black", linewidth=1, linestyle="--")
            ax.set_ylabel(f"{AXIS[m].split(' (')[0]} relative to {r.baseline['label']} (×)")
        else:
            vals, err = best[f"{m}_mean"].to_numpy(float), np.nan_to_num(best[f"{m}_std"].to_numpy(float))
            ax.set_ylabel(AXIS[m])
        ax.bar(x, vals, yerr=err, capsize=3, color=[palette[lbl] for lbl in best["label"]])
        for xi, v in zip(x, vals, strict=True):
            if math.isfinite(v):  # the value inside the bar, clear of the error bar
                ax.text(xi, v / 2, f"{v:.2f}" if relative else f"{v:.3g}", ha="center", va="center",
                        color="white", fontsize=9, fontweight="bold")  # fmt: skip
        ax.set_xticks(x, best["label"], rotation=25, ha="right")
        ax.grid(axis="y", alpha=0.3)
    what = (
        f"relative to {r.baseline['label']} ({r.baseline['reference'] or 'no'} reference)"
        if relative
        else "(no DPO in these sweeps)"
    )
    caption = (
        f"Training runtime and peak memory per method at its best setting, {what}; bars: std (propagated for "
        "ratios). Peak growth (the trial's own memory over its start) is the memory measure that compares methods."
    )
    return _save(fig, out, "efficiency", "Efficiency (Fig. 4d)", caption)


def _heldout_methods(r: Results) -> list[pd.Series]:
    return [b for _, b in r.best.iterrows() if b["config_key"] in r.heldout]


def _grid(n: int, width: float = 3.6, height: float = 3.3):
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def length_logp_figure(r: Results, out: Path) -> Figure | None:
    methods = _heldout_methods(r)
    if not methods:
        return None
    palette = colors(r.best["label"])
    fig, axes = _grid(len(methods))
    rng = np.random.default_rng(0)
    sampled = []
    for ax, b in zip(axes, methods, strict=False):
        lengths, avg, rho = stats.length_logp([rec["pairs"] for rec in r.heldout[b["config_key"]]])
        if len(lengths) > MAX_POINTS:  # many seeds: a sample keeps the cloud readable (ρ uses every point)
            sampled.append(f"{b['label']}: {MAX_POINTS:,} of {len(lengths):,}")
            pick = rng.choice(len(lengths), MAX_POINTS, replace=False)
            lengths, avg = lengths[pick], avg[pick]
        ax.scatter(
            lengths + rng.uniform(-0.3, 0.3, len(lengths)), avg, s=6, alpha=0.35, color=palette[b["label"]]
        )
        ax.set_title(f"{b['label']}: ρ = {rho:.2f}")
        ax.set_xlabel("response length (tokens)")
        ax.set_ylabel("avg log-likelihood (nats/token)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    caption = (
        "Average log-likelihood against length of every held-out response (chosen and rejected, all seeds of "
        "the best setting; lengths jittered by ±0.3 for visibility); ρ is Spearman's rank correlation."
    ) + (f" Drawn: a random sample of the responses ({'; '.join(sampled)}); ρ uses them all." if sampled else "")
    return _save(fig, out, "length-logp", "Likelihood vs length (Fig. 4a)", caption, svg=False)


def contingency_figure(r: Results, out: Path) -> Figure | None:
    methods = _heldout_methods(r)
    if not methods:
        return None
    fig, axes = _grid(len(methods), 3.3, 3.1)
    for ax, b in zip(axes, methods, strict=False):
        c = stats.contingency([rec["pairs"] for rec in r.heldout[b["config_key"]]])
        cells = np.array([[c["both_chosen"], c["reward_chosen_lik_rejected"]],
                          [c["reward_rejected_lik_chosen"], c["both_rejected"]]], float)  # fmt: skip
        frac = cells / max(c["pairs"], 1)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(frac):
            ax.text(j, i, f"{v:.0%}\n({int(cells[i, j])})", ha="center", va="center",
                    color="white" if v > 0.5 else "black", fontsize=9)  # fmt: skip
        ax.set_xticks([0, 1], ["chosen", "rejected"])
        ax.set_yticks([0, 1], ["chosen", "rejected"])
        ax.set_xlabel("higher avg log-likelihood")
        ax.set_ylabel("higher reward")
        ax.set_title(f"{b['label']}: agree {c['agreement']:.0%}")
    fig.tight_layout()
    caption = (
        "Held-out pairs by which response the method's reward prefers (rows) and which has the higher average "
        "log-likelihood (columns), pooled over seeds; the diagonal is agreement. SimPO's reward is the average "
        "log-likelihood, so it agrees by construction."
    )
    return _save(fig, out, "contingency", "Reward vs likelihood ranking (Fig. 4b)", caption)


def agreement_figure(r: Results, out: Path, spread: str) -> Figure | None:
    metrics = [m for m in ("reward_accuracy", "reward_likelihood_agreement") if f"{m}_mean" in r.best.columns]
    if r.best.empty or not metrics:
        return None
    palette = colors(r.best["label"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
    x = np.arange(len(r.best))
    for ax, m in zip(axes[0], metrics, strict=True):
        ax.bar(x, r.best[f"{m}_mean"], yerr=_errors(r.best, m, spread), capsize=3,
               color=[palette[lbl] for lbl in r.best["label"]])  # fmt: skip
        ax.set_ylim(0, 1.05)
        ax.axhline(0.5, color="grey", linewidth=1, linestyle=":")
        ax.set_ylabel(AXIS[m])
        ax.set_xticks(x, r.best["label"], rotation=25, ha="right")
        ax.grid(axis="y", alpha=0.3)
    bars = "standard deviation" if spread == "std" else "95 % t-interval"
    caption = f"Held-out reward accuracy (Fig. 4c) and reward/likelihood agreement (Fig. 4b) per method at its best setting; bars: {bars} over seeds; dotted: chance."
    return _save(fig, out, "agreement", "Reward accuracy and agreement (Fig. 4b, 4c)", caption)


def curves_figure(r: Results, out: Path) -> Figure | None:
    done = finished(r.trials)
    series = []
    for _, b in r.best.iterrows():
        hist = [
            h for h in done.loc[done["config_key"] == b["config_key"], "history"] if isinstance(h, list) and h
        ]
        if hist:
            frame = pd.concat([pd.DataFrame(h).assign(seed=i) for i, h in enumerate(hist)], ignore_index=True)
            series.append((b["label"], frame))
    keys = [k for k in ("train_loss", "train_reward_accuracy") if any(k in f.columns for _, f in series)]
    if not series or not keys:
        return None
    palette = colors(r.best["label"])
    fig, axes = plt.subplots(1, len(keys), figsize=(5.6 * len(keys), 3.8), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=True):
        for label, frame in series:
            if k not in frame.columns:
                continue
            g = frame.groupby("step")[k].agg(["mean", "min", "max"])
            ax.plot(g.index, g["mean"], color=palette[label], label=label)
            ax.fill_between(g.index, g["min"], g["max"], color=palette[label], alpha=0.15, linewidth=0)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(AXIS[k])
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="best")
    caption = (
        "Training loss and training reward accuracy (averaged over each logging window) per method at its best "
        "setting; line: mean over seeds, band: min–max over seeds. Losses of different objectives are on "
        "different scales."
    )
    return _save(fig, out, "curves", "Training curves", caption)


def lc_length_figure(r: Results, out: Path) -> Figure | None:
    """LC win rate against generation length per method at its best setting, a panel per judge (the
    paper's length/quality picture); bars: std over seeds on both axes."""
    judges = [j for j in judgments.judge_ids(r.trials) if f"{judgments.lc_column(r.trials, j)}_mean" in r.best.columns]
    if not judges or "gen_length_mean" not in r.best.columns or r.best.empty:
        return None
    palette = colors(r.best["label"])
    fig, axes = _grid(len(judges), 4.2, 3.6)
    for ax, j in zip(axes, judges, strict=False):
        col = judgments.lc_column(r.trials, j)
        for _, b in r.best.iterrows():
            x, y = b.get("gen_length_mean", math.nan), b.get(f"{col}_mean", math.nan)
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            ax.errorbar(x, y, xerr=np.nan_to_num(b.get("gen_length_std", 0.0)),
                        yerr=np.nan_to_num(b.get(f"{col}_std", 0.0)), marker="o", capsize=3,
                        color=palette[b["label"]], label=b["label"])  # fmt: skip
            raw = b.get(f"win_rate@{j}_mean", math.nan)
            if math.isfinite(raw):
                ax.plot([x], [raw], marker="x", color=palette[b["label"]], linestyle="none")
        ax.axhline(0.5, color="grey", linewidth=1, linestyle=":")
        ax.set_title(j)
        ax.set_xlabel("generation length (tokens)")
        ax.set_ylabel("LC win rate vs start point")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=7)
    fig.tight_layout()
    caption = (
        "Length-controlled win rate against the start point's answers (o, with std over seeds) and raw win rate "
        "(x) against mean generation length, per method at its best setting and per judge; dotted: parity. A "
        "judge that rewards length puts raw win rates above LC ones for long-answer methods."
    )
    return _save(fig, out, "lc-length", "Length-controlled win rate vs length", caption)


def build_figures(r: Results, out: Path, spread: str = "std") -> list[Figure]:
    out.mkdir(parents=True, exist_ok=True)
    figs = sweep_figures(r, out, spread)
    for fig in (efficiency_figure(r, out, spread), length_logp_figure(r, out), contingency_figure(r, out),
                agreement_figure(r, out, spread), curves_figure(r, out), lc_length_figure(r, out)):  # fmt: skip
        if fig is not None:
            figs.append(fig)
    return figs
