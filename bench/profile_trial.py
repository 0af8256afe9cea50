"""Profile one trial of benchmark 2 with torch.profiler: where its time goes, by operator.

Prints the trial's wall time, the GPU's busy time (sum of kernel times) where there is a GPU, and
the top operators by self device time and by self CPU time.

    python -m bench.profile_trial [--scale tiny|gpu] [--method simpo|dpo] [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from bench import simpo_vs_dpo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_trial", description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=["tiny", "gpu"], default="tiny")
    p.add_argument("--method", choices=list(simpo_vs_dpo.METHODS), default="SimPO")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rows", type=int, default=15)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from torch.profiler import ProfilerActivity, profile

    from ablate.trial.runner import run_trial

    cfg = simpo_vs_dpo.trial_configs(args.quick, str(simpo_vs_dpo.REPO / ".cache" / "bench"), args.scale)[
        args.method
    ]
    gpu = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as cache:
        cfg["cache_dir"] = cache
        t0 = time.perf_counter()
        with profile(activities=activities) as prof:
            metrics = run_trial(cfg, lambda _: None)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    print(
        f"{args.method}, {args.scale} scale: trial {wall:.1f} s under the profiler, training "
        f"{metrics['runtime_s']:.1f} s, {metrics['steps']} steps, {metrics['tokens_per_s']:,.0f} tokens/s"
    )
    if gpu:
        # kernels are the events on the device; the operators that launch them repeat their time
        on_gpu = torch.autograd.DeviceType.CUDA
        busy = sum(e.self_device_time_total for e in events if e.device_type == on_gpu) / 1e6
        print(f"GPU busy (sum of kernel times): {busy:.1f} s of the trial's {wall:.1f} s")
        print(events.table(sort_by="self_device_time_total", row_limit=args.rows))
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
