"""The CLI: ``python -m ablate.run SWEEP.yaml [--address ADDR] [--dry-run] [--resume | --overwrite]``.

Validates the sweep file (exit 2 with a one-paragraph message on bad input, nothing launched),
prepares the SFT start point, runs the trials on Ray Tune and prints a summary."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from ablate import spec as spec_mod
from ablate.spec import SpecError

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


def print_dry_run(trials: list[dict]) -> None:
    print(f"{'#':>3}  {'method':<14} {'label':<16} {'setting':<44} {'seed':>4}  resources")
    for t in trials:
        print(
            f"{t['index']:>3}  {t['method']:<14} {t['label']:<16} {t['setting']:<44} {t['seed']:>4}  {describe_resources(t)}"
        )
    print(f"{len(trials)} trials")


def describe_resources(trial: dict) -> str:
    res = trial["resources"]
    if res.get("workers", 1) == 1:
        return f"cpu={res['cpus']} gpu={res['gpus']}"
    ds = trial["deepspeed"]
    zero = "own DeepSpeed config" if ds.get("user_config") else f"ZeRO-{ds['stage']}"
    return f"{res['workers']} workers x (cpu={res['cpus_per_worker']} gpu={res['gpus_per_worker']}), {zero}"


def summarize(outcome, metric: str, mode: str) -> None:
    best: dict[str, dict] = {}
    for r in outcome.results:
        m = r["metrics"]
        if r["error"] or metric not in m:
            continue
        label = r["config"]["label"]
        better = best.get(label) is None or (m[metric] > best[label]["metrics"][metric]) == (mode == "max")
        if better:
            best[label] = r
    print(
        f"\n{outcome.finished} trials finished, {outcome.errored} errored. Best trial per method by {metric} ({mode}):"
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.schema:
        print(spec_mod.json_schema())
        return 0
    if not args.sweep:
        print("usage: python -m ablate.run SWEEP.yaml [options]; see --help", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        spec = spec_mod.load_sweep(args.sweep)
        if args.storage:
            spec.storage = args.storage
        trials = spec_mod.expand(spec)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if spec.model.trust_remote_code:
        print(
            f"warning: {args.sweep}: model.trust_remote_code is true: Python code shipped with "
            f"{spec.model.name_or_path!r} will be imported and run by every trial that loads it. "
            "Set it only for a model whose code you have read; the default is false.",
            file=sys.stderr,
        )
    if not check_data(args.sweep, spec):
        return EXIT_BAD_INPUT
    if args.dry_run:
        print_dry_run(trials)
        return 0

    from ablate import startpoint, tune  # heavy imports only when launching

    if tune.exists(spec.storage, spec.name) and not args.resume:
        if not args.overwrite:
            print(
                f"error: {args.sweep}: name: a sweep called {spec.name!r} already exists at "
                f"{tune.experiment_path(spec.storage, spec.name)}. Pass --resume to continue it, --overwrite "
                "to delete it and start again, or change `name`.",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT
        shutil.rmtree(tune.experiment_path(spec.storage, spec.name), ignore_errors=True)

    t0 = time.time()
    start = startpoint.prepare(
        spec.model.model_dump(),
        spec.data.model_dump(),
        spec.sft.model_dump(),
        spec.evaluation.model_dump(),
        spec.cache_dir,
    )
    for t in trials:
        t["start"] = start
        t["cache_dir"] = str(Path(spec.cache_dir).expanduser().resolve())
    try:
        tune.connect(args.address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        print(f"error: --address {args.address}: cannot connect to a Ray cluster ({e}). "
              "Check the address (host:port of the head's GCS, e.g. 10.0.0.1:6379) or omit it to run locally.",
              file=sys.stderr)  # fmt: skip
        return EXIT_BAD_INPUT
    print(f"Sweep {spec.name}: {len(trials)} trials")
    outcome = tune.run(
        trials,
        spec.name,
        spec.storage,
        spec.resources.model_dump(),
        spec.max_concurrent,
        spec.max_failures,
        args.resume,
    )
    summarize(outcome, spec.metric, spec.mode)
    print(f"Wall time: {time.time() - t0:.1f}s")
    return 0 if outcome.finished else 1


if __name__ == "__main__":
    sys.exit(main())
