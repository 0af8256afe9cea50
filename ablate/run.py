"""The CLI: ``python -m ablate.run SWEEP.yaml [--address ADDR] [--dry-run] [--resume | --overwrite]``.

Validates the sweep file (exit 2 with a one-paragraph message on bad input, nothing launched),
prepares the SFT start point, runs the trials on Ray Tune and prints a summary."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

from ablate import order as order_mod
from ablate import plan as plan_mod
from ablate import spec as spec_mod
from ablate.cache import cache_key
from ablate.plan import SweepPlan
from ablate.spec import SpecError, SweepSpec

EXIT_BAD_INPUT = 2


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
    return p.parse_args(argv)


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


def print_dry_run(plan: SweepPlan) -> None:
    """The plan: a grid sweep's trials one per line, or a search's entries; last line ``N trials``."""
    if plan.search:
        print_search_dry_run(plan)
        return
    print(order_mod.describe(plan.spec.order, plan.spec.order_seed))
    print(f"{'run':>3} {'#':>3}  {'method':<14} {'label':<16} {'setting':<44} {'seed':>4}  resources")
    for position, t in enumerate(plan.trials):
        print(
            f"{position:>3} {t['index']:>3}  {t['method']:<14} {t['label']:<16} {t['setting']:<44} {t['seed']:>4}  "
            f"{describe_resources(t)}"
        )
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
        )
        seeds = ",".join(str(spec_mod.sampled_seed(spec, k)) for k in range(min(e.trials, len(spec.seeds))))
        if e.spaces and len(spec.seeds) > 1:
            seeds += f" (draw k: seeds[k % {len(spec.seeds)}])"
        res = _resources(plan.resources)
        print(f"{e.position:>3}  {e.entry.method:<8} {e.entry.label:<16} {e.trials:>6}  {seeds:<28} {res}")
        for path, space in e.spaces.items():
            print(f"{'':>5}searched  {path.split('.', 1)[1]} ~ {_space_text(space)}")
        print(f"{'':>5}fixed     {fixed}")
    print(f"{plan.total} trials")


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


def describe_resources(trial: dict) -> str:
    res = trial["resources"]
    if trial.get("deepspeed") is None:
        return f"cpu={res['cpus']} gpu={res['gpus']}"
    ds = trial["deepspeed"]
    zero = "own DeepSpeed config" if ds.get("user_config") else f"ZeRO-{ds['stage']}"
    return f"{res['workers']} workers x (cpu={res['cpus_per_worker']} gpu={res['gpus_per_worker']}), {zero}"


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


def check_data(sweep: str, spec) -> bool:
    """Read a local data file before anything launches: a bad file is an error here, not in every trial."""
    from ablate.data import DataError, validate_local

    try:
        counts = validate_local(spec.data.model_dump())
    except DataError as e:
        print(f"error: {sweep}: data.source: {e}", file=sys.stderr)
        return False
    if counts:
        skipped = ", ".join(
            f"{v} {k.removeprefix('skipped_pairs_')}" for k, v in counts.items() if "skip" in k and v
        )
        print(
            f"Data {spec.data.source}: {counts['train_pairs']} training and {counts['held_out_pairs']} held-out pairs"
            + (f"; skipped pairs: {skipped}" if skipped else "")
        )
    return True


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
    return spec


def storage_problem(args: argparse.Namespace, spec: SweepSpec, tune) -> str | None:
    """Why the sweep's storage does not fit ``--resume`` / ``--overwrite``; deletes it for ``--overwrite``."""
    where = tune.experiment_path(spec.storage, spec.name)
    exists = tune.exists(spec.storage, spec.name)
    if exists and not args.resume:
        if not args.overwrite:
            return (
                f"{args.sweep}: name: a sweep called {spec.name!r} already exists at {where}. Pass --resume to "
                "continue it, --overwrite to delete it and start again, or change `name`."
            )
        tune.delete_experiment(spec.storage, spec.name)
    if args.resume and not exists:
        return (
            f"{args.sweep}: --resume: there is no sweep {spec.name!r} to resume at {where}. Run without "
            "--resume to start it (or check `name` and `storage`)."
        )
    return None


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
        plan = plan_mod.build(spec)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not check_data(args.sweep, spec):
        return EXIT_BAD_INPUT
    if args.dry_run:
        print_dry_run(plan)
        return 0
    problem = check_address(args.address)
    if problem:
        print(f"error: --address {args.address}: cannot reach a Ray cluster: {problem}. Give the head's "
              "GCS address (host:port, e.g. 10.0.0.1:6379, as printed by `ray start --head`) or omit "
              "--address to run on a local Ray.", file=sys.stderr)  # fmt: skip
        return EXIT_BAD_INPUT
    return launch(args, plan)


def launch(args: argparse.Namespace, plan: SweepPlan) -> int:
    """Connect to Ray, prepare the start points, run the plan, print the summary."""
    from ablate import startpoint, tune  # heavy imports only when launching

    problem = storage_problem(args, plan.spec, tune)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    t0 = time.time()
    try:  # before the SFT start point, so a wrong address costs no training
        tune.connect(args.address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        print(f"error: --address {args.address}: cannot connect to a Ray cluster ({e}). "
              "Check the address (host:port of the head's GCS, e.g. 10.0.0.1:6379) or omit it to run locally.",
              file=sys.stderr)  # fmt: skip
        return EXIT_BAD_INPUT
    spec = plan.spec
    starts: dict[str, dict] = {}  # one start point (and SFT baseline) per task config of the sweep

    def start_for(data: dict) -> dict:
        key = cache_key(data)
        if key not in starts:
            starts[key] = startpoint.prepare(spec.model.model_dump(), data, spec.sft.model_dump(),
                                             spec.evaluation.model_dump(), spec.cache_dir)  # fmt: skip
        return starts[key]

    plan = plan.with_start(start_for)
    print(f"Sweep {spec.name}: {plan.total} trials ({spec.search}){' (resumed)' if args.resume else ''}")
    outcome = tune.run(plan, resume=args.resume)
    summarize(outcome, spec.metric, spec.mode)
    print(f"Wall time: {time.time() - t0:.1f}s")
    return 0 if outcome.finished else 1


if __name__ == "__main__":
    sys.exit(main())
