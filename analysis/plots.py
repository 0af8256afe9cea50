"""Figures of the report (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.tables import finished  # noqa: E402

GAMMA_METRICS = [("reward_accuracy", "held-out reward accuracy"), ("oracle_win_rate", "oracle win rate vs SFT"),
                 ("gen_length", "generation length (tokens)")]  # fmt: skip


def gamma_plot(df: pd.DataFrame, out: Path) -> Path | None:
    """SimPO's gamma against reward accuracy, win rate and length; mean ± std over seeds."""
    done = finished(df)
    if "hp_gamma" not in done.columns:
        return None
    simpo = done[(done["method"] == "simpo") & (done.get("hp_length_normalize", True) == True)]  # noqa: E712
    if simpo["hp_gamma"].nunique() < 2:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (metric, title) in zip(axes, GAMMA_METRICS, strict=True):
        g = simpo.groupby("hp_gamma")[metric].agg(["mean", "std"]).fillna(0.0)
        ax.errorbar(g.index, g["mean"], yerr=g["std"], marker="o", capsize=3, label="SimPO")
        for label, other in done[done["label"] != "SimPO"].groupby("label"):
            ax.axhline(other[metric].mean(), linestyle="--", linewidth=1, color=None, label=label)
        ax.set_xlabel("γ (absolute margin)")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = out / "gamma.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cost_plot(df: pd.DataFrame, out: Path) -> Path | None:
    """Runtime and peak memory per method (mean ± std over its trials)."""
    done = finished(df)
    if done.empty:
        return None
    g = done.groupby("label")[["runtime_s", "peak_memory_mb"]].agg(["mean", "std"]).fillna(0.0)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, (metric, title) in zip(
        axes, [("runtime_s", "training runtime (s)"), ("peak_memory_mb", "peak memory (MB)")], strict=True
    ):
        ax.bar(g.index, g[(metric, "mean")], yerr=g[(metric, "std")], capsize=3)
        ax.set_ylabel(title)
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / "cost.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
