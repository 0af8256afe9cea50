"""An adaptive-seed sweep (``seeds: {start: 2, max: 8}``): rounds of trials until every claim is decided.

Round 1 is the sweep's grid at seeds ``0 .. start-1``. After each round (a *look*) the report's
claims, the paper's findings and the sweep file's ``claims:``, get their verdicts at the look's level
α/K, and only the settings in the arms of claims still undecided get their next seed, as the next
round; the sweep stops when every claim is decided, no undecided arm is below ``max``, or after K
rounds. The rule and why its repeated looks keep the family-wise error at α: ``ablate.sweep.sequential``.

Each round is its own Ray Tune experiment, ``<storage>/<sweep>/round-<r>/``; ``analysis.report
<storage>/<sweep>`` reads them together (a setting's seeds span rounds: one ``config_key``).
``<storage>/<sweep>/rounds.json`` records the sweep as launched and each round's plan, verdicts and
next settings, so ``--resume`` skips finished rounds and continues the current one (Ray Tune's restore).

Verdicts are computed by ``ablate.verdicts`` (pandas and scipy, the report's statistics, which the
report shows too): the loop takes them through a ``Decider`` (two plain functions) handed in by the
entry point (``ablate.sweep.cli`` passes ``ablate.verdicts.decider.DECIDER``). So this module, the run
loop, depends only on the look's results as values, and a test can hand in its own decider."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from ablate import records
from ablate.spec import SweepSpec
from ablate.sweep import plan as plan_mod
from ablate.sweep import sequential as S
from ablate.sweep import staged as stages
from ablate.sweep.dryrun import print_trials
from ablate.sweep.launch import EXIT_BAD_INPUT, connect, storage_problem, with_lease

RECORD = records.ROUNDS_FILE
ALPHA = 0.05


@dataclass(frozen=True)
class Decider:
    """``look(sweep root, selection metric, claims, α)``: every claim's verdict and arms at level α, on
    the trials finished so far; ``key(trial config)``: the setting a trial belongs to (its arm key)."""

    look: Callable[[str, str, list[dict], float], list[S.ClaimLook]]
    key: Callable[[dict], str]


def round_spec(spec: SweepSpec, number: int, seeds: list[int]) -> SweepSpec:
    """The sweep of round ``number`` (its grid at ``seeds``), a Ray Tune experiment under the sweep."""
    return spec.model_copy(update={"name": f"round-{number}", "storage": f"{spec.storage.rstrip('/')}/{spec.name}",
                                   "seeds": seeds, "adaptive_seeds": None})  # fmt: skip


def print_dry_run(spec: SweepSpec, memory: list[str] = ()) -> None:
    """Round 1's trials and the worst case: every setting at ``max`` seeds (the last line, ``N trials``)."""
    a = spec.adaptive_seeds
    first = plan_mod.build(round_spec(spec, 1, list(range(a.start))))
    worst = plan_mod.build(round_spec(spec, 0, list(range(a.max)))).total
    k = S.looks(a.start, a.max)
    print(f"Adaptive seeds {spec.name}: round 1 runs every setting at seeds 0..{a.start - 1}; each later round "
          f"gives one more seed only to the settings of claims still undecided, up to {a.max} seeds: at most "
          f"{k} rounds, each look at α/{k} = {S.look_alpha(ALPHA, a.start, a.max):.3g}.")  # fmt: skip
    print(f"\nRound 1: {first.total} trials")
    print_trials(first, total_line=False)
    for line in memory:
        print(line)
    print(f"\nWorst case (every setting to {a.max} seeds): {worst} trials; at least {first.total}")
    print(f"{worst} trials")


class Rounds(stages.Record):
    """``rounds.json``: the sweep as launched and each round (module doc)."""

    @classmethod
    def create(cls, path: str, spec: SweepSpec) -> Rounds:
        a = spec.adaptive_seeds
        data = {"sweep": spec.name, "spec": spec.model_dump(mode="json", by_alias=True, exclude_unset=True),
                "alpha": ALPHA, "looks": S.looks(a.start, a.max), "look_alpha": S.look_alpha(ALPHA, a.start, a.max),
                "rounds": []}  # fmt: skip
        record = cls(path, data)
        record.save()
        return record


def launch(args: argparse.Namespace, spec: SweepSpec, checked: plan_mod.SweepPlan, decider: Decider) -> int:
    """Run the rounds (or with ``--resume`` continue them) with the sweep's lease held (one driver per
    sweep, for all its rounds); exit code as ``ablate.run``."""
    return with_lease(args, spec, lambda: run_held(args, spec, checked, decider))


def run_held(args: argparse.Namespace, spec: SweepSpec, checked: plan_mod.SweepPlan, decider: Decider) -> int:
    from ablate.sweep import sweepdir, tune

    root = tune.experiment_path(spec.storage, spec.name)
    record = Rounds.read(f"{root}/{RECORD}")
    problem = storage_problem(args, spec, exists=record is not None or tune.exists(spec.storage, spec.name))
    if not problem and args.resume and record is None:
        problem = (f"{args.sweep}: --resume: {root} holds a sweep without rounds, not this adaptive sweep. "
                   "Change `name`, or pass --overwrite to delete it.")  # fmt: skip
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sweepdir.write_marker(root, spec.name)  # ablate's own folder (--overwrite)
    if args.resume:
        launched = record.spec().model_copy(update={"storage": spec.storage})
        if launched != spec:
            print(f"note: {args.sweep} changed since the sweep was launched; resuming it as launched ({root}/{RECORD}).")
        spec = launched
    if not args.resume:
        if not connect(args):
            return EXIT_BAD_INPUT
        record = Rounds.create(f"{root}/{RECORD}", spec)
    t0 = time.time()
    prepare = stages.preparer(args, spec, checked)
    finished = run_rounds(spec, record, prepare, decider, connect=lambda: connect(args))
    if finished is None:
        return EXIT_BAD_INPUT
    print(f"\nResults: {root}\nReport:  python -m analysis.report {root}")
    print(f"Wall time: {time.time() - t0:.1f}s")
    return 0 if finished else 1


def run_rounds(spec: SweepSpec, record: Rounds, prepare: Callable, decider: Decider,
               connect: Callable[[], bool]) -> int | None:  # fmt: skip
    """Every round in turn, skipping those ``record`` holds as finished (Ray is joined, by ``connect``,
    only when a round runs); trials finished in all, None when Ray could not be joined."""
    from ablate.sweep import tune

    a = spec.adaptive_seeds
    k, alpha = S.looks(a.start, a.max), S.look_alpha(ALPHA, a.start, a.max)
    claims = [c.model_dump(by_alias=True, exclude_none=True) for c in spec.claims]
    root = tune.experiment_path(spec.storage, spec.name)
    have: dict[str, int] = {}
    decided: dict[str, str] = {}
    grow: dict[str, int] | None = None  # round > 1: setting -> its next seed
    finished = 0
    print(f"Adaptive seeds {spec.name}: {a.start} to {a.max} seeds per setting, at most {k} rounds at α/{k} = {alpha:.3g}")
    for number in range(1, k + 1):
        rec = record.data["rounds"][number - 1] if number <= len(record.data["rounds"]) else None
        if rec is not None and rec.get("done"):
            print(f"\nRound {number}: finished before; not rerun.")
        else:
            if not connect():
                return None
            plan = round_plan(spec, number, grow, prepare, decider)
            if rec is None:
                rec = {"round": number, "trials": plan.total, "done": False}
                record.data["rounds"].append(rec)
                record.save()
            resumed = tune.exists(plan.spec.storage, plan.spec.name)
            if not resumed:  # a start cut short before Tune saved anything: start the round over
                tune.delete_experiment(plan.spec.storage, plan.spec.name)
            print(f"\nRound {number}/{k}: {plan.total} trials{' (resumed)' if resumed else ''}")
            outcome = tune.run(plan, resume=resumed)
            for t in plan.trials:
                key = decider.key(t)
                have[key] = max(have.get(key, 0), t["seed"] + 1)
            looked = decider.look(root, spec.metric, claims, alpha)
            more = S.next_round(looked, decided, have, a.max)
            rec.update(done=True, finished=outcome.finished, errored=outcome.errored, have=dict(have),
                       verdicts={c.claim: c.verdict for c in looked}, decided=dict(decided), more=sorted(more))  # fmt: skip
            record.save()
        have, decided = dict(rec["have"]), dict(rec["decided"])
        finished += rec["finished"]
        print_look(rec, k)
        if not rec["more"]:
            break
        grow = {key: have[key] for key in rec["more"]}
    return finished


def round_plan(spec: SweepSpec, number: int, grow: dict[str, int] | None, prepare: Callable,
               decider: Decider) -> plan_mod.SweepPlan:  # fmt: skip
    """Round 1: the grid at seeds 0..start-1; a later round: each setting of ``grow`` at its next seed."""
    if grow is None:
        return prepare(plan_mod.build(round_spec(spec, number, list(range(spec.adaptive_seeds.start)))))
    plan = prepare(plan_mod.build(round_spec(spec, number, sorted(set(grow.values())))))
    trials = [t for t in plan.trials if grow.get(decider.key(t)) == t["seed"]]
    return replace(plan, trials=trials)


def print_look(rec: dict, k: int) -> None:
    """A round's look: each claim's verdict and how many settings get another seed."""
    n = len(rec["verdicts"])
    open_ = sum(1 for c in rec["verdicts"] if c not in rec["decided"])
    print(f"Round {rec['round']}/{k}: {rec['finished']} trials finished; {n - open_} of {n} claims decided, "
          f"{len(rec['more'])} settings get another seed")  # fmt: skip
    if not n:
        print("  no claims to decide (the paper's findings do not apply; add `claims:` to the sweep file)")
    for claim, verdict in rec["verdicts"].items():
        kept = rec["decided"].get(claim)
        shown = f"{kept} (decided before)" if kept and kept != verdict else verdict
        print(f"  {shown:<28} {claim}")
