"""Checks of ``data.on_policy`` before launch (``ablate.spec.checks``): the judge must be able to score
these prompts, a prompt file must exist and have its field, and the sweep must be a grid sweep (its trials are known before
they start, so the build can come first)."""

from __future__ import annotations

from pathlib import Path

from ablate.data import sources as datasource
from ablate.judging import judges
from ablate.spec.errors import SpecError
from ablate.spec.evaluation import EvalConfig
from ablate.spec.schema import SweepSpec


def check_on_policy(path: Path, spec: SweepSpec) -> None:
    cfg = spec.data.on_policy
    if cfg is None:
        return
    # The training split's prompts are the task's own (as the held-out ones are): the built-in judges apply.
    prompts = "held_out" if cfg.prompts == "train" else cfg.prompts
    problem = judges.check(cfg.judge, EvalConfig(prompts=prompts), spec.data)
    if problem:
        raise SpecError(
            f"{path}: data.on_policy.judge ({cfg.judge.name}): {problem}. Give a judge that can score these "
            "answers: builtin:reward-model or builtin:oracle on the built-in task's prompts, or a "
            "sequence-classification reward model's hub id or directory (e.g. RLHFlow/ArmoRM-Llama3-8B-v0.1 "
            "with trust_remote_code: true)."
        )
    if spec.search != "grid" or spec.stages or spec.adaptive_seeds:
        kind = "staged" if spec.stages else "adaptive-seeds" if spec.adaptive_seeds else spec.search
        raise SpecError(
            f"{path}: data.on_policy: on-policy pairs are built for a grid sweep's trials before they start, and a "
            f"{kind} sweep makes its trials later. Use `search: grid` with a list of seeds and without "
            "`stages`, or build the pairs with a grid sweep first and give its pairs file as data.source."
        )
    if cfg.prompts == "train" or "://" in cfg.prompts:
        return
    source = Path(cfg.prompts).expanduser()
    if source.suffix in datasource.LOCAL_FORMATS and not source.is_file():
        raise SpecError(
            f"{path}: data.on_policy.prompts: {cfg.prompts!r} does not exist. Give an existing .jsonl/.json/.parquet "
            "file with a prompt field, a hub data set id, or train (the training split's prompts)."
        )
    if source.is_file():
        try:
            columns = datasource.file_columns(source)
        except datasource.DataError as e:
            raise SpecError(f"{path}: data.on_policy.prompts: {e}.") from None
        if cfg.prompt_field not in columns:
            raise SpecError(
                f"{path}: data.on_policy.prompt_field: {cfg.prompts} has no field {cfg.prompt_field!r}; its "
                f"fields are {columns}. Set data.on_policy.prompt_field to the prompt's field."
            )
