"""Expansion of a sweep spec into trial configs: method entries x grid points x task points x seeds,
and the search plan of random / optuna sweeps (whose trials are drawn while the sweep runs).

A trial config is the plain dict Ray Tune stores as the trial's ``params.json``; ``ablate.trial.config``
parses it into a typed, frozen ``TrialConfig``."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate import losses
from ablate.spec.onpolicy import ON_POLICY, VARIANT_LABELS
from ablate.spec.schema import (
    DataConfig,
    DeepSpeedSection,
    LoraConfig,
    LoraValue,
    MethodEntry,
    Space,
    SweepSpec,
    Value,
    task_points,
)


def deepspeed_settings(spec: SweepSpec) -> dict[str, Any] | None:
    """The trial configs' ``deepspeed`` entry: the section, with the user's JSON file inlined (workers need no file)."""
    if not spec.uses_deepspeed:
        return None
    section = spec.deepspeed or DeepSpeedSection()
    user = json.loads(Path(section.config).read_text(encoding="utf-8")) if section.config else None
    return {**section.model_dump(), "user_config": user}


def grid_points(values: dict[str, Value]) -> list[dict[str, Any]]:
    """Cartesian product of the grid/choice values; fixed values pass through; ranges give both ends
    (only validation sees ranges: grid search refuses them)."""
    keys = list(values)
    options = []
    for k in keys:
        v = values[k]
        if isinstance(v, Space):
            options.append(list(v.values))
        else:
            options.append([v])
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*options)]


def setting_key(hparams: dict[str, Any], training: dict[str, Any], lora: dict[str, Any] | None = None) -> str:
    """A readable, stable name of one setting (hyperparameters, training overrides and a LoRA adapter's
    rank and other non-default fields, e.g. ``beta=2.0,lora.r=8``)."""
    parts = [f"{k}={hparams[k]}" for k in sorted(hparams)] + [f"{k}={training[k]}" for k in sorted(training)]
    if lora is not None:
        parts += [f"lora.{k}={_text(v)}" for k, v in lora.items() if k == "r" or v != LORA_DEFAULTS[k]]
    return ",".join(parts) or "default"


LORA_DEFAULTS = LoraConfig().model_dump()


def _text(value: Any) -> str:
    return "+".join(map(str, value)) if isinstance(value, list) else str(value)


def lora_values(spec: SweepSpec, entry: MethodEntry) -> dict[str, LoraValue] | None:
    """The LoRA fields (values or spaces) of a method entry's trials: ``model.lora`` with the entry's own
    ``lora`` over it; None for full fine-tuning (no ``model.lora`` and no entry ``lora``, or ``lora: false``)."""
    shared = spec.model.lora.values() if spec.model.lora is not None else None
    if entry.lora is False or (entry.lora is None and shared is None):
        return None
    base = shared if shared is not None else dict(LORA_DEFAULTS)
    return {**base, **(entry.lora if isinstance(entry.lora, dict) else {})}


def entry_label(entry: MethodEntry, lora: dict | None) -> str:
    """The entry's label in reports; an unnamed LoRA entry gets ``(LoRA)``, so that a sweep comparing
    full fine-tuning with LoRA keeps them apart."""
    return entry.label if entry.name or lora is None else f"{entry.label} (LoRA)"


def expand(spec: SweepSpec) -> list[dict[str, Any]]:
    """Trial configs: every method entry x its grid points x seeds, in file order."""
    trials = []
    shared = {
        "sweep": spec.name,
        "model": spec.model.model_dump(exclude={"lora"}),  # the adapter is per entry: ``lora`` below
        "data": spec.data.model_dump(),
        "evaluation": spec.evaluation.model_dump(),
        "cache_dir": spec.cache_dir,
        "resources": spec.resources.model_dump(),
        "deepspeed": deepspeed_settings(spec),
        "metric": spec.metric,  # recorded for the report's best-setting rule
        "mode": spec.mode,
        "claims": [c.model_dump(by_alias=True, exclude_none=True) for c in spec.claims],  # for the report
    }
    data = spec.data.model_dump()
    for task, (suffix, on_policy) in itertools.product(task_points(spec.data), data_variants(spec.data)):
        # A swept task knob is part of the setting's name, so the report keeps its values apart.
        knobs = ",".join(f"{k}={task[k]}" for k in spec.data.task_grid)
        for entry in spec.methods:
            lora = lora_values(spec, entry)
            for hp, tr, lo in itertools.product(
                grid_points(entry.hparams), grid_points(entry.training), _lora_points(lora)
            ):
                # Checked and resolved here, once: defaults from the objective's signature, a ratio
                # into gamma; the loss takes them as they are (ablate.losses.registry).
                full_hp = losses.validate_hparams(entry.method, hp)
                setting = setting_key(hp, tr, lo)
                if knobs:
                    setting = knobs if setting == "default" else f"{knobs},{setting}"
                for seed in spec.seeds:
                    trials.append(
                        {
                            **shared,
                            "data": _variant_data(data, task, on_policy),
                            "label": entry_label(entry, lora) + suffix,
                            "method": entry.method,
                            "hparams": full_hp,
                            "setting": setting,
                            # The sweep file's values that `setting` names (a staged sweep carries a
                            # stage's winners on with them; ablate.spec.stages).
                            "point": {"hparams": hp, "training": tr},
                            "reference": entry.reference if losses.needs_reference(entry.method) else None,
                            "training": {**spec.training.model_dump(), **tr},
                            # only with LoRA: a full fine-tuning trial's config (and its config_key in
                            # the report) stays what it was before adapters existed
                            **({"lora": lo} if lo is not None else {}),
                            "seed": seed,
                            "index": len(trials),
                        }
                    )
    return trials


def data_variants(data: DataConfig) -> list[tuple[str, dict | None]]:
    """(label suffix, the trials' ``data.on_policy``) per data arm (``data.on_policy.variants``): an
    off-policy arm trains on the data set's own pairs (no on-policy section, so it shares their caches)."""
    if data.on_policy is None:
        return [("", None)]
    section = data.on_policy.model_dump()
    return [(f" [{VARIANT_LABELS[v]}]", section if v == ON_POLICY else None) for v in data.on_policy.variants]


def _variant_data(data: dict, task: dict, on_policy: dict | None) -> dict:
    """A trial's data section; without on-policy data it has no ``on_policy`` key, so its config (and its
    config_key in the report) is what it was before on-policy data existed."""
    out = {k: v for k, v in data.items() if k != "on_policy"}
    return {**out, "task": task, **({"on_policy": on_policy} if on_policy else {})}


def _lora_points(lora: dict[str, LoraValue] | None) -> list[dict[str, Any] | None]:
    """The grid points of an entry's LoRA fields, each a complete ``LoraConfig``; [None] without LoRA."""
    if lora is None:
        return [None]
    return [LoraConfig.model_validate(p).model_dump() for p in grid_points(lora)]


@dataclass
class SearchEntry:
    """One method entry of a random / optuna sweep: its spaces and how many trials it gets."""

    position: int  # in the sweep file's `methods`
    entry: MethodEntry
    spaces: dict[str, Space]  # "hparams.beta", "training.learning_rate", "lora.r", ... -> its space
    trials: int  # num_samples; one per seed when nothing is searched (a fixed baseline)
    lora: dict[str, LoraValue] | None = None  # the entry's LoRA fields (``lora_values``)

    @property
    def label(self) -> str:
        return entry_label(self.entry, self.lora)


def search_plan(spec: SweepSpec) -> list[SearchEntry]:
    plan = []
    for i, entry in enumerate(spec.methods):
        lora = lora_values(spec, entry)
        sections = {"hparams": entry.hparams, "training": entry.training, "lora": lora or {}}
        spaces = {
            f"{section}.{key}": value
            for section, values in sections.items()
            for key, value in values.items()
            if isinstance(value, Space)
        }
        trials = (spec.num_samples or 1) if spaces else len(spec.seeds)
        plan.append(SearchEntry(i, entry, spaces, trials, lora))
    return plan


def search_order(plan: list[SearchEntry]) -> list[tuple[int, int]]:
    """(plan position, sample number) of each trial in the order they are suggested: entries interleaved,
    so a sweep cut short by a budget or an interruption has tried every method."""
    order = []
    for k in range(max(e.trials for e in plan)):
        order += [(j, k) for j, e in enumerate(plan) if k < e.trials]
    return order


def sampled_seed(spec: SweepSpec, sample_number: int) -> int:
    """Seeds are not searched: draw k of an entry trains with seeds[k mod len(seeds)]."""
    return spec.seeds[sample_number % len(spec.seeds)]


def sampled_trial(
    spec: SweepSpec, entry: SearchEntry, sample: dict[str, Any], sample_number: int, index: int
) -> dict[str, Any]:
    """The trial config of one draw (``sample``: space path -> value), made by ``expand`` like a grid
    trial's. Drawn floats are rounded to 4 significant digits so ``setting`` names the values used."""
    hp, tr, lo = dict(entry.entry.hparams), dict(entry.entry.training), dict(entry.lora or {})
    for path, value in sample.items():
        section, key = path.split(".", 1)
        if isinstance(value, float):
            value = float(f"{value:.4g}")
        {"hparams": hp, "training": tr, "lora": lo}[section][key] = value
    update: dict[str, Any] = {"hparams": hp, "training": tr}
    if entry.lora is not None:
        update["lora"] = lo  # the drawn values over the entry's LoRA fields (``model.lora`` included)
    one = entry.entry.model_copy(update=update)
    trial = expand(spec.model_copy(update={"methods": [one], "seeds": [sampled_seed(spec, sample_number)]}))[
        0
    ]
    trial["index"] = index
    return trial


