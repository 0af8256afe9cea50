"""Hand-written sweep directories in Ray Tune's layout (params.json, result.json, error.txt,
heldout.json, experiment_state-*.json) for the analysis tests: known numbers, no training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

TRAINING = {"learning_rate": 1e-3, "batch_size": 16, "epochs": 1}
DATA = {"source": "builtin:synthetic", "task": {"version": 1, "length_bias": 1.0}}


def trial_config(label: str, method: str, hparams: dict, seed: int, reference=None, **overrides) -> dict:
    setting = ",".join(f"{k}={v}" for k, v in sorted(hparams.items())) or "default"
    cfg = {
        "sweep": "s", "label": label, "method": method, "hparams": dict(hparams), "setting": setting,
        "reference": reference, "training": dict(TRAINING), "data": json.loads(json.dumps(DATA)),
        "model": {"name_or_path": "builtin:tiny"}, "evaluation": {"num_prompts": 8},
        "resources": {"cpus": 1, "gpus": 0}, "seed": seed, "index": 0, "cache_dir": "/tmp/c",
        "start": {"path": "/tmp/c/sft-abc", "baseline": None}, "metric": "reward_accuracy", "mode": "max",
    }  # fmt: skip
    for key, value in overrides.items():
        if isinstance(value, dict):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    return cfg


def heldout(n: int, seed: int, reward_tracks_likelihood: bool) -> dict:
    """Per-pair records; SimPO-like rewards equal beta * avg log-lik (always agree), others random."""
    rng = np.random.default_rng(seed)
    c_len, r_len = rng.integers(2, 12, n), rng.integers(2, 12, n)
    c_avg, r_avg = -rng.uniform(0.5, 3, n), -rng.uniform(0.5, 3, n)
    if reward_tracks_likelihood:
        c_rew, r_rew = 2 * c_avg, 2 * r_avg
    else:
        c_rew, r_rew = rng.normal(size=n), rng.normal(size=n)
    return {
        "pairs": {"chosen_avg_logp": c_avg.tolist(), "rejected_avg_logp": r_avg.tolist(),
                  "chosen_len": c_len.tolist(), "rejected_len": r_len.tolist(),
                  "chosen_reward": c_rew.tolist(), "rejected_reward": r_rew.tolist()},
        "generations": {"length": rng.integers(2, 9, 8).tolist()},
    }  # fmt: skip


def write_trial(
    sweep_dir: Path,
    name: str,
    cfg: dict | None,
    final: dict | None,
    steps: int = 3,
    error: str | None = None,
    with_heldout: bool = True,
) -> Path:
    """A trial directory; ``final=None`` leaves out the final record, ``cfg=None`` writes a broken params.json."""
    d = sweep_dir / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "params.json").write_text(json.dumps({"trial": cfg}) if cfg is not None else '{"trial": {')
    lines = [
        {"step": 10 * (i + 1), "train_loss": 1.0 / (i + 1), "train_reward_accuracy": 0.5 + 0.05 * i, "lr": 1e-3,
         "training_iteration": i + 1, "trial_id": name}
        for i in range(steps)
    ]  # fmt: skip
    if final is not None:
        lines.append({"status": "finished", **final, "training_iteration": steps + 1, "done": False})
    (d / "result.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if error:
        (d / "error.txt").write_text(f"Failure # 1 (occurred at 2026-01-01)\nTraceback ...\n{error}\n")
    if with_heldout and final is not None and final.get("status", "finished") == "finished" and cfg:
        tracks = cfg["method"] == "simpo" and cfg["hparams"].get("length_normalize", True)
        (d / "heldout.json").write_text(json.dumps(heldout(40, cfg["seed"], tracks)))
    return d


def write_experiment_state(
    sweep_dir: Path, statuses: dict[str, str], stamp: str = "2026-01-01_00-00-00"
) -> Path:
    """Ray's experiment state with the given status per trial directory name."""
    trial_data = [
        [json.dumps({"status": s, "relative_logdir": name, "trial_id": name, "config": {}}), json.dumps({"num_failures": 0})]
        for name, s in statuses.items()
    ]  # fmt: skip
    path = sweep_dir / f"experiment_state-{stamp}.json"
    path.write_text(json.dumps({"trial_data": trial_data}))
    return path


def metrics(acc: float, win: float, length: float, runtime: float, memory: float, **more) -> dict:
    return {
        "reward_accuracy": acc, "oracle_win_rate": win, "gen_length": length, "runtime_s": runtime,
        "peak_memory_mb": memory, "length_logp_spearman": more.pop("rho", 0.3), "tokens_per_s": 1000.0 / runtime,
        "reward_likelihood_agreement": more.pop("agree", 0.5), "train_loss": 0.5, **more,
    }  # fmt: skip


def paper_like_sweep(root: Path, name: str = "paper") -> Path:
    """SimPO over gamma (3 values x 2 seeds), SimPO w/o LN, DPO online and DPO precomputed (2 seeds),
    an errored, a diverged and an unfinished trial."""
    sweep = root / name
    i = 0

    def add(cfg, final, **kw):
        nonlocal i
        slug = re.sub(r"[^a-z0-9]+", "-", cfg["label"].lower())
        write_trial(sweep, f"{i:03d}-{slug}-s{cfg['seed']}", cfg, final, **kw)
        i += 1

    for gamma, acc, win in [(0.0, 0.60, 0.55), (0.5, 0.64, 0.62), (1.0, 0.62, 0.58)]:
        for seed in (0, 1):
            d = 0.01 * (1 if seed else -1)
            cfg = trial_config(
                "SimPO", "simpo", {"beta": 2.0, "gamma": gamma, "length_normalize": True}, seed
            )
            add(cfg, metrics(acc + d, win + d, 5.0 + gamma, 8.0 + d, 900.0, agree=1.0, rho=0.3))
    for seed in (0, 1):
        cfg = trial_config(
            "SimPO w/o LN", "simpo", {"beta": 2.0, "gamma": 1.0, "length_normalize": False}, seed
        )
        add(cfg, metrics(0.55, 0.40, 9.0, 8.0, 900.0, rho=0.8, agree=0.8))
        for ref, runtime, memory in (("online", 10.0, 1000.0), ("precomputed", 8.5, 950.0)):
            cfg = trial_config("DPO", "dpo", {"beta": 0.1}, seed, reference=ref)
            add(cfg, metrics(0.58, 0.50, 6.0, runtime + 0.1 * seed, memory, rho=0.6, agree=0.5))
    add(
        trial_config("DPO", "dpo", {"beta": 0.1}, 2, reference="online"),
        None,
        error="RuntimeError: injected fault at step 2",
    )
    diverged = trial_config("SimPO", "simpo", {"beta": 2.0, "gamma": 0.5, "length_normalize": True}, 2)
    write_trial(sweep, f"{i:03d}-simpo-diverged", diverged, None)
    with (sweep / f"{i:03d}-simpo-diverged" / "result.json").open("a") as f:
        f.write(
            json.dumps({"status": "diverged: loss became nan", "train_loss": float("nan"), "runtime_s": 1.0})
            + "\n"
        )
    i += 1
    add(trial_config("SimPO", "simpo", {"beta": 2.0, "gamma": 1.0, "length_normalize": True}, 2), None)
    return sweep
