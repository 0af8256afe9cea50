"""The CLI: ``python -m ablate.run SWEEP.yaml [--address ADDR] [--dry-run] [--resume | --overwrite]``.

Validates the sweep file (exit 2 with a one-paragraph message on bad input, nothing launched),
prepares the SFT start point, runs the trials on Ray Tune and prints a summary."""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
import time

from ablate import provenance, tracking
from ablate import spec as spec_mod
from ablate.cache import cache_key
from ablate.onpolicy import build as onpolicy_plan
from ablate.onpolicy import ray_tasks
from ablate.spec import SpecError, SweepSpec
from ablate.spec import stages as stage_spec
from ablate.sweep import memory_plan, sweepdir
from ablate.sweep import plan as plan_mod
from ablate.sweep.dryrun import print_trials
from ablate.sweep.launch import EXIT_BAD_INPUT, connect, start_points, storage_problem, with_lease
from ablate.sweep.plan import SweepPlan
from ablate.tracking import preflight as tracking_preflight


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ablate.run", description=__doc__)
    p.add_argument("sweep", nargs="?", help="sweep file (YAML)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--storage", help="override the sweep file's storage (path or URI)")
    p.add_argument("--dry-run", action="store_true", help="print the expanded trials and exit")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep from its storage")
    p.add_argument(
        "--overwrite", action="store_true", help="delete an existing sweep's results and start again"
    )
    p.add_argument("--schema", action="store_true", help="print the sweep file's JSON Schema and exit")
    p.add_argument("--gpu-memory", metavar="SIZE", help="memory of one GPU, e.g. 80GB, for the memory plan")
    p.add_argument("--cluster", metavar="FILE", help="take the GPU memory from a Ray cluster file's GPU node type")
    p.add_argument("--trial-hours", type=float, metavar="H", help="a trial's time, for the sweep's GPU-hours")
    p.add_argument("--force", action="store_true", help="launch even if a trial's estimated memory does not fit")
    return p.parse_args(argv)


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + SETTINGS


def check_address(address: str | None) -> str | None:
    """Why ``--address`` is not a reachable Ray cluster, or None; checked before anything starts (3 s at
    most), so a typo costs no SFT run and no Ray start-up. A Ray head (GCS or Ray Client) is a gRPC server:
    it answers the HTTP/2 preface with a SETTINGS frame, where ``ray.init`` on some other service that
    accepts the connection but stays silent would wait forever."""
    if not address or address in ("auto", "local"):
        return None
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return "it is not host:port"
    try:
        with socket.create_connection((host, int(port)), timeout=3) as sock:
            if os.environ.get("RAY_USE_TLS", "0") not in ("0", ""):
                return None  # a TLS head answers only after a handshake; leave it to ray.init
            sock.settimeout(3)
            sock.sendall(HTTP2_PREFACE)
            head = sock.recv(9)
    except TimeoutError:
        return f"{host}:{port} accepts connections but does not answer like a Ray head (no gRPC)"
    except OSError as e:
        return f"nothing answers at {host}:{port} ({e.strerror or e})"
    if len(head) < 9 or head[3] != 0x04:
        return f"{host}:{port} does not answer like a Ray head (no gRPC)"
    return None


def summarize(outcome, metric: str, mode: str) -> None:
    best: dict[str, dict] = {}
    for r in outcome.results:
        m = r["metrics"]
        if r["error"] or metric not in m or "status" not in m:  # errored, or stopped early
            continue
        label = r["config"]["label"]
        better = best.get(label) is None or (m[metric] > best[label]["metrics"][metric]) == (mode == "max")
        if better:
            best[label] = r
    stopped = f", {outcome.stopped} stopped early by the scheduler" if outcome.stopped else ""
    print(
        f"\n{outcome.finished} trials finished, {outcome.errored} errored{stopped}. "
        f"Best trial per method by {metric} ({mode}):"
    )
    for label, r in best.items():
        print(
            f"  {label:<16} {r['config']['setting']:<40} seed={r['config']['seed']}  {metric}={r['metrics'][metric]:.4f}"
        )
    print(f"Results: {outcome.path}\nReport:  python -m analysis.report {outcome.path}")


def gpu_memory_of(args: argparse.Namespace, spec: SweepSpec) -> tuple[float | None, str]:
    """One GPU's memory for the memory plan: ``--gpu-memory``, the GPU node type of ``--cluster``, or
    this machine's first GPU when trials ask for GPUs and run here; else unknown (None)."""
    if args.gpu_memory:
        return memory_plan.parse_size(args.gpu_memory), "--gpu-memory"
    if args.cluster:
        return memory_plan.cluster_gpu_memory(args.cluster)
    res = spec.resources
    wants_gpu = (res.gpus_per_worker if spec.uses_deepspeed else res.gpus) > 0
    if wants_gpu and not args.address:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return float(props.total_memory), f"this machine's {props.name}"
    return None, ""


def check_data(sweep: str, plan: SweepPlan) -> SweepPlan | None:
    """Read local data before anything launches (a bad file is an error here, not in every trial), print
    which pairs are trained on and which held out, and record that in every trial's config
    (``data_split``). None (after the error) on bad data."""
    from ablate.data import sources as datasource
    from ablate.data.sources import DataError, validate_local

    splits: dict[str, dict] = {}
    printed: list[str] = []
    for data in plan.data_sections():
        try:
            counts = validate_local(data)
        except DataError as e:
            eval_source = data.get("eval_source")
            field = "data.eval_source" if eval_source and str(eval_source) in str(e) else "data.source"
            print(f"error: {sweep}: {field}: {e}", file=sys.stderr)
            return None
        split = splits[cache_key(data)] = datasource.record(data, counts)
        if counts:
            skipped = ", ".join(
                f"{v} {k.removeprefix('skipped_pairs_')}" for k, v in counts.items() if "skip" in k and v
            )
            print(
                f"Data {data['source']}: {counts['train_pairs']} training and {counts['held_out_pairs']} held-out pairs"
                + (f"; skipped pairs: {skipped}" if skipped else "")
            )
        line = f"Data split: {datasource.describe(split)}"
        if line not in printed:
            printed.append(line)
            print(line)
    return plan.with_data_split(lambda data: splits[cache_key(data)])


def load(args: argparse.Namespace) -> SweepSpec:
    """The validated sweep file, with ``--storage`` applied; ``SpecError`` on bad input."""
    spec = spec_mod.load_sweep(args.sweep)
    if args.storage:
        spec = spec.model_copy(update={"storage": args.storage})
    if spec.model.trust_remote_code:
        print(
            f"warning: {args.sweep}: model.trust_remote_code is true: Python code shipped with "
            f"{spec.model.name_or_path!r} will be imported and run by every trial that loads it. "
            "Set it only for a model whose code you have read; the default is false.",
            file=sys.stderr,
        )
    on_policy = [("data.on_policy.judge", spec.data.on_policy.judge)] if spec.data.on_policy else []
    for where, judge in [*(("evaluation.judges", j) for j in spec.evaluation.judges or []), *on_policy]:
        if judge.trust_remote_code:
            print(
                f"warning: {args.sweep}: {where}: {judge.name!r} has trust_remote_code: true: its Python "
                "code will be imported and run by every trial that judges. Set it only for code you have read.",
                file=sys.stderr,
            )
    return spec


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.schema:
        print(spec_mod.json_schema())
        return 0
    if not args.sweep:
        print("usage: python -m ablate.run SWEEP.yaml [options]; see --help", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        spec = load(args)
        # A staged sweep plans stage by stage (ablate.sweep.staged); its first stage stands for its data here.
        plan = plan_mod.build(stage_spec.stage_spec(spec, 0, None) if spec.stages else spec)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    plan = check_data(args.sweep, plan)
    if plan is None:
        return EXIT_BAD_INPUT
    try:
        gpu_memory, source = gpu_memory_of(args, spec)
    except (OSError, ValueError) as e:
        print(f"error: {args.sweep}: {'--cluster' if args.cluster else '--gpu-memory'}: {e}.", file=sys.stderr)
        return EXIT_BAD_INPUT
    misfits = [m for e in plan.memory if (m := memory_plan.misfit(e, gpu_memory))]
    pins = provenance.pin(spec)  # hub names resolved once, offline (ablate.provenance)
    if args.dry_run:
        memory = memory_plan.lines(plan.memory, spec, gpu_memory, source, plan.total, args.trial_hours)
        memory += onpolicy_plan.dry_run_lines(plan, gpu_memory)
        for p in pins:
            print(p.line())
        print_sweep(spec, plan, memory)
        for m in misfits:
            print(f"warning: {args.sweep}: {m}.", file=sys.stderr)
        return 0
    problem = preflight(args, spec, misfits) or provenance.pin_problem(args.sweep, pins)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for warning in provenance.pin_warnings(args.sweep, pins):
        print(warning, file=sys.stderr)
    if spec.stages:
        from ablate.sweep import staged as stages

        return stages.launch(args, spec, plan)
    if spec.adaptive_seeds:
        from ablate.sweep import adaptive
        from ablate.verdicts.decider import DECIDER  # the entry point hands the verdicts to the loop

        return adaptive.launch(args, spec, plan, DECIDER)
    return launch(args, plan)


def print_sweep(spec: SweepSpec, plan: SweepPlan, memory: list[str]) -> None:
    """``--dry-run``: the trackers, the trials (or each stage's), the memory plan, ``N trials``."""
    if spec.tracking.any:
        print(tracking.describe(spec.tracking))
    if spec.stages:
        from ablate.sweep import staged as stages

        stages.print_dry_run(spec, memory)
    elif spec.adaptive_seeds:
        from ablate.sweep import adaptive

        adaptive.print_dry_run(spec, memory)
    else:
        print_trials(plan, memory)


def preflight(args: argparse.Namespace, spec: SweepSpec, misfits: list[str]) -> str | None:
    """Why the sweep must not launch (checked before Ray starts and the start point trains), or None:
    a trial that does not fit its GPU (without ``--force``), an unreachable tracker or Ray cluster."""
    if misfits and not args.force:
        return "; ".join(f"{args.sweep}: {m}" for m in misfits) + "."
    problem = tracking_preflight.problem(spec.tracking) if spec.tracking.any else None
    if problem:
        return f"{args.sweep}: {problem}"
    problem = check_address(args.address)
    if problem:
        return (f"--address {args.address}: cannot reach a Ray cluster: {problem}. Give the head's GCS address "
                "(host:port, e.g. 10.0.0.1:6379, as printed by `ray start --head`) or omit --address to run on a "
                "local Ray.")  # fmt: skip
    return None


def launch(args: argparse.Namespace, plan: SweepPlan) -> int:
    """Hold the sweep's lease while it runs (``run_plan``)."""
    return with_lease(args, plan.spec, lambda: run_plan(args, plan))


def run_plan(args: argparse.Namespace, plan: SweepPlan) -> int:
    """Check the storage, connect to Ray, prepare the start points, run the plan, print the summary."""
    from ablate.sweep import tune  # heavy imports only when launching

    problem = storage_problem(args, plan.spec)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sweepdir.write_marker(tune.experiment_path(plan.spec.storage, plan.spec.name), plan.spec.name)
    t0 = time.time()
    if not connect(args):  # before the SFT start point, so a wrong address costs no training
        return EXIT_BAD_INPUT
    spec = plan.spec
    plan = dataclasses.replace(plan.with_start(start_points(spec)), source_file=args.sweep)
    plan = onpolicy_plan.attach(plan, shard_map=ray_tasks.cluster_map(args.address))  # once, before the trials
    plan = provenance.attach(plan, provenance.pin(spec))  # pinned snapshots and input fingerprints
    print(f"Sweep {spec.name}: {plan.total} trials ({spec.search}){' (resumed)' if args.resume else ''}")
    outcome = tune.run(plan, resume=args.resume)
    if "://" not in outcome.path:  # the baselines the trials were judged against, kept with the results
        from ablate.judging.generations import publish_baselines

        publish_baselines(outcome.path)
    summarize(outcome, spec.metric, spec.mode)
    print(f"Wall time: {time.time() - t0:.1f}s")
    return 0 if outcome.finished else 1


if __name__ == "__main__":
    sys.exit(main())
