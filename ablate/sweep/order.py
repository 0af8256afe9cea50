"""The order in which a sweep's trials run, and its record in the sweep's storage.

Costs measured by a trial (runtime, memory) move with what else the machine and the worker are
doing, and such drift goes with the order trials run in. Run in the sweep file's order, a method
listed last also runs last, and a comparison of its cost with an earlier method's measures the
order as much as the methods (docs/reports.md, "Efficiency"). So by default (``order:
interleaved``) each method's trials are spread evenly over the run: the trials of one method (its
settings, seeds and task points) are put in a seeded random order, the k-th of its n trials is
placed at (k + u) / n of the run with u uniform in [0, 1), and all trials run by that position.
Every method then has its trials early, in the middle and late, and within a method no setting or
seed is systematically later. ``order: file`` keeps the order of the file's expansion.

A trial's ``index`` is its position in the file's expansion (``ablate.spec.expand``), whatever the
order: it names the trial in ``--dry-run``, in its directory name and in ``ABLATE_FAULT``. The run
order is recorded in ``<storage>/<sweep>/run_order.json`` and shown by ``--dry-run``. Random /
optuna sweeps draw their trials while they run, method entries in turn (``ablate.spec.search_order``).
Ray-free.
"""

from __future__ import annotations

import random
from typing import Any

from ablate import records

RECORD = records.RUN_ORDER_FILE


def method_of(trial: dict[str, Any]) -> tuple:
    """The method a trial belongs to, as the report groups them: label, objective, reference."""
    return trial["label"], trial["method"], trial.get("reference")


def arrange(trials: list[dict[str, Any]], order: str, seed: int) -> list[dict[str, Any]]:
    """``trials`` (in file order) in the order they run (see the module doc)."""
    if order == "file":
        return list(trials)
    rng = random.Random(seed)
    by_method: dict[tuple, list[dict[str, Any]]] = {}
    for t in trials:
        by_method.setdefault(method_of(t), []).append(t)
    placed = []
    for members in by_method.values():
        members = list(members)
        rng.shuffle(members)
        placed += [((k + rng.random()) / len(members), t["index"], t) for k, t in enumerate(members)]
    return [t for _, _, t in sorted(placed, key=lambda p: (p[0], p[1]))]


def describe(order: str, seed: int) -> str:
    """The order, in one line (``--dry-run``)."""
    if order == "file":
        return "order: file (the file's expansion: method entries, grid points, seeds)"
    return (
        f"order: interleaved (seed {seed}): each method's trials in a seeded random order, spread evenly "
        "over the sweep; # is the trial's index in the file's expansion"
    )


def grid_record(trials: list[dict[str, Any]], order: str, seed: int) -> dict[str, Any]:
    """What ``run_order.json`` holds for a grid sweep: the order and, per position, the trial."""
    return {
        "order": order,
        "order_seed": seed,
        "trials": [
            {"position": p, "index": t["index"], "label": t["label"], "setting": t["setting"], "seed": t["seed"]}
            for p, t in enumerate(trials)
        ],
    }


def search_record(draws: list[tuple[int, int]], labels: list[str], search: str) -> dict[str, Any]:
    """``run_order.json`` of a random / optuna sweep: the method entry and draw of each suggestion."""
    return {
        "order": "interleaved",
        "search": search,
        "trials": [
            {"position": p, "index": p, "entry": j, "label": labels[j], "draw": k} for p, (j, k) in enumerate(draws)
        ],
    }


def write_record(experiment_path: str, record: dict[str, Any]) -> None:
    """``run_order.json`` beside Ray's files of the sweep: a local path, or a URI."""
    records.write_json(f"{experiment_path}/{RECORD}", record)
