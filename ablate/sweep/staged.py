"""A staged sweep (``stages:`` in the sweep file): its stages in order, each its own Ray Tune experiment
under ``<storage>/<sweep>/<stage>/``, each starting from the winners of an earlier one.

After a stage, each method's settings are ranked by the stage's metric (``ablate.sweep.selection``, the
report's rule) and the selection is recorded in ``<storage>/<sweep>/stages.json`` with the sweep as
launched; a later stage's trials are built from it (``ablate.spec.stages``). A method with no eligible
trial in a stage stops there, with the reason recorded and printed; the others go on. ``--resume``
skips every stage whose selection is recorded and continues the first one that is not (Ray Tune's
restore: its finished trials are kept), so a killed sweep reruns nothing that had finished."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ablate import provenance, records
from ablate.cache import cache_key
from ablate.spec import SweepSpec
from ablate.spec import stages as stage_spec
from ablate.sweep import plan as plan_mod
from ablate.sweep import selection, sweepdir
from ablate.sweep.dryrun import print_trials
from ablate.sweep.launch import EXIT_BAD_INPUT, connect, start_points, storage_problem, with_lease

RECORD = records.STAGES_FILE


@dataclass
class Record:
    """``stages.json``: the sweep as launched and each finished stage's selection."""

    path: str  # <storage>/<sweep>/stages.json: a local path or a URI
    data: dict = field(default_factory=dict)

    @classmethod
    def create(cls, path: str, spec: SweepSpec) -> Record:
        data = {
            "sweep": spec.name,
            "stages": [s.name for s in spec.stages],
            "spec": spec.model_dump(mode="json", by_alias=True, exclude_unset=True),  # as written
            "selections": {},
        }
        record = cls(path, data)
        record.save()
        return record

    @classmethod
    def read(cls, path: str) -> Record | None:
        data = records.read_bytes(path)
        return None if data is None else cls(path, json.loads(data))

    def save(self) -> None:
        records.write_json(self.path, self.data, indent=1)

    def spec(self) -> SweepSpec:
        return SweepSpec.model_validate(self.data["spec"])

    def selection(self, stage: str) -> dict | None:
        return self.data["selections"].get(stage)

    def bases(self, stage: str, k: int) -> tuple[dict[str, list[stage_spec.Base]], list[str]]:
        """Each method's k best settings of ``stage`` as bases of a later stage, and notes on ties at the cut."""
        bases, notes = {}, []
        for m in self.selection(stage)["methods"]:
            if m["status"] != "selected":
                continue
            ranking = m["ranking"]
            bases[m["label"]] = [stage_spec.Base(**s["point"]) for s in ranking[:k]]
            cut = selection.cut_tie(ranking, k)
            if cut:
                notes.append(f"{m['label']}: {cut}")
        return bases, notes


# --- --dry-run ---------------------------------------------------------------------------------


def print_dry_run(spec: SweepSpec, memory: list[str] = ()) -> None:
    """Each stage's plan; a stage that depends on earlier winners as per-method upper bounds ("≤ N");
    ``memory``, the memory plan's lines. The last line is ``N trials``, the upper bound of the sweep."""
    counts = stage_spec.bounds(spec)
    print(f"Staged sweep {spec.name}: {len(spec.stages)} stages, each a Ray Tune experiment in "
          f"{spec.storage.rstrip('/')}/{spec.name}/<stage>/")  # fmt: skip
    for i, (stage, count) in enumerate(zip(spec.stages, counts, strict=True)):
        one = stage_spec.stage_spec(spec, i, None)
        n = f"{count.total}" if count.exact else f"≤ {count.total}"
        print(f"\nStage {i + 1}/{len(spec.stages)} {stage.name}: {describe(spec, i, one)}; {n} trials")
        if count.exact:
            print_trials(plan_mod.build(one), total_line=False)
            continue
        print(f"{'':>3}  {'method':<8} {'label':<16} {'trials':>7}  searched / carried")
        for entry in one.methods:
            label = entry.label
            spaces = [
                f"{k} {v.kind} {list(v.values)}"
                for section in stage_spec.SECTIONS
                for k, v in getattr(entry, section).items()
                if isinstance(v, stage_spec.Space)
            ]
            k = count.carried[label]
            src = spec.stages[stage_spec.source(spec, i)].name
            carried = f"from the best setting of {src}" if k == 1 else f"from each of the {k} best of {src}"
            print(f"{'':>3}  {entry.method:<8} {label:<16} {'≤ ' + str(count.trials[label]):>7}  "
                  f"{'; '.join(spaces) or 'nothing searched'}; {carried}")  # fmt: skip
    for line in memory:
        print(line)
    total = sum(c.total for c in counts)
    exact = all(c.exact for c in counts)
    print(f"\n{'' if exact else '≤ '}{total} trials in {len(spec.stages)} stages" +
          ("" if exact else " (later stages run each method's carried winners only)") +
          "; a trial identical to one an earlier stage finished replays its results instead of training")  # fmt: skip
    print(f"{total} trials")


def describe(spec: SweepSpec, position: int, one: SweepSpec) -> str:
    """What a stage does, in a line: its search, metric, what it searches and where the rest comes from."""
    stage = spec.stages[position]
    src = stage_spec.source(spec, position)
    start = ""
    if src is not None:
        k = stage.from_.top_k
        start = f", from {spec.stages[src].name}: {'best' if k == 1 else f'top {k}'}"
    what = ", ".join(stage.params) or "nothing"
    return f"{one.search} on {one.metric} ({one.mode}), searches {what}{start}, seeds {one.seeds}"


# --- running -----------------------------------------------------------------------------------


def launch(args: argparse.Namespace, spec: SweepSpec, checked: plan_mod.SweepPlan) -> int:
    """Run the stages in order (or with ``--resume`` continue where the sweep stopped); exit code as
    ``ablate.run``: 0 when the last stage finished a trial, 1 otherwise, 2 on bad input. ``checked``:
    the first stage's plan after ``ablate.sweep.cli.check_data``, whose data split every stage records."""
    from ablate.sweep import tune

    root = tune.experiment_path(spec.storage, spec.name)
    for stage in spec.stages:  # each stage's folder inside the sweep's
        problem = sweepdir.outside_problem(root, stage.name)
        if problem:
            print(f"error: {args.sweep}: stages: {problem}. Give each stage a folder of its own.", file=sys.stderr)
            return EXIT_BAD_INPUT
    return with_lease(args, spec, lambda: run_stages(args, spec, checked, root))  # for all its stages


def run_stages(args: argparse.Namespace, spec: SweepSpec, checked: plan_mod.SweepPlan, root: str) -> int:
    """``launch`` with the sweep's lease held."""
    from ablate.sweep import tune

    record = Record.read(f"{root}/{RECORD}")
    problem = storage_problem(args, spec, exists=record is not None or tune.exists(spec.storage, spec.name)
    )
    if not problem and args.resume and record is None:
        problem = (f"{args.sweep}: --resume: {root} holds a sweep without stages, not this staged sweep. "
                   "Change `name`, or pass --overwrite to delete it.")  # fmt: skip
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sweepdir.write_marker(root, spec.name)
    if args.resume:
        launched = record.spec().model_copy(update={"storage": spec.storage})
        if launched != spec:
            print(f"note: {args.sweep} changed since the sweep was launched; resuming it as launched "
                  f"({root}/{RECORD}).")  # fmt: skip
        spec = launched
    t0 = time.time()
    pending = not args.resume or any(record.selection(s.name) is None for s in spec.stages)
    if pending and not connect(args):  # a finished staged sweep only prints its selections
        return EXIT_BAD_INPUT
    if not args.resume:  # the sweep exists from here on: --resume continues it
        record = Record.create(f"{root}/{RECORD}", spec)
    prepare = preparer(args, spec, checked)
    print(f"Staged sweep {spec.name}: {len(spec.stages)} stages{' (resumed)' if args.resume else ''}")
    last = None
    for i, stage in enumerate(spec.stages):
        last = record.selection(stage.name)
        header = f"\nStage {i + 1}/{len(spec.stages)} {stage.name}"
        if last is not None:
            print(f"{header}: finished before; not rerun.")
            print_selection(last)
            continue
        last = run_stage(spec, i, record, prepare, header)
        record.data["selections"][stage.name] = last
        record.save()
        print_selection(last)
    print(f"\nResults: {root}\nReport:  python -m analysis.report {root}")
    print(f"Wall time: {time.time() - t0:.1f}s")
    return 0 if last and any(m["status"] == "selected" for m in last["methods"]) else 1


def preparer(
    args: argparse.Namespace, spec: SweepSpec, checked: plan_mod.SweepPlan
) -> Callable[[plan_mod.SweepPlan], plan_mod.SweepPlan]:
    """What ``ablate.sweep.cli.launch`` adds to a plan, for plans built after ``checked`` (a later stage or
    round): the data split ``checked`` recorded, the start points, pinned snapshots and input
    fingerprints (ablate.provenance), the sweep file."""
    start_for = start_points(spec)
    pins = provenance.pin(spec)
    splits = {cache_key(t["data"]): t["data_split"] for t in checked.trials}
    if checked.search:
        splits[cache_key(spec.data.model_dump())] = checked.trial_extra["data_split"]

    def prepare(plan: plan_mod.SweepPlan) -> plan_mod.SweepPlan:
        plan = plan.with_data_split(lambda data: splits[cache_key(data)]).with_start(start_for)
        return replace(provenance.attach(plan, pins), source_file=args.sweep)

    return prepare


def run_stage(
    spec: SweepSpec,
    position: int,
    record: Record,
    prepare: Callable[[plan_mod.SweepPlan], plan_mod.SweepPlan],
    header: str,
) -> dict:
    """Run one stage from the recorded winners of its source stage; return its selection record."""
    from ablate.sweep import tune

    stage = spec.stages[position]
    src = stage_spec.source(spec, position)
    bases, notes = (None, [])
    if src is not None:
        bases, notes = record.bases(spec.stages[src].name, stage.from_.top_k)
    one = stage_spec.stage_spec(spec, position, bases)
    labels = list(dict.fromkeys(e.label for e in one.methods))
    stopped_before = [e.label for e in spec.methods if e.label not in labels]
    base = {
        "stage": stage.name,
        "position": position,
        "metric": one.metric,
        "mode": one.mode,
        "searched": list(stage.params),
        "from": None if src is None else {"stage": spec.stages[src].name, "top_k": stage.from_.top_k},
        "notes": notes,
    }
    methods = [
        {
            "label": label,
            "status": "stopped before",
            "reason": f"stopped at stage {_stop_stage(record, label)}",
        }
        for label in stopped_before
    ]
    if not one.methods:
        print(f"{header}: not run: no method has a winner to start from.")
        return {**base, "trials": 0, "methods": methods}
    plan = prepare(plan_mod.build(one).with_extra({"sweep": spec.name, "stage": stage.name}))
    earlier = [(tune.experiment_path(one.storage, s.name)) for s in spec.stages[:position]]
    plan, replayed = with_replays(plan, earlier)
    resumed = tune.exists(one.storage, one.name)  # this stage had started: continue it
    if not resumed:  # a start cut short before Tune saved anything to restore: start the stage over
        tune.delete_experiment(one.storage, one.name)
    again = f", {replayed} of them replays of identical finished trials of earlier stages" if replayed else ""
    print(
        f"{header}: {describe(spec, position, one)}; {plan.total} trials{again}{' (resumed)' if resumed else ''}"
    )
    for note in notes:
        print(f"  note: {note}")
    outcome = tune.run(plan, resume=resumed)
    chosen = selection.select(outcome.path, labels, one.metric, one.mode, stage.name)
    order = {e.label: i for i, e in enumerate(spec.methods)}
    methods = sorted(methods + chosen, key=lambda m: order[m["label"]])
    return {**base, "trials": plan.total, "replayed": replayed, "finished": outcome.finished,
            "errored": outcome.errored, "stopped_early": outcome.stopped, "methods": methods}  # fmt: skip


def with_replays(plan: plan_mod.SweepPlan, earlier: list[str]) -> tuple[plan_mod.SweepPlan, int]:
    """Mark each trial of a grid stage that an earlier stage already finished (the same setting and seed:
    ``ablate.records.config_key``) to replay that trial's results instead of training again
    (``ablate.trial.record.replay``); e.g. the learning-rate winner at its default setting, rerun by the next
    stage's grid, or seed 0 of a winner. Returns the plan and how many trials replay."""
    if plan.search:  # trials drawn while the stage runs are not known here
        return plan, 0
    done: dict[tuple[str, int], str] = {}
    for path in earlier:
        for trial_dir, cfg in records.finished_trials(path):
            done.setdefault((records.config_key(cfg), int(cfg["seed"])), trial_dir)
    trials = [{**t, "replay": done.get((records.config_key(t), t["seed"]))} for t in plan.trials]
    return replace(plan, trials=trials), sum(t["replay"] is not None for t in trials)


def _stop_stage(record: Record, label: str) -> str:
    """The stage where a method stopped (its reason is recorded there)."""
    for name, sel in record.data["selections"].items():
        for m in sel["methods"]:
            if m["label"] == label and m["status"] == "stopped":
                return name
    return "(none recorded)"


def _stat(s: dict) -> str:
    if s["mean"] is None:
        return "–"
    if s["n"] < 2 or s["ci_low"] is None:
        return f"{s['mean']:.4g} ({s['n']} seed)"
    return f"{s['mean']:.4g} [{s['ci_low']:.4g}, {s['ci_high']:.4g}] ({s['n']} seeds)"


def print_selection(sel: dict) -> None:
    """A stage's winners: per method the selected setting with its mean and 95 % interval, what it beat,
    the tie that decided it, or why the method stopped."""
    if not sel["trials"]:
        return
    print(f"Stage {sel['stage']}: winners by {sel['metric']} ({sel['mode']}), seed mean [95 % t-interval]:")
    for m in sel["methods"]:
        if m["status"] != "selected":
            print(f"  {m['label']:<16} {m['status']}: {m['reason']}")
            continue
        best, rest = m["ranking"][0], m["ranking"][1:]
        beat = f"beat {len(rest)} setting(s)" + (
            f", next {rest[0]['setting']}: {_stat(rest[0])}" if rest else ""
        )
        print(f"  {m['label']:<16} {best['setting']}: {_stat(best)}; {beat}")
        if m["tie"]:
            print(f"  {'':<16} tie with {', '.join(m['tie']['with'])}: decided by {m['tie']['decided_by']}")
        if m["unfinished_settings"]:
            print(
                f"  {'':<16} {m['unfinished_settings']} setting(s) with no eligible trial were not compared"
            )
