"""One sweep plan, built once from a validated sweep file: what ``--dry-run`` prints and what
``ablate.sweep.tune.run`` runs. Ray-free.

A grid sweep's plan lists every trial config; a random / optuna sweep's lists, per method entry,
what is searched and how many trials it gets (its trials are drawn while the sweep runs). Either
way the plan also holds the early-stopping scheduler, the resources of a trial, the storage and the
sweep's limits, so the CLI hands ``tune.run`` one thing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ablate import spec as spec_mod
from ablate.spec import SearchEntry, SweepSpec
from ablate.sweep import memory_plan
from ablate.sweep import order as order_mod
from ablate.sweep.memory_plan import EntryMemory


@dataclass(frozen=True)
class SchedulerPlan:
    """ASHA early stopping on a metric trials report during training, with the step as its clock."""

    metric: str
    mode: str
    grace_period: int
    reduction_factor: float


@dataclass(frozen=True)
class SweepPlan:
    spec: SweepSpec
    trials: list[dict] = field(default_factory=list)  # grid search: every trial config, in run order
    search: list[SearchEntry] = field(default_factory=list)  # random / optuna: one entry per method entry
    scheduler: SchedulerPlan | None = None
    # What every trial config gets once the sweep's start points are prepared (``with_start``); a
    # searcher adds it to the configs it draws.
    trial_extra: dict = field(default_factory=dict)
    source_file: str | None = None  # the sweep file, for the trackers' sweep-level run (``ablate.tracking``)
    memory: list[EntryMemory] = field(default_factory=list)  # per method entry (ablate.sweep.memory_plan)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def total(self) -> int:
        return sum(e.trials for e in self.search) if self.search else len(self.trials)

    @property
    def resources(self) -> dict:
        return self.spec.resources.model_dump()

    def run_order(self) -> dict:
        """The record of the order trials run in (``ablate.sweep.order``; ``run_order.json`` in storage)."""
        if self.search:
            labels = [e.entry.label for e in self.search]
            return order_mod.search_record(spec_mod.search_order(self.search), labels, self.spec.search)
        return order_mod.grid_record(self.trials, self.spec.order, self.spec.order_seed)

    def with_start(self, start_for: Callable[[dict], dict]) -> SweepPlan:
        """The plan with each trial's start point (``start_for(data section) -> start``, one per task
        config) and the cache directory as an absolute path, which every worker can resolve."""
        cache_dir = str(Path(self.spec.cache_dir).expanduser().resolve())
        trials = [{**t, "start": start_for(t["data"]), "cache_dir": cache_dir} for t in self.trials]
        extra = {}
        if self.search:
            extra = {"start": start_for(self.spec.data.model_dump()), "cache_dir": cache_dir}
        return replace(self, trials=trials, trial_extra={**self.trial_extra, **extra})

    def with_extra(self, extra: dict) -> SweepPlan:
        """The plan with ``extra`` in every trial config (a staged sweep's sweep and stage names)."""
        return replace(
            self, trials=[{**t, **extra} for t in self.trials], trial_extra={**self.trial_extra, **extra}
        )

    def with_data_split(self, split_for: Callable[[dict], dict]) -> SweepPlan:
        """The plan with each trial's ``data_split`` (``split_for(data section)``): where its training
        and held-out pairs come from and how many, recorded in its config."""
        trials = [{**t, "data_split": split_for(t["data"])} for t in self.trials]
        extra = dict(self.trial_extra)
        if self.search:
            extra["data_split"] = split_for(self.spec.data.model_dump())
        return replace(self, trials=trials, trial_extra=extra)

    def data_sections(self) -> list[dict]:
        """The distinct ``data`` sections of the sweep's trials (one per point of ``data.task_grid``)."""
        sections = [t["data"] for t in self.trials] or [self.spec.data.model_dump()]
        return list({json.dumps(d, sort_keys=True, default=str): d for d in sections}.values())


def build(spec: SweepSpec) -> SweepPlan:
    scheduler = None
    if spec.scheduler.type != "none":
        metric, mode = spec_mod.scheduler_metric(spec)
        s = spec.scheduler
        scheduler = SchedulerPlan(metric, mode, s.grace_period, s.reduction_factor)
    memory = memory_plan.sweep_memory(spec)
    if spec.search == "grid":
        trials = order_mod.arrange(spec_mod.expand(spec), spec.order, spec.order_seed)
        return SweepPlan(spec, trials=trials, scheduler=scheduler, memory=memory)
    return SweepPlan(spec, search=spec_mod.search_plan(spec), scheduler=scheduler, memory=memory)
