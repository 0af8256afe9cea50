"""Benchmark 4: what a LoRA adapter saves over full fine-tuning, for SimPO and DPO: runtime and peak
memory of the same trial (benchmark 2's: ``bench/simpo_vs_dpo.py``, its wider built-in model on CPU,
or ``--scale gpu``, its ~1B-parameter model in bf16), trained in full or as a rank-16 LoRA adapter on
every linear layer. DPO's reference is online: in full fine-tuning a frozen copy of the start point,
under LoRA the policy with its adapter switched off (no second model).

Each trial runs in a fresh process with an empty data/reference cache; repetitions interleave the four
trials; medians are compared. Figures are the trial's own (``runtime_s``, ``peak_memory_mb``) and the
peak's growth over the process's memory before the trial (CPU; on a GPU the peak is CUDA's).

    python -m bench.lora_vs_full [--quick] [--reps N] [--scale tiny|gpu]
"""

from __future__ import annotations

import argparse
import os
import statistics

from bench import simpo_vs_dpo

LORA = {"r": 16, "alpha": 32.0}
METHODS = {
    "SimPO full": {"method": "simpo", "hparams": {"beta": 2.0, "gamma": 1.0}, "lora": False},
    "SimPO LoRA": {"method": "simpo", "hparams": {"beta": 2.0, "gamma": 1.0}, "lora": LORA},
    "DPO full": {"method": "dpo", "reference": "online", "hparams": {"beta": 0.1}, "lora": False},
    "DPO LoRA": {"method": "dpo", "reference": "online", "hparams": {"beta": 0.1}, "lora": LORA},
}
KEYS = ("runtime_s", "trial_cpu_s", "peak_memory_mb", "peak_growth_mb")
RATIOS = {  # (numerator, denominator)
    "SimPO: LoRA / full": ("SimPO LoRA", "SimPO full"),
    "DPO: LoRA / full": ("DPO LoRA", "DPO full"),
    "LoRA: SimPO / DPO": ("SimPO LoRA", "DPO LoRA"),
    "full: SimPO / DPO": ("SimPO full", "DPO full"),
}


def run(quick: bool = False, reps: int | None = None, log=print, scale: str = "tiny") -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    reps = reps or (1 if quick else 3)
    configs = simpo_vs_dpo.trial_configs(quick, str(simpo_vs_dpo.REPO / ".cache" / "bench"), scale, METHODS)
    runs = simpo_vs_dpo.run_alternating(configs, reps)
    table = {name: {k: statistics.median(r[k] for r in rs) for k in KEYS} for name, rs in runs.items()}
    trainable = {name: configs[name].get("lora") for name in METHODS}
    device, steps = runs["SimPO full"][0]["device"], runs["SimPO full"][0]["steps"]
    log(f"Benchmark 4: full fine-tuning vs a LoRA adapter (r={LORA['r']}, all linear layers), the same trial "
        f"({steps} steps, {'GPU scale' if scale == 'gpu' else 'benchmark 2 model'}), device: {device}; median of "
        f"{reps} fresh process(es) per cell, interleaved")  # fmt: skip
    log(f"  {'':<22}{'runtime':>10}{'CPU time':>10}{'peak memory':>13}{'peak growth':>13}")
    for name, r in table.items():
        log(f"  {name:<22}{r['runtime_s']:>9.2f}s{r['trial_cpu_s']:>9.2f}s{r['peak_memory_mb']:>10.0f} MB"
            f"{r['peak_growth_mb']:>10.0f} MB")  # fmt: skip
    ratios = {}
    for what, (a, b) in RATIOS.items():
        ratios[what] = {k: table[a][k] / table[b][k] for k in KEYS}
        r = ratios[what]
        log(f"  {what:<22}{r['runtime_s']:>9.2f}x{r['trial_cpu_s']:>9.2f}x{r['peak_memory_mb']:>12.2f}x"
            f"{r['peak_growth_mb']:>12.2f}x")  # fmt: skip
    return {"device": device, "reps": reps, "table": table, "ratios": ratios, "lora": trainable}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lora_vs_full", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short trial, one repetition (a smoke run)")
    p.add_argument("--reps", type=int, help="interleaved repetitions (default 3)")
    p.add_argument("--scale", choices=["tiny", "gpu"], default="tiny",
                   help="tiny: benchmark 2's wider built-in model (default); gpu: its ~1B model and long pairs")  # fmt: skip
    args = p.parse_args(argv)
    run(args.quick, args.reps, scale=args.scale)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
