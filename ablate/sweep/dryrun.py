"""What ``--dry-run`` prints of one sweep plan: a grid sweep's trials one per line, or a search's
entries, with their resources (a staged or adaptive sweep prints each stage's or round's plan so)."""

from __future__ import annotations

from ablate import spec as spec_mod
from ablate.sweep import order as order_mod
from ablate.sweep.plan import SweepPlan


def _resources(res: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in res.items())


def _scheduler_line(plan: SweepPlan) -> str:
    s = plan.scheduler
    if s is None:
        return "scheduler: none (every trial runs to the end)"
    return (
        f"scheduler: asha on {s.metric} ({s.mode}), grace period {s.grace_period} steps, "
        f"reduction factor {s.reduction_factor:g}"
    )


def print_trials(plan: SweepPlan, memory: list[str] = (), total_line: bool = True) -> None:
    """The plan: a grid sweep's trials one per line, or a search's entries, then ``memory`` (the memory
    plan); last line ``N trials`` (a staged sweep prints its stages' plans without it, then the total)."""
    if plan.search:
        print_search_dry_run(plan)
    else:
        print(order_mod.describe(plan.spec.order, plan.spec.order_seed))
        print(f"{'run':>3} {'#':>3}  {'method':<14} {'label':<16} {'setting':<44} {'seed':>4}  resources")
        for position, t in enumerate(plan.trials):
            print(
                f"{position:>3} {t['index']:>3}  {t['method']:<14} {t['label']:<16} {t['setting']:<44} "
                f"{t['seed']:>4}  {describe_resources(t)}"
            )
    for line in memory:
        print(line)
    if total_line:
        print(f"{plan.total} trials")


def _space_text(space) -> str:
    if space.kind == "choice":
        return f"choice {list(space.values)}"
    return f"{space.kind}({space.values[0]:g}, {space.values[1]:g})"


def print_search_dry_run(plan: SweepPlan) -> None:
    """A random / optuna sweep's trials are drawn while it runs: show per method entry what is fixed,
    what is searched and how many trials it gets, and the seeds the draws cycle through."""
    spec = plan.spec
    sampler = {"random": "Optuna RandomSampler", "optuna": "Optuna TPESampler"}[spec.search]
    print(
        f"search: {spec.search} ({sampler}, seed {spec.search_seed}) on {spec.metric} ({spec.mode}), "
        f"num_samples {spec.num_samples} per method entry with a search space"
    )
    print(_scheduler_line(plan))
    print(f"{'#':>3}  {'method':<8} {'label':<16} {'trials':>6}  {'seeds':<28} resources")
    for e in plan.search:
        fixed = spec_mod.setting_key(
            {k: v for k, v in e.entry.hparams.items() if f"hparams.{k}" not in e.spaces},
            {k: v for k, v in e.entry.training.items() if f"training.{k}" not in e.spaces},
            None if e.lora is None else {k: v for k, v in e.lora.items() if f"lora.{k}" not in e.spaces},
        )
        seeds = ",".join(str(spec_mod.sampled_seed(spec, k)) for k in range(min(e.trials, len(spec.seeds))))
        if e.spaces and len(spec.seeds) > 1:
            seeds += f" (draw k: seeds[k % {len(spec.seeds)}])"
        res = _resources(plan.resources)
        print(f"{e.position:>3}  {e.entry.method:<8} {e.label:<16} {e.trials:>6}  {seeds:<28} {res}")
        for path, space in e.spaces.items():
            print(f"{'':>5}searched  {path.split('.', 1)[1]} ~ {_space_text(space)}")
        print(f"{'':>5}fixed     {fixed}")


def describe_resources(trial: dict) -> str:
    res = trial["resources"]
    if trial.get("deepspeed") is None:
        return f"cpu={res['cpus']} gpu={res['gpus']}"
    ds = trial["deepspeed"]
    zero = "own DeepSpeed config" if ds.get("user_config") else f"ZeRO-{ds['stage']}"
    return f"{res['workers']} workers x (cpu={res['cpus_per_worker']} gpu={res['gpus_per_worker']}), {zero}"
