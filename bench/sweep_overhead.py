"""Benchmark 3: how close a sweep on local Ray comes to its ideal wall time, and each trial's start-up.

A sweep of 8 equal trials (SimPO with the main sweep's settings, seeds 0-7: the same work each)
runs on a local Ray with 2 slots (1 CPU per trial, 2 trials at a time). Figures:

* wall / ideal, where wall is ``ablate.sweep.tune.run`` from call to return (Ray already started; its
  start is shown apart) and ideal = sum of the trials' own run times (``trial_s``, trial function
  entry to exit) / 2 slots: what is left is Ray's scheduling, worker start and imports;
* start-up per trial: from the moment a worker was free for it (its process's start for a fresh
  worker, the end of the previous trial for a reused one) to the end of the trial's first training
  step (``first_step_at``), and the part of it inside the trial function (``first_step_s``: model,
  data, reference).

Run with ``reuse_actors`` on (ablate's setting) and off (the previous one), in that order, each on
its own fresh local Ray.

    python -m bench.sweep_overhead [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SLOTS = 2


def sweep_spec(quick: bool, cache_dir: str, storage: str):
    """8 trials of the project's main sweep (``sweeps/gamma.yaml``: its task, training and evaluation),
    SimPO at one setting, seeds 0-7. The start point is a smaller SFT than the demo's (it only has to
    exist; its quality does not change the cost of a trial)."""
    import yaml

    from ablate import spec as spec_mod

    main = yaml.safe_load((REPO / "sweeps" / "gamma.yaml").read_text())
    data = main.get("data", {})
    training = main.get("training", {})
    evaluation = main.get("evaluation", {})
    if quick:  # a smoke run: 4 short trials
        data = {**data, "task": {**data.get("task", {}), "n_train": 256, "n_eval": 64}}
        training, evaluation = {**training, "epochs": 1}, {**evaluation, "num_prompts": 32}
    data = {**data, "task": {**data.get("task", {}), "n_sft": 1000}}
    return spec_mod.SweepSpec.model_validate(
        {
            "name": "bench-sweep",
            "storage": storage,
            "cache_dir": cache_dir,
            "methods": [{"method": "simpo", "hparams": {"beta": 2.0, "gamma": 1.0}}],
            "seeds": list(range(4 if quick else 8)),
            "model": main.get("model", {}),
            "data": data,
            "sft": {"epochs": 2},
            "training": training,
            "evaluation": evaluation,
            "resources": {"cpus": 1},
            "max_concurrent": SLOTS,
        }
    )


def run_sweep(spec, start: dict, reuse_actors: bool) -> dict:
    import ray

    from ablate.sweep import plan as plan_mod
    from ablate.sweep import tune

    name = f"{spec.name}-{'reuse' if reuse_actors else 'fresh'}"
    plan = plan_mod.build(spec.model_copy(update={"name": name, "reuse_workers": reuse_actors}))
    plan = plan.with_start(lambda _data: start)
    t0 = time.perf_counter()
    tune.connect(None)
    t_init = time.perf_counter() - t0
    try:
        t0, t_run = time.perf_counter(), time.time()
        with contextlib.redirect_stdout(io.StringIO()):  # Ray Tune's own banners
            outcome = tune.run(plan, log=lambda *_: None)
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    if outcome.errored:
        raise RuntimeError(
            f"{outcome.errored} trial(s) failed: {[r['error'] for r in outcome.results if r['error']]}"
        )
    metrics = [r["metrics"] for r in outcome.results]
    startup = startups(metrics)
    ideal = sum(m["trial_s"] for m in metrics) / SLOTS
    rows = timeline(metrics, t_run)
    firsts, gaps, births, boots = {}, [], [], []
    for pid, born, entered, _step, ended in rows:  # rows are in order of entry
        if pid in firsts:
            gaps.append(entered - firsts[pid][1])
        else:
            firsts[pid] = (entered, None)
            births.append(born)  # when Ray started the worker process, from tune.run's call
            boots.append(entered - born)  # the process's start, imports and Tune's actor set-up
        firsts[pid] = (firsts[pid][0], ended)
    return {
        "reuse_actors": reuse_actors,
        "total_s": t_init + wall,
        "trials": len(metrics),
        "ray_init_s": t_init,
        "wall_s": wall,
        "ideal_s": ideal,
        "efficiency": wall / ideal,
        "trial_s": statistics.median(m["trial_s"] for m in metrics),
        "startup_median_s": statistics.median(startup),
        "startup_max_s": max(startup),
        "in_trial_startup_s": statistics.median(m["first_step_s"] for m in metrics),
        "processes": len({(m["process_id"], m["process_started_at"]) for m in metrics}),
        "timeline": rows,
        "first_entry_s": statistics.median(f[0] for f in firsts.values()),
        "gap_s": statistics.median(gaps) if gaps else float("nan"),
        "worker_born_s": statistics.median(births),
        "worker_boot_s": statistics.median(boots),
    }


def timeline(metrics: list[dict], t_run: float) -> list[tuple]:
    """(pid, process start, trial entry, first step end, trial end) in seconds from ``tune.run``'s call."""
    rows = []
    for m in metrics:
        entered = m["first_step_at"] - m["first_step_s"]
        rows.append(
            (
                m["process_id"],
                *(
                    round(t - t_run, 2)
                    for t in (m["process_started_at"], entered, m["first_step_at"], entered + m["trial_s"])
                ),
            )
        )
    return sorted(rows, key=lambda r: r[2])


def startups(metrics: list[dict]) -> list[float]:
    """Each trial's start-up: from the moment its worker was free for it (the worker process's start
    for its first trial, the end of the previous trial in that process otherwise) to the end of its
    first step. So a fresh worker's process start and imports count, and so does Ray's gap between
    two trials of a reused one."""
    out = []
    by_process: dict[float, list[dict]] = {}
    for m in metrics:
        by_process.setdefault((m["process_id"], m["process_started_at"]), []).append(m)
    for (_pid, born), ms in by_process.items():
        free = born
        for m in sorted(ms, key=lambda m: m["first_step_at"]):
            entered = m["first_step_at"] - m["first_step_s"]
            out.append(m["first_step_at"] - free)
            free = entered + m["trial_s"]
    return out


def run(quick: bool = False, log=print) -> dict:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Ray workers must import this checkout's ``ablate``.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    from ablate.trial import startpoint

    cache_dir = str(REPO / ".cache" / "bench")
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as storage:
        spec = sweep_spec(quick, cache_dir, storage)
        start = startpoint.prepare_sweep(spec, log=lambda *_: None)
        results = [run_sweep(spec, start, reuse) for reuse in (True, False)]

    log(
        f"Benchmark 3: a sweep of {results[0]['trials']} equal trials (SimPO, settings of sweeps/gamma.yaml, one seed each) "
        f"on local Ray, {SLOTS} slots of 1 CPU; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    log(
        f"  {'reuse_actors':<14}{'ray.init':>9}{'wall':>8}{'ideal':>8}{'wall/ideal':>11}{'trial':>8}"
        f"{'start-up median':>17}{'max':>7}{'in trial':>10}{'workers':>9}"
    )
    for r in results:
        log(
            f"  {str(r['reuse_actors']):<14}{r['ray_init_s']:>8.1f}s{r['wall_s']:>7.1f}s{r['ideal_s']:>7.1f}s"
            f"{r['efficiency']:>10.2f}x{r['trial_s']:>7.1f}s{r['startup_median_s']:>16.1f}s"
            f"{r['startup_max_s']:>6.1f}s{r['in_trial_startup_s']:>9.2f}s{r['processes']:>9}"
        )
    log(
        "  ideal = sum of trial times / slots; start-up = worker free for the trial (process start, or end of "
        "its previous trial) -> first step ends; in trial = trial function entry -> first step ends"
    )
    r = results[0]
    per_slot = r["trials"] / SLOTS
    overhead = r["wall_s"] - r["ideal_s"]
    log(
        f"  with reuse_actors: the first trials enter {r['first_entry_s']:.1f} s after tune.run starts; their "
        f"worker processes started at {r['worker_born_s']:+.1f} s and took {r['worker_boot_s']:.1f} s from process "
        f"start to trial entry (Python, Tune's actor set-up, importing ray.tune, torch and transformers); later "
        f"trials follow the previous trial of their worker by {r['gap_s']:.2f} s. "
        f"{overhead:.1f} s over the ideal in all, so wall/ideal <= 1.15 for trials of >= "
        f"{overhead / (0.15 * per_slot):.0f} s ({per_slot:.0f} per slot)"
    )
    return {"results": results}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sweep_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="4 smaller trials (a smoke run)")
    p.add_argument("--timeline", action="store_true", help="print when each trial entered, stepped and ended")
    args = p.parse_args(argv)
    out = run(args.quick)
    if args.timeline:
        for r in out["results"]:
            print(f"reuse_actors={r['reuse_actors']}: pid, process start, trial entry, first step, end (s)")
            print(*r["timeline"], sep="\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
