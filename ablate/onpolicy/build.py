"""On-policy preference data (``data.on_policy``), built once per sweep before its trials, as SimPO v0.2
builds it: the start point answers every prompt ``samples`` times (sample k with its own seed), a judge
scores every answer, ``ablate.onpolicy.pick`` keeps the best and the worst as a pair.

* Cached like the precomputed reference: the judged samples under a key of (start point, prompts,
  sampling, judge), the pairs under that key and the pick rule, in ``<cache_dir>/on_policy/<key>/``; a
  later sweep with the same key reuses them, and the trials of every arm read the same file.
* Written in shards of ``shard_size`` prompts, each atomically (``ablate.cache``) and each drawn with seeds
  of its own (sample seed, shard number): a build killed mid-way resumes at the first missing shard and
  ends with the same bytes as one that ran through. ``ABLATE_FAULT="stage=on_policy,index=0,step=K,kind=kill"``
  kills the build right after shard K (1-based) is written (``ablate.faults``; tests).
* Generated in batches with the KV cache (``ablate.trial.evaluate.generate``); on a cluster the shards are
  generated and judged by Ray tasks (``ablate.onpolicy.ray_tasks``), one pass per sweep.
* The pairs file is plain JSONL (``prompt, chosen, rejected, chosen_score, rejected_score, chosen_id,
  rejected_id``...); trials of the on-policy arm train on it (``ablate.data.sources.load_splits``) and are
  evaluated on the data set's own held-out pairs and prompts, as the off-policy arm is.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ablate import faults, progress
from ablate.cache import cache_key
from ablate.data import sources as datasource
from ablate.data import tokens as data_mod
from ablate.onpolicy import pick as onpolicy_pick
from ablate.records import write_bytes, write_json
from ablate.spec.onpolicy import OnPolicyConfig

if TYPE_CHECKING:
    from ablate.sweep.plan import SweepPlan

VERSION = 1
FAULT_STAGE = "on_policy"  # ABLATE_FAULT's stage that targets the build (index 0, step = shard number)
# Shard files sort in shard order; the build's outputs beside them.
SHARD = "shard-{:05d}.jsonl"


@dataclass(frozen=True)
class Job:
    """One build and everything its output depends on."""

    cfg: OnPolicyConfig
    data: dict  # the trials' data section (lengths, chat template, where the prompts come from)
    start_path: str
    cache_dir: str
    model: dict  # the sweep's model section (dtype, trust_remote_code)

    @classmethod
    def of_trial(cls, trial: dict) -> Job:
        cfg = OnPolicyConfig.model_validate({**trial["data"]["on_policy"], "built": None})
        return cls(cfg, trial["data"], trial["start"]["path"], trial["cache_dir"], trial["model"])

    @property
    def new_tokens(self) -> int:
        return self.cfg.generation.max_new_tokens or self.data["max_length"] - self.data["max_prompt_length"]


def prompts_of(job: Job) -> list:
    """The prompts to answer: the training split's distinct prompts (in order), or the prompt field of a
    file / hub data set; the first ``num_prompts``."""
    cfg = job.cfg
    if cfg.prompts == "train":
        train, _ = datasource.load_splits({**job.data, "on_policy": None})
        seen = {json.dumps(r["prompt"], sort_keys=True): r["prompt"] for r in train}
        prompts = list(seen.values())
    else:
        from ablate.judging.generations import load_prompt_texts

        prompts = load_prompt_texts(cfg.prompts, cfg.prompt_field, cfg.prompt_split)
    return prompts[: cfg.num_prompts]


def _judge_key(job: Job) -> object:
    from ablate.judging.judges import ORACLE, REWARD_MODEL, _weights_stamp

    spec = job.cfg.judge
    if spec.name == ORACLE:
        return ORACLE
    if spec.name == REWARD_MODEL:
        from ablate.judging import reward_model

        return [spec.model_dump(), reward_model.model_dir(job.cache_dir, job.start_path, job.data).name]
    return [spec.model_dump(), _weights_stamp(spec.name)]


def samples_key(job: Job, prompts: list) -> str:
    """What the judged samples depend on: start point, prompts, sampling, judge (and the shard layout)."""
    from ablate.judging.judges import _weights_stamp

    c = job.cfg
    return cache_key({
        "v": VERSION, "start": [job.start_path, _weights_stamp(job.start_path)], "prompts": cache_key(prompts),
        "sampling": {"samples": c.samples, "seeds": c.sample_seeds(), **c.generation.model_dump(exclude={"seeds"}),
                     "max_new_tokens": job.new_tokens, "max_prompt_length": job.data["max_prompt_length"],
                     "chat_template": job.data["chat_template"], "dtype": job.model["dtype"]},
        "judge": _judge_key(job), "layout": [c.shard_size, c.batch_size],
    })  # fmt: skip


def pairs_key(job: Job, prompts: list) -> str:
    """The samples' key and the pick rule: the built pairs' name."""
    c = job.cfg
    return cache_key([samples_key(job, prompts), c.pick, c.min_margin, c.dedupe])


def build_dir(job: Job, prompts: list) -> Path:
    return Path(job.cache_dir).expanduser().resolve() / "on_policy" / samples_key(job, prompts)


def shard_seed(seed: int, shard: int) -> int:
    """Sample k of shard s is drawn from its own seed: a shard is the same whether built alone or in a run."""
    return int(cache_key(["on_policy", seed, shard]), 16) % 2**63


class Sampler:
    """The start point and the judge, loaded once per process that builds shards."""

    def __init__(self, job: Job, log=print) -> None:
        from ablate import models
        from ablate.judging import judges

        self.job, self.device = job, models.pick_device()
        trust = job.model.get("trust_remote_code", False)
        self.tokenizer = models.load_tokenizer(job.start_path, trust)
        dtype = models.pick_dtype(job.model.get("dtype", "auto"), self.device)
        self.model = models.load_model(job.start_path, self.device, dtype, trust, trainable=False)
        ctx = judges.Context(self.device, job.cache_dir, job.start_path, job.data, log)
        self.judge = judges.load(job.cfg.judge, ctx)

    def prompt_ids(self, prompts: list) -> list[list[int]]:
        """Prompts as the trials tokenize them (chat template, BOS, kept end)."""
        tok, d = self.tokenizer, self.job.data
        formatted = [data_mod.format_prompt(tok, p, d["chat_template"]) for p in prompts]
        ids = tok(formatted, add_special_tokens=False)["input_ids"] if formatted else []
        return [data_mod._prompt_ids(tok, i, d["max_prompt_length"]) for i in ids]

    def samples(self, prompts: list, shard: int) -> list[list[tuple[str, int]]]:
        """``samples`` answers (text, tokens) per prompt, answer k drawn with seed k's shard seed."""
        from ablate.trial.evaluate import generate

        g = self.job.cfg.generation
        sampling = {"temperature": g.temperature, "top_p": g.top_p, "stop_token_ids": list(g.stop_token_ids)}
        ids = self.prompt_ids(prompts)
        per_seed = []
        for seed in self.job.cfg.sample_seeds():
            torch.manual_seed(shard_seed(seed, shard))
            texts, counts = generate(self.model, self.tokenizer, ids, self.job.new_tokens, self.job.cfg.batch_size,
                                     self.device, sampling)  # fmt: skip
            per_seed.append(list(zip(texts, counts, strict=True)))
        return [list(answers) for answers in zip(*per_seed, strict=True)]  # [prompt][sample]

    def shard(self, prompts: list, shard: int) -> bytes:
        """One shard file: a JSON line per prompt with its judged samples (ids ``<prompt>-<sample>``)."""
        from ablate.judging.generations import prompt_text

        first = shard * self.job.cfg.shard_size
        answers = self.samples(prompts, shard)
        texts = [prompt_text(p) for p in prompts for _ in range(self.job.cfg.samples)]
        scores = self.judge.score(texts, [t for per in answers for t, _ in per])
        seeds, lines = self.job.cfg.sample_seeds(), []
        for i, (prompt, per) in enumerate(zip(prompts, answers, strict=True)):
            row = scores[i * len(seeds) : (i + 1) * len(seeds)]
            samples = [{"id": f"{first + i}-{k}", "seed": seeds[k], "text": t, "tokens": n, "score": s}
                       for k, ((t, n), s) in enumerate(zip(per, row, strict=True))]  # fmt: skip
            lines.append(json.dumps({"prompt_index": first + i, "prompt": prompt, "samples": samples}, sort_keys=True))
        return ("\n".join(lines) + "\n").encode()


# (job, prompts, shard numbers) -> (shard number, shard bytes) as each is done, in any order.
ShardMap = Callable[[Job, list, list[int]], Iterable[tuple[int, bytes]]]


def local_shards(job: Job, prompts: list, pending: list[int], log=print) -> Iterable[tuple[int, bytes]]:
    """Shards built here, one after another, with the model and judge loaded once (not at all if none is due)."""
    if not pending:
        return
    sampler = Sampler(job, log)
    size = job.cfg.shard_size
    for s in pending:
        yield s, sampler.shard(prompts[s * size : (s + 1) * size], s)


def build(job: Job, log=print, shard_map: ShardMap | None = None) -> tuple[Path, dict]:
    """The pairs file and its summary, from the cache or built now (resuming at the first missing shard)."""
    prompts = prompts_of(job)
    folder, key = build_dir(job, prompts), pairs_key(job, prompts)
    pairs_path, summary_path = folder / f"pairs-{key}.jsonl", folder / f"summary-{key}.json"
    if pairs_path.is_file() and summary_path.is_file():
        log(f"On-policy data: reusing {pairs_path}")
        return pairs_path, json.loads(summary_path.read_text())
    n_shards = -(-len(prompts) // job.cfg.shard_size)
    pending = [s for s in range(n_shards) if not (folder / SHARD.format(s)).is_file()]
    log(f"On-policy data: {len(prompts)} prompts x {job.cfg.samples} samples in {n_shards} shards "
        f"({n_shards - len(pending)} already built) -> {folder}")  # fmt: skip
    kill_after = {f.step for f in faults.parse(os.environ.get(faults.ENV, ""))
                  if f.stage == FAULT_STAGE and f.index == 0}  # fmt: skip
    size, t0 = job.cfg.shard_size, time.monotonic()
    with progress.Progress("on-policy data: sampling and judging", len(prompts), "prompts") as shown:
        for s, blob in (shard_map or local_shards)(job, prompts, pending):
            write_bytes(folder / SHARD.format(s), blob)
            shown.advance(len(prompts[s * size : (s + 1) * size]))
            for step in kill_after & {s + 1}:
                faults.fire("kill", step)
    c = job.cfg
    records = (json.loads(line) for s in range(n_shards) for line in _lines(folder / SHARD.format(s)))
    pairs, dropped = onpolicy_pick.pairs_of(records, c.pick, c.min_margin, c.dedupe)
    summary = {**onpolicy_pick.summary(pairs, dropped, len(prompts), c.samples), "judge": c.judge.id,
               "pick": c.pick, "file": str(pairs_path), "build_seconds": round(time.monotonic() - t0, 1)}  # fmt: skip
    if not pairs:
        raise datasource.DataError(
            f"data.on_policy: no pair kept ({onpolicy_pick.describe(summary)}). Lower min_margin, raise the "
            "temperature or the samples, or give more prompts."
        )
    write_bytes(pairs_path, "".join(json.dumps(p, sort_keys=True) + "\n" for p in pairs).encode())
    write_json(summary_path, summary)
    return pairs_path, summary


def _lines(path: Path) -> Iterable[str]:
    """A shard's lines, read one at a time (a paper-scale build's answers do not fit in memory at once)."""
    with path.open(encoding="utf-8") as f:
        yield from f


def attach(plan: SweepPlan, log=print, shard_map: ShardMap | None = None) -> SweepPlan:
    """Build each distinct on-policy data set of the plan's trials once (after ``with_start``) and point
    their data section at it; each records the summary in its ``data_split`` (the report shows it)."""
    built: dict[str, tuple[Path, dict]] = {}
    trials = []
    for t in plan.trials:
        if not (t["data"].get("on_policy") or {}):
            trials.append(t)
            continue
        job = Job.of_trial(t)
        key = cache_key([t["data"], t["start"]["path"]])
        if key not in built:
            built[key] = build(job, log, shard_map)
            log(f"On-policy data: {onpolicy_pick.describe(built[key][1])}")
        path, summary = built[key]
        data = {**t["data"], "on_policy": {**t["data"]["on_policy"], "built": str(path)}}
        split = {**(t.get("data_split") or {}), "train": f"on-policy pairs {path}", "train_pairs": summary["kept"],
                 "on_policy": summary}  # fmt: skip
        trials.append({**t, "data": data, "data_split": split})
    return replace(plan, trials=trials)


def dry_run_lines(plan: SweepPlan, gpu_memory: float | None) -> list[str]:
    """``--dry-run``: the build's size and, with the memory plan, whether generator and judge fit."""
    from ablate.onpolicy.fit import fit_line

    spec, lines = plan.spec, []
    cfg = spec.data.on_policy
    if cfg is None:
        return lines
    job = Job(cfg, spec.data.model_dump(), spec.model.name_or_path, spec.cache_dir, spec.model.model_dump())
    n = _prompt_count(job)
    size = f"{n} prompts" if n is not None else "the prompts (counted when built)"
    tokens = f" = {n * cfg.samples * job.new_tokens:,} tokens at most" if n is not None else ""
    lines.append(f"On-policy data (built once, before the trials; arms: {', '.join(cfg.variants)}): {size} x "
                 f"{cfg.samples} samples x {job.new_tokens} max_new_tokens{tokens}; judge {cfg.judge.id}, pick "
                 f"{cfg.pick}, min_margin {cfg.min_margin:g}, shards of {cfg.shard_size}")  # fmt: skip
    lines.append(fit_line(spec, job.new_tokens, gpu_memory))
    return lines


def _prompt_count(job: Job) -> int | None:
    """The build's prompts when they can be counted before launch (built-in task, local files), else None."""
    cfg, data = job.cfg, job.data
    if cfg.prompts == "train":
        local = data["source"] == "builtin:synthetic" or datasource.is_local(data["source"])
    else:
        local = Path(cfg.prompts).expanduser().is_file()
    if not local:
        return cfg.num_prompts
    try:
        return len(prompts_of(job))
    except (datasource.DataError, OSError):
        return None
