"""Launching a sweep, shared by a plain, a staged and an adaptive-seeds sweep: the storage checks of
``--resume`` / ``--overwrite``, the sweep's lease (one driver per sweep), connecting to Ray and the
start points. Ray Tune is imported only when a function here runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ablate.cache import cache_key
from ablate.spec import SweepSpec
from ablate.sweep import lease as lease_mod
from ablate.sweep import sweepdir
from ablate.trial import startpoint

EXIT_BAD_INPUT = 2


def storage_problem(
    args: argparse.Namespace, spec: SweepSpec, exists: bool | None = None
) -> str | None:
    """Why the sweep's storage does not fit ``--resume`` / ``--overwrite``; deletes it for ``--overwrite``.
    ``exists``: whether the sweep is in storage (default: a Ray Tune experiment of its name is)."""
    from ablate.sweep import tune

    where = tune.experiment_path(spec.storage, spec.name)
    exists = tune.exists(spec.storage, spec.name) if exists is None else exists
    if exists and not args.resume:
        if not args.overwrite:
            return (
                f"{args.sweep}: name: a sweep called {spec.name!r} already exists at {where}. Pass --resume to "
                "continue it, --overwrite to delete it and start again, or change `name`."
            )
        stages = tuple(s.name for s in spec.stages)
        refused = sweepdir.overwrite_problem(where, keep=stages)
        if refused:
            return (f"{args.sweep}: --overwrite: {refused}. ablate deletes only a sweep directory it wrote, and "
                    "nothing was deleted. Move those files away (or delete the directory yourself if it is "
                    "yours), or change `name` or `storage`.")  # fmt: skip
        sweepdir.delete_known(where, keep=stages)
    if args.resume and not exists:
        return (
            f"{args.sweep}: --resume: there is no sweep {spec.name!r} to resume at {where}. Run without "
            "--resume to start it (or check `name` and `storage`)."
        )
    return None


def connect(args: argparse.Namespace) -> bool:
    """Connect to Ray (``--address``, or a local instance); False after printing why it failed."""
    from ablate.sweep import tune

    try:
        tune.connect(args.address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        print(f"error: --address {args.address}: cannot connect to a Ray cluster ({e}). "
              "Check the address (host:port of the head's GCS, e.g. 10.0.0.1:6379) or omit it to run locally.",
              file=sys.stderr)  # fmt: skip
        return False
    return True


def start_points(spec: SweepSpec) -> Callable[[dict], dict]:
    """``start_for(data section) -> start``: one start point (and SFT baseline) per task config of the
    sweep, prepared on first use."""
    starts: dict[str, dict] = {}

    def start_for(data: dict) -> dict:
        key = cache_key(data)
        if key not in starts:
            starts[key] = startpoint.prepare(spec.model.model_dump(), data, spec.sft.model_dump(),
                                             spec.evaluation.model_dump(), spec.cache_dir)  # fmt: skip
        return starts[key]

    return start_for


def hold(args: argparse.Namespace, spec: SweepSpec) -> lease_mod.Lease | None:
    """The sweep's lease (``ablate.sweep.lease``: one driver per sweep), its directory checked to lie inside
    ``storage``; None after printing why not."""
    problem = sweepdir.outside_problem(spec.storage, spec.name)
    if problem:
        print(f"error: {args.sweep}: name: {problem}. Give `name` a folder of its own inside `storage`.",
              file=sys.stderr)  # fmt: skip
        return None
    from ablate.sweep import tune

    flags = [f"--{f}" for f in ("resume", "overwrite") if getattr(args, f)]
    held = lease_mod.acquire(tune.experiment_path(spec.storage, spec.name),
                             " ".join(["python -m ablate.run", args.sweep, *flags]),
                             f"{args.sweep}: sweep {spec.name!r}")  # fmt: skip
    if isinstance(held, str):
        print(f"error: {held}", file=sys.stderr)
        return None
    return held


def with_lease(args: argparse.Namespace, spec: SweepSpec, run: Callable[[], int]) -> int:
    """``run()`` with the sweep's lease held (for all its stages or rounds); exit 2 when it is not free."""
    held = hold(args, spec)
    if held is None:
        return EXIT_BAD_INPUT
    with held:
        return run()
