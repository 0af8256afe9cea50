"""Benchmark 4: does a trial's cost depend on its place in the sweep? Identical trials on reused workers.

12 identical trials (SimPO at one setting with the main sweep's settings, ``sweeps/gamma.yaml``;
seeds 0-11: the same work each) run on a fresh local Ray with 2 slots of 1 CPU and
``reuse_workers: true``, so each worker process runs ~6 trials one after the other. Twice, side by
side in one run: with glibc's default malloc arenas in the workers (8 per core: what they had before
ablate set ``MALLOC_ARENA_MAX``) and with ablate's worker environment (``ablate.trial.memory_probe.WORKER_ENV``).

Per cost (wall-clock runtime, CPU time of the same span, the process's peak memory, the trial's own
peak growth): Spearman's rho between the trials' start order and the cost, and the slope per trial
within a worker (least squares on the trial's number in its worker, workers' means removed), in
percent of the mean, with a 95 % interval. Target: no trend, |rho| < 0.3 or a slope under 1 % per
trial. Wall-clock time also follows the machine's other load, which CPU time does not.

    python -m bench.worker_drift [--quick] [--trials N] [--table] [--wide]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import tempfile
from pathlib import Path

import numpy as np
from scipy import stats as st

REPO = Path(__file__).resolve().parents[1]
SLOTS = 2
COSTS = ("runtime_s", "runtime_cpu_s", "peak_memory_mb", "peak_memory_growth_mb")
NAMES = {"runtime_s": "runtime (wall)", "runtime_cpu_s": "runtime (CPU)", "peak_memory_mb": "peak memory",
         "peak_memory_growth_mb": "peak growth"}  # fmt: skip
CONFIGS = {"glibc default": "default", "ablate (MALLOC_ARENA_MAX=2)": "ablate"}


def run_sweep(spec, start: dict, arenas: str) -> list[dict]:
    """The sweep's final records, on a fresh local Ray whose workers have ``arenas``: ``default`` sets
    glibc's own limit in the driver's environment (Ray's processes inherit it, and ablate then leaves
    it alone), ``ablate`` leaves the variable unset so that ``ablate.sweep.tune.connect`` sets its own."""
    import ray

    from ablate.sweep import plan as plan_mod
    from ablate.sweep import tune

    before = os.environ.pop("MALLOC_ARENA_MAX", None)
    if arenas == "default":
        os.environ["MALLOC_ARENA_MAX"] = str(8 * (os.cpu_count() or 1))
    plan = plan_mod.build(spec.model_copy(update={"name": f"{spec.name}-{arenas}"})).with_start(lambda _d: start)
    try:
        tune.connect(None)
        with contextlib.redirect_stdout(io.StringIO()):  # Ray Tune's own banners
            outcome = tune.run(plan, log=lambda *_: None)
    finally:
        ray.shutdown()
        os.environ.pop("MALLOC_ARENA_MAX", None)
        if before is not None:
            os.environ["MALLOC_ARENA_MAX"] = before
    if outcome.errored:
        raise RuntimeError(f"{outcome.errored} trial(s) failed: {[r['error'] for r in outcome.results if r['error']]}")
    return [r["metrics"] for r in outcome.results]


def started(m: dict) -> float:
    """When the trial started (records from before ``started_at``: first step end minus the time to it)."""
    return m["started_at"] if "started_at" in m else m["first_step_at"] - m["first_step_s"]


def trend(metrics: list[dict], cost: str) -> dict:
    """rho(start order, cost) and the slope per trial within a worker (percent of the mean, 95 % interval)."""
    rows = [m for m in sorted(metrics, key=started) if isinstance(m.get(cost), int | float)]
    values = np.array([m[cost] for m in rows], dtype=float)
    if len(rows) < 3 or not np.isfinite(values).all():
        return {"n": len(rows), "mean": math.nan, "rho": math.nan, "p": math.nan, "slope": math.nan, "half": math.nan}
    rho, p = st.spearmanr(np.arange(len(rows)), values)
    x, y = [], []  # the trial's number in its worker and the cost, each minus its worker's mean
    workers: dict[tuple, list[float]] = {}
    for m, v in zip(rows, values, strict=True):
        workers.setdefault((m["process_id"], m["process_started_at"]), []).append(v)
    for vs in workers.values():
        k = np.arange(len(vs), dtype=float)
        x += list(k - k.mean())
        y += list(np.asarray(vs) - np.mean(vs))
    x, y = np.asarray(x), np.asarray(y)
    slope = float((x * y).sum() / (x * x).sum()) if (x * x).sum() > 0 else math.nan
    dof = len(x) - len(workers) - 1
    resid = y - slope * x
    se = math.sqrt((resid**2).sum() / max(dof, 1) / (x * x).sum()) if (x * x).sum() > 0 else math.nan
    half = float(st.t.ppf(0.975, max(dof, 1)) * se)
    mean = float(values.mean())
    return {"n": len(rows), "mean": mean, "rho": float(rho), "p": float(p), "slope": 100 * slope / mean,
            "half": 100 * half / mean, "workers": len(workers)}  # fmt: skip


def run(quick: bool = False, trials: int = 12, log=print, table: bool = False, wide: bool = False) -> dict:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    from ablate.trial import startpoint
    from bench.sweep_overhead import sweep_spec

    cache_dir = str(REPO / ".cache" / "bench")
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as storage:
        spec = sweep_spec(quick, cache_dir, storage)
        spec = spec.model_copy(update={"name": "bench-drift", "seeds": list(range(trials)), "max_concurrent": SLOTS})
        if wide:  # benchmark 2's wider model, one epoch: the trial's own memory ~10x the tiny model's
            from bench.simpo_vs_dpo import MODEL

            model = spec.model.model_copy(update={"tiny": spec.model.tiny.model_copy(update=MODEL)})
            spec = spec.model_copy(update={"model": model, "training": spec.training.model_copy(update={"epochs": 1})})
        start = startpoint.prepare_sweep(spec, log=lambda *_: None)
        for name, arenas in CONFIGS.items():
            metrics = run_sweep(spec, start, arenas)
            out[name] = {cost: trend(metrics, cost) for cost in COSTS}
            if table:
                log(f"{name}: start order, worker, trial in worker, " + ", ".join(COSTS))
                seen: dict[tuple, int] = {}
                for i, m in enumerate(sorted(metrics, key=started)):
                    w = (m["process_id"], m["process_started_at"])
                    seen[w] = seen.get(w, -1) + 1
                    values = " ".join(f"{m.get(c, math.nan):8.2f}" for c in COSTS)
                    log(f"  {i:3d} {list(dict.fromkeys(seen)).index(w):3d} {seen[w]:3d}  {values}")
    model = "benchmark 2's 4 x 256 model, one epoch" if wide else "settings of sweeps/gamma.yaml"
    log(
        f"Benchmark 4: {trials} identical trials (SimPO, {model}, seeds 0-{trials - 1}) on "
        f"{SLOTS} reused workers of local Ray; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    log(f"  {'worker malloc arenas':<28}{'cost':<16}{'mean':>13}{'ρ(order)':>8}{'p':>8}   slope per trial in a worker")
    for name, costs in out.items():
        for cost, t in costs.items():
            if not math.isfinite(t["mean"]):
                log(f"  {name:<28}{NAMES[cost]:<16}{'not reported':>12}")
                continue
            unit = "s" if "runtime" in cost else "MB"
            verdict = "meets the target" if abs(t["rho"]) < 0.3 or abs(t["slope"]) < 1.0 else "misses the target"
            log(
                f"  {name:<28}{NAMES[cost]:<16}{t['mean']:>9.2f} {unit:<3}{t['rho']:>+8.2f}{t['p']:>8.3f}   "
                f"{t['slope']:+6.2f} % ± {t['half']:.2f}   {verdict}"
            )
    log("  target: |ρ| < 0.3 or |slope| < 1 % per trial; ± is the slope's 95 % interval")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.worker_drift", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller trials (a smoke run)")
    p.add_argument("--trials", type=int, default=12, help="identical trials per run (default 12)")
    p.add_argument("--table", action="store_true", help="also print every trial's costs in start order")
    p.add_argument("--wide", action="store_true", help="benchmark 2's wider model (4 x 256), one epoch")
    args = p.parse_args(argv)
    run(args.quick, args.trials, table=args.table, wide=args.wide)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
