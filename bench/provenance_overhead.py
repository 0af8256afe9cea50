"""Benchmark 7: what recording provenance adds to a trial of the built-in task (the goal: under 1 %).

Provenance costs a sweep two things (``ablate.provenance``): the driver's fingerprints of the inputs,
once per sweep (the rows of each data section, the model's files, the tokenizer and each judge), and in
each trial its ``provenance.json`` (the environment: package versions, ablate's git commit, CUDA and
GPUs, CPU; once per worker process). Measured here on the main sweep (``sweeps/gamma.yaml``):

* the driver's ``attach`` over the whole plan, divided by its trials;
* the trial's record, cold: in a fresh Python process that has imported what a trial imports
  (torch, transformers), the first ``provenance.write`` (the one a fresh worker pays; a reused
  worker's later trials pay only the JSON write), median of 3 processes;
* a trial's wall time (``run_trial`` of the sweep's first trial, in this process, after a warm-up).

Ratio = (driver share + cold record) / trial wall time.

    python -m bench.provenance_overhead [--quick]
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

import yaml

REPO = Path(__file__).resolve().parents[1]
COLD = """
import json, sys, time, torch, transformers  # what a trial process has imported before it records
from ablate import provenance
from ablate.trial import config as trial_config
cfg = trial_config.parse(json.load(open(sys.argv[1])))
t = time.perf_counter()
provenance.write(cfg, 1, lambda name, data: open(sys.argv[2], "wb").write(data))
print(time.perf_counter() - t)
"""


def sweep_spec(quick: bool):
    from ablate import spec as spec_mod

    sweep = yaml.safe_load((REPO / "sweeps" / "gamma.yaml").read_text())
    sweep["cache_dir"] = str(REPO / ".cache" / "ablate")  # the demo's start point, as `make demo` leaves it
    if quick:
        sweep["data"] = {"task": {**sweep["data"]["task"], "n_train": 256, "n_eval": 64, "n_sft": 1000}}
        sweep["sft"] = {"epochs": 2}
    return spec_mod.SweepSpec.model_validate(sweep)


def cold_record_s(cfg: dict, reps: int = 3) -> float:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cfg.json"
        path.write_text(json.dumps(cfg))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        times = [float(subprocess.run([sys.executable, "-c", COLD, str(path), str(Path(d) / "p.json")], env=env,
                                      capture_output=True, text=True, check=True).stdout.split()[-1])
                 for _ in range(reps)]  # fmt: skip
    return statistics.median(times)


def run(quick: bool = False) -> dict:
    from ablate import provenance
    from ablate.sweep import launch
    from ablate.sweep import plan as plan_mod
    from ablate.trial.runner import run_trial

    print("Benchmark 7: provenance's share of a built-in trial (sweeps/gamma.yaml)", flush=True)
    spec = sweep_spec(quick)
    plan = plan_mod.build(spec).with_start(launch.start_points(spec))
    t0 = time.perf_counter()
    plan = provenance.attach(plan, provenance.pin(spec), log=lambda *_: None)
    driver_s = time.perf_counter() - t0
    cfg = plan.trials[0]
    cold_s = cold_record_s(cfg)
    with tempfile.TemporaryDirectory() as d:
        def save(name: str, data: bytes) -> None:
            (Path(d) / name).write_bytes(data)

        run_trial(cfg, lambda _: None, save)  # warm-up: tokenized data, baseline generations
        t0 = time.perf_counter()
        run_trial(cfg, lambda _: None, save)
        trial_s = time.perf_counter() - t0
    per_trial = driver_s / plan.total + cold_s
    out = {"driver_s": driver_s, "trials": plan.total, "cold_record_s": cold_s, "trial_s": trial_s,
           "ratio": per_trial / trial_s}  # fmt: skip
    print(f"  driver fingerprints: {driver_s:.3f} s for {plan.total} trials ({driver_s / plan.total * 1e3:.1f} ms per trial)")
    print(f"  trial record, cold (fresh process): {cold_s * 1e3:.1f} ms")
    print(f"  trial wall time: {trial_s:.2f} s")
    print(f"  provenance / trial wall time: {out['ratio']:.2%} (goal < 1 %)")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.provenance_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smaller task: a smoke run")
    run(p.parse_args(argv).quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
