"""What the schema alone cannot check: hyperparameters per method, search spaces against the search,
metric names against what trials report, the model directory, a local data file and a DeepSpeed file."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from pydantic import ValidationError

from ablate import losses, metrics
from ablate.data import sources as datasource
from ablate.judging import judges
from ablate.models import is_builtin, model_exists
from ablate.spec.claims import split_arm
from ablate.spec.errors import SpecError, format_validation
from ablate.spec.expand import grid_points, lora_values, search_plan
from ablate.spec.onpolicy_checks import check_on_policy
from ablate.spec.schema import DataConfig, LoraConfig, MethodEntry, Space, SweepSpec, TrainingConfig
from ablate.trial import dsconfig


def check_semantics(path: Path, spec: SweepSpec) -> SweepSpec:
    """What the schema alone cannot check: each method's hyperparameters, the spaces against the search,
    metric names against what trials report, and that the model and data file exist. Returns the spec
    with a user's DeepSpeed file resolved to an absolute path."""
    for i, entry in enumerate(spec.methods):
        for point in grid_points(entry.hparams):
            try:
                losses.validate_hparams(entry.method, point)
            except ValueError as e:
                raise SpecError(
                    f"{path}: methods.{i}.hparams: {e}. Fix the value or remove the key."
                ) from None
        for point in grid_points(entry.training):
            try:
                TrainingConfig.model_validate({**spec.training.model_dump(), **point})
            except ValidationError as e:
                raise SpecError(
                    format_validation(path, e, ("methods", i, "training"), keys_at=("training",))
                ) from None
        if not spec.stages:  # a staged sweep's spaces are checked per stage (ablate.spec.stages)
            check_spaces(path, spec, i, entry)
        _check_lora(path, spec, i, entry)
    if not spec.stages:
        check_search(path, spec)
    _check_judges(path, spec)
    check_on_policy(path, spec)
    _check_metrics(path, spec)
    spec = check_deepspeed(path, spec)
    if not is_builtin(spec.model.name_or_path) and not model_exists(spec.model.name_or_path):
        raise SpecError(
            f"{path}: model.name_or_path: {spec.model.name_or_path!r} is not a model directory (no config.json). "
            "Give a local directory saved with save_pretrained, a hub id, or builtin:tiny."
        )
    _check_data_file(path, spec.data)
    return spec


def check_spaces(path: Path, spec: SweepSpec, i: int, entry: MethodEntry) -> None:
    for section in ("hparams", "training"):
        for key, value in getattr(entry, section).items():
            if not isinstance(value, Space):
                continue
            where = f"{path}: methods.{i}.{section}.{key}"
            if spec.search == "grid" and value.kind not in ("grid", "choice"):
                raise SpecError(
                    f"{where}: a {value.kind} range cannot be enumerated by grid search. "
                    "Use `grid: [...]` or set `search: random` / `search: optuna` with `num_samples`."
                )
            if (
                section == "training"
                and value.kind in ("uniform", "loguniform")
                and TrainingConfig.model_fields[key].annotation is not float
            ):
                raise SpecError(
                    f"{where}: training.{key} takes whole numbers, which a {value.kind} range does not draw. "
                    f"Write `randint: [{int(value.values[0])}, {int(value.values[1])}]` (both ends included)."
                )
            if spec.search != "grid" and value.kind == "grid":
                raise SpecError(
                    f"{where}: `grid` enumerates values for `search: grid`; with `search: {spec.search}` "
                    f"write `choice: {list(value.values)}` to sample among them, or set `search: grid`."
                )


def _check_lora(path: Path, spec: SweepSpec, i: int, entry: MethodEntry) -> None:
    """Every point of an entry's LoRA fields (``model.lora`` and the entry's ``lora``) is a valid adapter,
    and its spaces suit the search, as hyperparameters' do."""
    lora = lora_values(spec, entry)
    if lora is None:
        return
    own = isinstance(entry.lora, dict)
    for point in grid_points(lora):
        try:
            LoraConfig.model_validate(point)
        except ValidationError as e:
            prefix = ("methods", i, "lora") if own else ("model", "lora")
            raise SpecError(format_validation(path, e, prefix, keys_at=("model", "lora"))) from None
    for key, value in lora.items():
        if not isinstance(value, Space):
            continue
        where = f"{path}: " + (f"methods.{i}.lora.{key}" if own and key in entry.lora else f"model.lora.{key}")
        if spec.search == "grid" and value.kind not in ("grid", "choice"):
            raise SpecError(
                f"{where}: a {value.kind} range cannot be enumerated by grid search. Use `grid: [...]` or set "
                "`search: random` / `search: optuna` with `num_samples`."
            )
        if spec.search != "grid" and value.kind == "grid":
            raise SpecError(
                f"{where}: `grid` enumerates values for `search: grid`; with `search: {spec.search}` write "
                f"`choice: {list(value.values)}`, or set `search: grid`."
            )
        if key == "r" and value.kind in ("uniform", "loguniform"):
            raise SpecError(f"{where}: the rank is a whole number; write `randint: [low, high]` or `choice: [...]`.")


def check_search(path: Path, spec: SweepSpec) -> None:
    if spec.data.task_grid and spec.search != "grid":
        raise SpecError(
            f"{path}: data.task_grid: sweeping task knobs needs `search: grid`; run one {spec.search} sweep per "
            "task value instead (set data.task.<knob>)."
        )
    if spec.data.task_grid and not spec.data.source.startswith("builtin:"):
        raise SpecError(f"{path}: data.task_grid: task knobs exist only for data.source: builtin:synthetic.")
    if spec.search == "grid":
        if spec.num_samples is not None:
            raise SpecError(
                f"{path}: num_samples: grid search runs every grid point once per seed, so num_samples "
                "does not apply. Remove it (repeat with `seeds: [0, 1, 2]`), or set `search: random` / "
                "`search: optuna`."
            )
        return
    if spec.order == "file":
        raise SpecError(
            f"{path}: order: `order: file` orders a grid sweep's trials; a {spec.search} search draws its trials "
            "while it runs, method entries in turn. Remove `order`, or set `search: grid`."
        )
    if spec.num_samples is None:
        raise SpecError(
            f"{path}: num_samples: `search: {spec.search}` needs the number of trials per method entry, "
            "e.g. `num_samples: 16`."
        )
    if not any(e.spaces for e in search_plan(spec)):
        raise SpecError(
            f"{path}: search: `search: {spec.search}` but no hyperparameter is a range or choice. Give one, "
            "e.g. `hparams: {beta: {uniform: [1.0, 4.0]}}`, or set `search: grid`."
        )


def _check_judges(path: Path, spec: SweepSpec) -> None:
    """Judges need generations and must apply to the sweep's data; a local judge must be a reward model
    with a tokenizer (hub ids are not looked up); a prompt file must exist and have its field."""
    ev = spec.evaluation
    if ev.judges and not ev.generate:
        raise SpecError(
            f"{path}: evaluation.judges: judges score generations, but `evaluation.generate` is false. "
            "Set `generate: true` or remove the judges."
        )
    for i, judge in enumerate(ev.judges or []):
        problem = judges.check(judge, ev, spec.data)
        if problem:
            raise SpecError(
                f"{path}: evaluation.judges.{i} ({judge.name}): {problem}. Fix the judge's name or settings, "
                "or remove it (judges: builtin:oracle and builtin:reward-model on the built-in task, or a "
                "sequence-classification reward model's hub id or directory)."
            )
    source = Path(ev.prompts).expanduser()
    if ev.prompts == "held_out" or "://" in ev.prompts or source.suffix not in datasource.LOCAL_FORMATS:
        return  # the held-out prompts, or a hub data set / hf:// file (not looked up offline)
    if not source.is_file():
        raise SpecError(
            f"{path}: evaluation.prompts: {ev.prompts!r} does not exist. Give an existing .jsonl/.json/.parquet "
            "file with an instruction field, a hub data set id, or held_out."
        )
    try:
        columns = datasource.file_columns(source)
    except datasource.DataError as e:
        raise SpecError(f"{path}: evaluation.prompts: {e}.") from None
    if ev.prompt_field not in columns:
        raise SpecError(
            f"{path}: evaluation.prompt_field: {ev.prompts} has no field {ev.prompt_field!r}; its fields are "
            f"{columns}. Set `evaluation.prompt_field` to the prompt's field."
        )


def judged_metrics(spec: SweepSpec) -> tuple[str, ...]:
    """``<metric>@<judge>`` for every judge of the sweep (``ablate.metrics.PER_JUDGE``)."""
    ids = [j.id for j in judges.effective(spec.evaluation, spec.data)]
    return tuple(metrics.judge_metric(m, j) for j in ids for m in metrics.PER_JUDGE)


def metric_problem(spec: SweepSpec, metric: str, during_training: bool) -> str | None:
    """Why no trial of this sweep reports ``metric`` (at the time it is needed), or None."""
    judged = judged_metrics(spec)
    if metrics.split_judge_metric(metric):
        if during_training:
            return f"{metric!r} is reported only when a trial ends, so early stopping cannot compare trials on it"
        if metric in judged:
            return None
        _, judge = metrics.split_judge_metric(metric)
        ids = [j.id for j in judges.effective(spec.evaluation, spec.data)]
        return (
            f"no judge {judge!r} in `evaluation.judges` (the sweep's judges: {', '.join(ids) or 'none'}), so no "
            f"trial reports {metric!r}; add the judge or use one of {', '.join(judged) or 'the other metrics'}"
        )
    reported = set(metrics.TRAINING)
    if spec.evaluation.every_steps:
        reported |= set(metrics.PERIODIC_EVAL)
    if during_training:
        if metric in reported:
            return None
        if metric in metrics.PERIODIC_EVAL:
            return (
                f"{metric!r} is reported during training only with held-out evaluation every few steps; "
                "add `evaluation: {every_steps: 10}`"
            )
        if metric in metrics.ALL:
            return (
                f"{metric!r} is reported only when a trial ends, so early stopping cannot compare trials on "
                f"it; use one reported during training: {', '.join(sorted(reported | set(metrics.PERIODIC_EVAL)))}"
                + ("" if spec.evaluation.every_steps else " (reward_* with `evaluation.every_steps`)")
            )
    else:
        if metric in metrics.GENERATION + metrics.ORACLE and not spec.evaluation.generate:
            return f"{metric!r} is reported only with `evaluation.generate: true`"
        if metric in metrics.ORACLE and spec.data.source != "builtin:synthetic":
            return f"{metric!r} needs the built-in task's oracle (`data.source: builtin:synthetic`)"
        if metric in metrics.ALL:
            return None
    hint = difflib.get_close_matches(metric, metrics.ALL + judged, n=1)
    return (
        f"no trial reports {metric!r}"
        + (f" (did you mean {hint[0]!r}?)" if hint else "")
        + f"; metrics: {', '.join(metrics.ALL + judged)}"
    )


def scheduler_metric(spec: SweepSpec) -> tuple[str, str]:
    """The metric and mode the early-stopping scheduler compares trials on."""
    s = spec.scheduler
    metric = s.metric or spec.metric
    mode = s.mode or (spec.mode if metric == spec.metric else metrics.natural_mode(metric))
    return metric, mode


def _check_metrics(path: Path, spec: SweepSpec) -> None:
    problem = metric_problem(spec, spec.metric, during_training=False)
    if problem:
        raise SpecError(f"{path}: metric: {problem}. Write one of the metrics a trial reports.")
    if spec.scheduler.type != "none":
        metric, _ = scheduler_metric(spec)
        problem = metric_problem(spec, metric, during_training=True)
        if problem:
            field = "scheduler.metric" if spec.scheduler.metric else "scheduler.metric (default: `metric`)"
            raise SpecError(f"{path}: {field}: {problem}.")


def _check_data_file(path: Path, data: DataConfig) -> None:
    """Local data (a file, or a save_to_disk directory; also the held-out ``eval_source``) must exist and
    have the prompt/chosen/rejected fields: checked before launching."""
    if data.eval_source is not None and "builtin:" in data.source + data.eval_source:
        raise SpecError(
            f"{path}: data.eval_source: the built-in task has its own held-out pairs; eval_source applies to "
            "your own data. Remove it, or give your training data in data.source."
        )
    for field, source in (("data.source", data.source), ("data.eval_source", data.eval_source)):
        if source is not None:
            _check_local_source(path, field, source, data)


def _check_local_source(path: Path, field: str, source: str, data: DataConfig) -> None:
    kind = datasource.kind(source)
    if kind == "builtin" or kind == "load_dataset":
        return  # the built-in task, or a hub id / data folder (not checked offline)
    if kind == "file" and not Path(source).expanduser().is_file():
        raise SpecError(
            f"{path}: {field}: {source!r} does not exist. Give an existing .jsonl/.json/.parquet file, a "
            "directory written by save_to_disk, a hub dataset id, or builtin:synthetic."
        )
    try:
        if kind == "file":
            columns = datasource.file_columns(Path(source).expanduser())
        else:  # a save_to_disk directory: the columns of the splits the trials read
            columns = _saved_columns(path, field, source, kind, data)
    except datasource.DataError as e:
        raise SpecError(f"{path}: {field}: {e}.") from None
    missing = [f for f in data.fields if f not in columns]
    if missing:
        raise SpecError(
            f"{path}: {field}: {source} has no field(s) {missing}; its fields are {columns}. "
            "Rename the columns, or map them with `data.fields: [<prompt>, <chosen>, <rejected>]`."
        )


def _saved_columns(path: Path, field: str, source: str, kind: str, data: DataConfig) -> list[str]:
    if kind == "saved_table":
        return list(datasource.load_saved(source, None).column_names)
    if field == "data.eval_source":
        splits = {"eval_split": data.eval_split}
    elif data.eval_source is None:
        splits = {"train_split": data.train_split, "eval_split": data.eval_split}
    else:
        splits = {"train_split": data.train_split}
    names = datasource.saved_split_names(source)
    for key, split in splits.items():
        if split not in names:
            raise SpecError(
                f"{path}: data.{key}: {source} (written by save_to_disk) has splits {names} and no {split!r}. "
                f"Set data.{key} to one of them"
                + (", or give the held-out pairs in data.eval_source." if key == "eval_split" else ".")
            )
    columns = [set(datasource.load_saved(source, split).column_names) for split in splits.values()]
    return sorted(set.intersection(*columns))


def check_deepspeed(path: Path, spec: SweepSpec) -> SweepSpec:
    """A user's DeepSpeed file must exist and agree with the sweep. Returns the spec with that file's
    absolute path (trials read it from any working directory)."""
    if spec.deepspeed is None or spec.deepspeed.config is None:
        return spec
    file = Path(spec.deepspeed.config).expanduser()
    file = file if file.is_absolute() else path.parent / file
    try:
        user = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SpecError(
            f"{path}: deepspeed.config: cannot read {file} as a JSON DeepSpeed config ({e}). "
            "Give the path of a JSON file, relative to the sweep file or absolute."
        ) from None
    if not isinstance(user, dict):
        raise SpecError(
            f"{path}: deepspeed.config: {file} is not a JSON object. Write a DeepSpeed config object."
        )
    for i, entry in enumerate(spec.methods):
        for point in grid_points(entry.training):
            training = {**spec.training.model_dump(), **point}
            try:
                dsconfig.merged(
                    user,
                    dsconfig.generated(
                        training, spec.deepspeed.model_dump(), spec.resources.workers, "float32", False
                    ),
                )
            except dsconfig.DeepSpeedConfigError as e:
                raise SpecError(f"{path}: deepspeed.config ({file}, for methods.{i}): {e}.") from None
    section = spec.deepspeed.model_copy(update={"config": str(file.resolve())})
    return spec.model_copy(update={"deepspeed": section})


def check_claims(path: Path, spec: SweepSpec) -> None:
    """Every claim's arms and metric against the sweep (``ablate.spec.claims``); SpecError naming the claim."""
    labels: dict[str, set[str]] = {}
    for entry in spec.methods:
        labels.setdefault(entry.label, set()).update(entry.hparams)
    for i, claim in enumerate(spec.claims):
        where = f"{path}: claims.{i}"
        for arm in claim.arms:
            label, picks = split_arm(arm)
            if label not in labels:
                raise SpecError(f"{where}: {arm!r}: no method labelled {label!r} in this sweep (its labels: "
                                f"{', '.join(sorted(labels))}). Name an arm by its method's label, optionally "
                                "followed by hyperparameters, e.g. 'SimPO gamma=0'.")  # fmt: skip
            unknown = sorted(set(picks) - labels[label])
            if unknown:
                raise SpecError(f"{where}: {arm!r}: {label} sets no hyperparameter {', '.join(unknown)} (it sets: "
                                f"{', '.join(sorted(labels[label])) or 'none'}). Pick settings by those.")  # fmt: skip
        problem = metric_problem(spec, claim.metric, during_training=False)
        if problem:
            raise SpecError(f"{where}.metric: {problem}. A claim compares a metric the trials report.")
