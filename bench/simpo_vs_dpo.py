"""Benchmark 2: what SimPO saves over DPO: runtime and peak memory of the same trial.

The same trial (the main sweep's settings, ``sweeps/gamma.yaml``: built-in task, 2,000 pairs,
batch 16, but one epoch, and a wider built-in model, ``MODEL``) under SimPO and under DPO with an online reference model, and,
for information, DPO with precomputed reference log-probs (ablate's default). Figures are the
trial's own (``ablate.trial.runner``): ``runtime_s`` (training, reference precomputation included) and
``peak_memory_mb`` (CPU: the process's peak resident memory during the trial; on a GPU, CUDA's
peak allocation), plus the peak's growth over the process's resident memory before the trial
(without the ~0.5 GB of Python, torch and transformers every process carries) and the trial's CPU
time. Each trial runs in a fresh process with an empty data/reference cache; repetitions
interleave the methods; medians are compared. The SimPO paper reports about 0.8x runtime and 0.9x
memory against DPO on 8 H100 GPUs.

On a GPU, ``--scale gpu`` runs the comparison on a ~1B-parameter model with pairs of up to 900
tokens, given as a local model directory and a local data file (``bench/gpu_scale.py``).

    python -m bench.simpo_vs_dpo [--quick] [--reps N] [--scale tiny|gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT = "RESULT "
# Wider than the main sweep's tiny model (13.6 MB of float32 weights instead of 0.2 MB), so that
# weights, gradients and optimizer state, where a reference model shows, are not lost in the
# process's fixed ~0.5 GB.
MODEL = {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 4}
METHODS = {
    "SimPO": {"method": "simpo", "hparams": {"beta": 2.0, "gamma": 1.0}},
    "DPO (online ref)": {"method": "dpo", "reference": "online", "hparams": {"beta": 0.1}},
    "DPO (precomputed ref)": {"method": "dpo", "reference": "precomputed", "hparams": {"beta": 0.1}},
}


def trial_configs(quick: bool, cache_dir: str, scale: str = "tiny", methods: dict | None = None) -> dict[str, dict]:
    """One trial config per entry of ``methods`` (default ``METHODS``), on benchmark 2's settings."""
    import yaml

    from ablate import spec as spec_mod

    if scale == "gpu":
        from bench import gpu_scale

        spec = spec_mod.SweepSpec.model_validate(
            gpu_scale.sweep(Path(cache_dir) / "gpu-scale", quick, list((methods or METHODS).values()))
        )
        return _configs(spec, methods)
    main = yaml.safe_load((REPO / "sweeps" / "gamma.yaml").read_text())
    data, training, evaluation = main.get("data", {}), main.get("training", {}), main.get("evaluation", {})
    if quick:
        data = {**data, "task": {**data.get("task", {}), "n_train": 256, "n_eval": 64}}
        evaluation = {**evaluation, "num_prompts": 32}
    training = {**training, "epochs": 1}  # one epoch of the main sweep's two: the bench runs 9 trials
    data = {**data, "task": {**data.get("task", {}), "n_sft": 1000}}  # as bench/sweep_overhead.py
    spec = spec_mod.SweepSpec.model_validate(
        {
            "name": "bench-simpo-dpo",
            "cache_dir": cache_dir,
            "methods": list((methods or METHODS).values()),
            "model": {**main.get("model", {}), "tiny": MODEL},
            "data": data,
            "sft": {"epochs": 2},
            "training": training,
            "evaluation": evaluation,
        }
    )
    return _configs(spec, methods)


def _configs(spec, methods: dict | None = None) -> dict[str, dict]:
    """One trial config per method of ``methods``, from its start point (trained once, cached)."""
    from ablate import spec as spec_mod
    from ablate.trial import startpoint

    start = startpoint.prepare_sweep(spec, log=lambda *_: None)
    configs = {}
    for name, trial in zip(methods or METHODS, spec_mod.expand(spec), strict=True):
        configs[name] = {**trial, "start": start}
    return configs


def one_process(config_path: str) -> dict:
    """Run one trial in this (fresh) process with its own empty data/reference cache."""
    import psutil

    from ablate.trial.runner import run_trial

    cfg = json.loads(Path(config_path).read_text())
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
        cfg["cache_dir"] = cache
        rss_before = psutil.Process().memory_info().rss / 2**20
        cpu0 = time.process_time()
        metrics = run_trial(cfg, lambda _: None)
        cpu = time.process_time() - cpu0
    return {
        "runtime_s": metrics["runtime_s"],
        "peak_memory_mb": metrics["peak_memory_mb"],
        # a GPU's peak is the trial's own already (CUDA's counter is reset at its start, when nothing
        # is allocated); a process's resident memory carries Python, torch and transformers
        "peak_growth_mb": metrics["peak_memory_mb"] - (0.0 if _device() != "cpu" else rss_before),
        "trial_cpu_s": cpu,
        "steps": metrics["steps"],
        "tokens_per_s": metrics["tokens_per_s"],
        "device": _device(),
    }


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def _spawn(config_path: str) -> dict:
    cmd = [sys.executable, "-m", "bench.simpo_vs_dpo", "--one", config_path]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT) :])


def run_alternating(configs: dict[str, dict], reps: int) -> dict[str, list[dict]]:
    """Each trial config in a fresh process, ``reps`` times, the order reversed every other repetition
    (so a machine that slows down or speeds up over the run weighs on every config alike)."""
    names = list(configs)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="bench-trials-") as tmp:
        paths = {}
        for i, (name, cfg) in enumerate(configs.items()):
            paths[name] = Path(tmp) / f"trial{i}.json"
            paths[name].write_text(json.dumps(cfg))
        for rep in range(reps):
            for name in names if rep % 2 == 0 else reversed(names):
                runs[name].append(_spawn(str(paths[name])))
    return runs


def run(quick: bool = False, reps: int | None = None, log=print, scale: str = "tiny") -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    reps = reps or (1 if quick else 3)
    runs = run_alternating(trial_configs(quick, str(REPO / ".cache" / "bench"), scale), reps)

    keys = ("runtime_s", "trial_cpu_s", "peak_memory_mb", "peak_growth_mb")
    table = {name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in runs.items()}
    device = runs["SimPO"][0]["device"]
    steps = runs["SimPO"][0]["steps"]
    if scale == "gpu":
        from bench import gpu_scale

        precision = "float32 on CPU" if device == "cpu" else "bf16 compute, float32 master weights"
        what = f"{gpu_scale.describe(quick)}, batch 8, {precision}"
    else:
        what = f"settings of sweeps/gamma.yaml, model {MODEL['num_hidden_layers']} layers x {MODEL['hidden_size']}"
    log(
        f"Benchmark 2: SimPO vs DPO, the same trial ({steps} steps, {what}), device: "
        f"{device}; median of {reps} fresh process(es) per cell, interleaved"
    )
    if device == "cpu":
        log("  (no GPU was lent to this run: CPU figures only; the paper's are 8xH100)")
    log(f"  {'':<24}{'runtime':>10}{'CPU time':>10}{'peak memory':>13}{'peak growth':>13}")
    for name, r in table.items():
        log(
            f"  {name:<24}{r['runtime_s']:>9.2f}s{r['trial_cpu_s']:>9.2f}s{r['peak_memory_mb']:>10.0f} MB"
            f"{r['peak_growth_mb']:>10.0f} MB"
        )
    ratios = {}
    for other in ("DPO (online ref)", "DPO (precomputed ref)"):
        ratios[other] = {k: table["SimPO"][k] / table[other][k] for k in keys}
        r = ratios[other]
        log(
            f"  {'SimPO / ' + other:<24}{r['runtime_s']:>9.2f}x{r['trial_cpu_s']:>9.2f}x"
            f"{r['peak_memory_mb']:>12.2f}x{r['peak_growth_mb']:>12.2f}x"
        )
    log("  paper (SimPO / DPO, 8xH100): runtime ~0.80x, peak GPU memory ~0.90x")
    tps = {name: statistics.median(r["tokens_per_s"] for r in rs) for name, rs in runs.items()}
    log(
        "  training throughput (tokens/s, padding excluded): "
        + ", ".join(f"{n} {v:,.0f}" for n, v in tps.items())
    )
    return {"device": device, "reps": reps, "table": table, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.simpo_vs_dpo", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short trial, one repetition (a smoke run)")
    p.add_argument("--reps", type=int, help="interleaved repetitions (default 3)")
    p.add_argument(
        "--scale", choices=["tiny", "gpu"], default="tiny",
        help="tiny: the built-in model on the built-in task (default); gpu: a ~1B model and long pairs",
    )  # fmt: skip
    p.add_argument("--one", metavar="CONFIG", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(RESULT + json.dumps(one_process(args.one)), flush=True)
        return 0
    run(args.quick, args.reps, scale=args.scale)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
