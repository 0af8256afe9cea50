"""Benchmark 4: what judging adds to a built-in trial's wall time (the goal: at most 25 %).

The SimPO trial of ``sweeps/judges.yaml`` (built-in task, 2,000 pairs, 128 generated answers) runs
with ``evaluation.judges: []`` (generation, no judge) and with its two judges (``builtin:oracle`` and
``builtin:reward-model``: scores of the answers, win rates, AlpacaEval's length-controlled GLM, scores
stored for re-judging), side by side in one process, repetitions interleaved, after one warm-up trial
of each (which fills the sweep-wide caches: start point, tokenized data, baseline generations, the
reward model, the baseline's scores and the judges' held-out accuracy — costs a sweep pays once,
reported apart). Figures are the trials' own ``trial_s`` (wall-clock) and the process's CPU time.

    python -m bench.judging_overhead [--quick] [--reps N]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import yaml

from bench.timing import now, since

REPO = Path(__file__).resolve().parents[1]
JUDGES = ["builtin:oracle", "builtin:reward-model"]


def trial_configs(quick: bool) -> dict[str, dict]:
    from ablate import spec as spec_mod
    from ablate.trial import startpoint

    sweep = yaml.safe_load((REPO / "sweeps" / "judges.yaml").read_text())
    sweep["methods"] = sweep["methods"][:1]  # SimPO
    sweep["seeds"] = [0]
    if quick:
        sweep["data"] = {"task": {**sweep["data"]["task"], "n_train": 256, "n_eval": 64, "n_sft": 1000}}
        sweep["sft"] = {"epochs": 2}
        sweep["evaluation"] = {**sweep["evaluation"], "num_prompts": 32}
    configs = {}
    for name, judges in (("no judge", []), ("two judges", JUDGES)):
        spec = spec_mod.SweepSpec.model_validate({**sweep, "evaluation": {**sweep["evaluation"], "judges": judges}})
        start = startpoint.prepare_sweep(spec, log=lambda *_: None)  # the reward model too, once
        configs[name] = {**spec_mod.expand(spec)[0], "start": start}
    return configs


def run(quick: bool = False, reps: int = 3) -> dict:
    from ablate.trial.runner import run_trial

    print("Benchmark 4: judging's share of a built-in trial (sweeps/judges.yaml, SimPO)", flush=True)
    t0 = now()
    configs = trial_configs(quick)
    print(f"  set-up (start point, reward model; cached across sweeps): {since(t0)[0]:.1f} s wall", flush=True)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
    first: dict[str, float] = {}
    for rep in range(reps + 1):
        for name, cfg in configs.items():
            t = now()
            final = run_trial(cfg, report=lambda _: None)
            wall, cpu = since(t)
            assert final["status"] == "finished", final["status"]
            if rep == 0:
                first[name] = final["trial_s"]  # warm-up: fills the sweep-wide caches
            else:
                times[name].append((final["trial_s"], cpu))
    med = {name: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for name, v in times.items()}
    base, judged = med["no judge"], med["two judges"]
    print(f"  {'trial':<12} {'wall s (median)':>16} {'CPU s (median)':>15}   first trial wall s")
    for name, (w, c) in med.items():
        print(f"  {name:<12} {w:>16.2f} {c:>15.2f}   {first[name]:.2f}")
    wall_ratio, cpu_ratio = judged[0] / base[0], judged[1] / base[1]
    print(f"  judging adds {100 * (wall_ratio - 1):+.1f} % wall time ({100 * (cpu_ratio - 1):+.1f} % CPU time) "
          f"to a trial; goal: at most +25 %. First judged trial (caches cold): {first['two judges']:.2f} s "
          f"vs {first['no judge']:.2f} s.", flush=True)  # fmt: skip
    return {"wall_ratio": wall_ratio, "cpu_ratio": cpu_ratio, "median": med, "first": first}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.judging_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small task, one repetition")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    run(args.quick, 1 if args.quick else args.reps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
