"""A staged sweep's stages as plain sweeps (Ray-free): what each stage searches, where its other values
come from, its checks and its trial counts.

A stage (``stages:`` in the sweep file, ``schema.Stage``) becomes one ``SweepSpec`` whose method entries
are the file's entries with

* the spaces the stage searches (``params``) kept as spaces,
* every other value that an earlier stage chose (``from``: the winners of that stage, one entry per
  carried setting) fixed at the winner's value,
* every other space held at its default: the method's default hyperparameter (or the shared training
  value) when the space contains it, else the space's first value (a range: its centre).

``ablate.sweep.staged`` runs these sweeps one after the other and selects the winners; ``--dry-run`` prints
them with ``bounds`` (a stage that depends on earlier results runs at most that many trials)."""

from __future__ import annotations

import difflib
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ablate import losses, metrics
from ablate.spec.checks import check_search, check_spaces, metric_problem, scheduler_metric
from ablate.spec.errors import SpecError, format_validation
from ablate.spec.expand import expand, grid_points, search_plan
from ablate.spec.schema import MethodEntry, Space, Stage, SweepSpec, TrainingConfig

SECTIONS = ("hparams", "training")


@dataclass(frozen=True)
class Base:
    """A setting an earlier stage selected for one method entry: the sweep file's values it names
    (a trial config's ``point``)."""

    hparams: dict[str, Any]
    training: dict[str, Any]


def source(spec: SweepSpec, position: int) -> int | None:
    """The position of the stage whose winners stage ``position`` starts from (None: no ``from``)."""
    start = spec.stages[position].from_
    if start is None:
        return None
    if start.stage is None:
        return position - 1
    return next(i for i, s in enumerate(spec.stages) if s.name == start.stage)


def metric_of(spec: SweepSpec, stage: Stage) -> tuple[str, str]:
    """The metric that selects a stage's winners, and its mode (the sweep's, or the metric's natural one)."""
    metric = stage.metric or spec.metric
    mode = stage.mode or (spec.mode if metric == spec.metric else metrics.natural_mode(metric))
    return metric, mode


def searched(stage: Stage, hparams: dict[str, Any], training: dict[str, Any]) -> set[tuple[str, str]]:
    """(section, key) of the spaces this stage searches among an entry's values."""
    out = set()
    for section, values in zip(SECTIONS, (hparams, training), strict=True):
        for key, value in values.items():
            if isinstance(value, Space) and (section in stage.params or key in stage.params):
                out.add((section, key))
    return out


def _contains(space: Space, value: Any) -> bool:
    if space.kind in ("grid", "choice"):  # True == 1 in Python; a bool default matches only a bool
        return any(v == value and isinstance(v, bool) == isinstance(value, bool) for v in space.values)
    low, high = space.values
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


def held_value(default: Any, space: Space) -> Any:
    """The value a space takes in a stage that does not search it and has no winner for it: the
    default when the space contains it, else its first value (a range: its centre, geometric for
    loguniform), so a stage's setting names one value."""
    if default is not None and _contains(space, default):
        return default
    if space.kind in ("grid", "choice"):
        return space.values[0]
    low, high = space.values
    if space.kind == "randint":
        return (low + high) // 2
    centre = math.sqrt(low * high) if space.kind == "loguniform" else (low + high) / 2
    return float(f"{centre:.4g}")


def stage_entry(spec: SweepSpec, stage: Stage, entry: MethodEntry, base: Base | None) -> MethodEntry:
    """One method entry of a stage (see the module doc); its label stays the file entry's."""
    hparams = dict(entry.hparams)
    training = {**stage.training, **entry.training}  # the entry's own value wins
    search = searched(stage, hparams, training)
    if base is not None:
        hparams.update({k: v for k, v in base.hparams.items() if ("hparams", k) not in search})
        training.update({k: v for k, v in base.training.items() if ("training", k) not in search})
    shared = {
        **spec.training.model_dump(),
        **{k: v for k, v in stage.training.items() if not isinstance(v, Space)},
    }
    defaults = {"hparams": losses.accepted(entry.method), "training": shared}
    for section, values in zip(SECTIONS, (hparams, training), strict=True):
        for key, value in values.items():
            if isinstance(value, Space) and (section, key) not in search:
                values[key] = held_value(defaults[section].get(key), value)
    return entry.model_copy(update={"name": entry.label, "hparams": hparams, "training": training})


def stage_spec(spec: SweepSpec, position: int, bases: dict[str, list[Base]] | None) -> SweepSpec:
    """Stage ``position`` as a sweep, stored under ``<storage>/<sweep>/<stage>``. ``bases``: each method
    label's carried winners (an entry without any is left out: it stopped earlier); None: every entry
    once, as if the stage had no ``from`` (for checks and trial counts). Its ``methods`` may be empty."""
    stage = spec.stages[position]
    methods: list[MethodEntry] = []
    for entry in spec.methods:
        made: list[MethodEntry] = []
        for base in [None] if bases is None else bases.get(entry.label, []):
            one = stage_entry(spec, stage, entry, base)
            if one not in made:  # two carried winners that differ only in what this stage searches
                made.append(one)
        methods += made
    metric, mode = metric_of(spec, stage)
    search = stage.search or spec.search
    num_samples = stage.num_samples if stage.num_samples is not None else spec.num_samples
    return spec.model_copy(
        update={
            "name": stage.name,
            "storage": f"{spec.storage.rstrip('/')}/{spec.name}",
            "methods": methods,
            "seeds": stage.seeds or spec.seeds,
            "search": search,
            "num_samples": None if search == "grid" else num_samples,
            "search_seed": spec.search_seed if stage.search_seed is None else stage.search_seed,
            "scheduler": stage.scheduler or spec.scheduler,
            "metric": metric,
            "mode": mode,
            "max_concurrent": stage.max_concurrent or spec.max_concurrent,
            "stages": [],
        }
    )


@dataclass(frozen=True)
class StageCount:
    """What one stage runs per method label: trials and distinct settings (upper bounds where the stage
    depends on earlier results, ``exact`` False), and how many carried winners each label starts from."""

    trials: dict[str, int]
    settings: dict[str, int]
    carried: dict[str, int]
    exact: bool

    @property
    def total(self) -> int:
        return sum(self.trials.values())


def _per_base(one: SweepSpec) -> tuple[Counter, Counter]:
    """Trials and settings per label of a stage sweep with one entry per label."""
    trials, settings = Counter(), Counter()
    if one.search == "grid":
        for t in expand(one):
            trials[t["label"]] += 1
        for label in trials:
            settings[label] = trials[label] // len(one.seeds)
        return trials, settings
    for e in search_plan(one):
        trials[e.entry.label] += e.trials
        settings[e.entry.label] += e.trials if e.spaces else 1
    return trials, settings


def bounds(spec: SweepSpec) -> list[StageCount]:
    """Each stage's trials per label: exact for a stage without ``from``; otherwise at most the
    carried winners (``top_k``, or fewer settings than that in the source stage) x a base's trials."""
    out: list[StageCount] = []
    for i, stage in enumerate(spec.stages):
        trials, settings = _per_base(stage_spec(spec, i, None))
        src = source(spec, i)
        if src is None:
            out.append(StageCount(dict(trials), dict(settings), {k: 1 for k in trials}, True))
            continue
        carried = {k: min(stage.from_.top_k, out[src].settings.get(k, 0)) for k in trials}
        out.append(
            StageCount(
                {k: v * carried[k] for k, v in trials.items()},
                {k: v * carried[k] for k, v in settings.items()},
                carried,
                False,
            )
        )
    return out


def check(path: Path, spec: SweepSpec) -> SweepSpec:
    """A staged sweep's checks, before anything launches: stage names and ``from`` references, what each
    stage searches, each stage's spaces against its search, and its metrics."""
    first: dict[str, int] = {}
    for i, entry in enumerate(spec.methods):
        if entry.label in first:
            raise SpecError(
                f"{path}: methods.{i}.name: the label {entry.label!r} is methods.{first[entry.label]}'s too; a "
                "staged sweep selects each entry's winners by its label. Give each entry its own `name`."
            )
        first[entry.label] = i
    names: list[str] = []
    for i, stage in enumerate(spec.stages):
        where = f"{path}: stages.{i}"
        if stage.name in names:
            raise SpecError(
                f"{where}.name: a stage called {stage.name!r} comes earlier too. Give each stage its own name."
            )
        _check_from(where, stage, names)
        names.append(stage.name)
        _check_params(where, stage, spec)
        _check_training(path, i, stage, spec)
        _check_stage_sweep(path, i, spec)
    _check_all_searched(path, spec)
    return spec


def _check_from(where: str, stage: Stage, earlier: list[str]) -> None:
    if stage.from_ is None:
        return
    if not earlier:
        raise SpecError(
            f"{where}.from: the first stage has no earlier stage to take winners from. Remove `from` here, "
            "or put this stage after the one it should start from."
        )
    name = stage.from_.stage
    if name is not None and name not in earlier:
        hint = difflib.get_close_matches(name, earlier, n=1)
        raise SpecError(
            f"{where}.from.stage: there is no stage {name!r} before this one"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; `from` takes the winners of an earlier stage: {', '.join(earlier)}."
        )


def _check_training(path: Path, i: int, stage: Stage, spec: SweepSpec) -> None:
    for point in grid_points(stage.training):
        try:
            TrainingConfig.model_validate({**spec.training.model_dump(), **point})
        except ValidationError as e:
            raise SpecError(
                format_validation(path, e, ("stages", i, "training"), keys_at=("training",))
            ) from None
    for key, value in stage.training.items():
        if isinstance(value, Space) and key not in stage.params and "training" not in stage.params:
            raise SpecError(
                f"{path}: stages.{i}.training.{key}: a space that stage {stage.name!r} does not search. "
                f"Add {key} to its `params`, or give one value."
            )


def _space_keys(spec: SweepSpec, stage: Stage | None = None) -> set[str]:
    keys = {
        k
        for e in spec.methods
        for section in SECTIONS
        for k, v in getattr(e, section).items()
        if isinstance(v, Space)
    }
    return keys | ({k for k, v in stage.training.items() if isinstance(v, Space)} if stage else set())


def _check_params(where: str, stage: Stage, spec: SweepSpec) -> None:
    known = _space_keys(spec, stage)
    for name in stage.params:
        if name in SECTIONS or name in known:
            continue
        hint = difflib.get_close_matches(name, [*known, *SECTIONS], n=1)
        raise SpecError(
            f"{where}.params: {name!r} is not a grid or space of any method entry"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f". Searchable here: {', '.join(sorted(known)) or 'none'}, or `hparams` / `training` for all of them; "
            "give the values to search as a grid or space in `methods` (or in the stage's `training`)."
        )


def _check_stage_sweep(path: Path, i: int, spec: SweepSpec) -> None:
    """The sweep-file checks of searches and metrics, on the sweep this stage runs."""
    stage = spec.stages[i]
    one = stage_spec(spec, i, None)
    context = f"{path}: stages.{i} ({stage.name}, search: {one.search})"
    for j, entry in enumerate(one.methods):
        check_spaces(context, one, j, entry)
    check_search(context, one)
    problem = metric_problem(one, one.metric, during_training=False)
    if problem:
        field = "metric" if stage.metric else "metric (the sweep's)"
        raise SpecError(f"{path}: stages.{i}.{field}: {problem}. Write one of the metrics a trial reports.")
    if one.scheduler.type != "none":
        metric, _ = scheduler_metric(one)
        problem = metric_problem(one, metric, during_training=True)
        if problem:
            raise SpecError(f"{path}: stages.{i}.scheduler.metric (this stage's scheduler): {problem}.")


def _check_all_searched(path: Path, spec: SweepSpec) -> None:
    """A method entry's space that no stage searches would be held at its default in every stage."""
    for j, entry in enumerate(spec.methods):
        for section in SECTIONS:
            for key, value in getattr(entry, section).items():
                if not isinstance(value, Space):
                    continue
                if not any(section in s.params or key in s.params for s in spec.stages):
                    raise SpecError(
                        f"{path}: methods.{j}.{section}.{key}: a {value.kind} that no stage searches. Add "
                        f"{key!r} (or `{section}`) to a stage's `params`, or give one value."
                    )
