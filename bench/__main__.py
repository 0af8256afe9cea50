"""``python -m bench [--quick] [--only NAME ...]``: the four benchmarks, each printing ratios measured
side by side in one run (also runnable alone: ``python -m bench.trainer_vs_trl`` and so on).

1. ``trainer_vs_trl``: ablate's trial trainer vs TRL's CPOTrainer (SimPO) and DPOTrainer.
2. ``simpo_vs_dpo``: runtime and peak memory of the same trial under SimPO and DPO.
3. ``sweep_overhead``: a sweep's wall time vs its ideal on local Ray, and each trial's start-up.
4. ``judging_overhead``: what judging (two judges, win rates, length control) adds to a trial.
5. ``lora_vs_full``: runtime and peak memory of SimPO and DPO trials, full fine-tuning vs LoRA.
6. ``worker_drift``: whether identical trials' costs move with their place in a reused worker.
7. ``provenance_overhead``: what recording a trial's provenance adds to its wall time.
8. ``generation``: batched generation (the on-policy build's and evaluation's) vs one prompt at a time.
"""

from __future__ import annotations

import argparse
import time

from bench import (
    generation,
    judging_overhead,
    lora_vs_full,
    provenance_overhead,
    simpo_vs_dpo,
    sweep_overhead,
    trainer_vs_trl,
    worker_drift,
)

BENCHMARKS = {
    "trainer_vs_trl": lambda quick: trainer_vs_trl.run(quick),
    "simpo_vs_dpo": lambda quick: simpo_vs_dpo.run(quick),
    "sweep_overhead": lambda quick: sweep_overhead.run(quick),
    "judging_overhead": lambda quick: judging_overhead.run(quick, 1 if quick else 3),
    "lora_vs_full": lambda quick: lora_vs_full.run(quick),
    "worker_drift": lambda quick: worker_drift.run(quick),
    "provenance_overhead": lambda quick: provenance_overhead.run(quick),
    "generation": lambda quick: generation.run(quick),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, one repetition: a smoke run")
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these benchmarks")
    args = p.parse_args(argv)
    for name in args.only or BENCHMARKS:
        t0 = time.perf_counter()
        BENCHMARKS[name](args.quick)
        print(f"  ({name}: {time.perf_counter() - t0:.0f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
