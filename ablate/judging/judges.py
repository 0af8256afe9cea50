"""Judges of generated answers, one interface: ``judge.score(prompts, responses) -> scores`` (higher is
better); a policy's answer beats the baseline's on a prompt when its score is higher (docs/judging.md).

* ``builtin:oracle``: the built-in task's exact oracle (``ablate.data.synthetic.oracle_reward``).
* ``builtin:reward-model``: a tiny reward model for the built-in task, trained once on the task's
  length-biased labels (``ablate.judging.reward_model``) and then used like any other reward model.
* A Hugging Face sequence-classification reward model by hub id or local directory (Skywork-Reward
  style: a plain class, score = the first logit; ArmoRM style, with ``trust_remote_code: true`` on
  the judge: its own class, score = ``output.score``). Each prompt/response pair is rendered with the
  judge's own chat template (plain text without one), a duplicated BOS is removed, and inputs longer
  than the judge's ``max_length`` are left-truncated and counted (``truncated``).

``load(spec, context)`` builds one from a ``JudgeSpec`` of the sweep file; ``effective`` lists the
judges a sweep uses (default: the oracle on the built-in task, none elsewhere).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from ablate import models
from ablate.cache import cache_key
from ablate.data import synthetic
from ablate.judging import reward_model
from ablate.spec.evaluation import EvalConfig, JudgeSpec
from ablate.spec.schema import DataConfig

ORACLE, REWARD_MODEL = "builtin:oracle", "builtin:reward-model"


class Judge(Protocol):
    id: str  # the name in metric names: win_rate@<id>
    key: str  # what its scores depend on, for caches (the model's weights, its input limit)
    truncated: int  # inputs cut to the judge's limit so far
    duplicate_bos: int  # inputs whose doubled BOS was removed so far

    def score(self, prompts: list[str], responses: list[str]) -> list[float]: ...


def effective(ev: EvalConfig, data: DataConfig) -> list[JudgeSpec]:
    """The sweep's judges: ``evaluation.judges``, or by default the oracle on the built-in task."""
    if not ev.generate:
        return []
    if ev.judges is not None:
        return list(ev.judges)
    return [JudgeSpec(name=ORACLE)] if oracle_applies(ev, data) else []


def oracle_applies(ev: EvalConfig, data: DataConfig) -> bool:
    """The oracle scores the built-in task's own prompts only."""
    return data.source == "builtin:synthetic" and ev.prompts == "held_out"


class OracleJudge:
    id = key = ORACLE
    truncated = duplicate_bos = 0

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [synthetic.oracle_reward(p, r) for p, r in zip(prompts, responses, strict=True)]


class RewardModelJudge:
    """A sequence-classification reward model (see the module doc), scored in batches of similar lengths."""

    def __init__(self, spec: JudgeSpec, path: str, device: torch.device, judge_id: str | None = None) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if spec.trust_remote_code:
            warnings.warn(f"Loading judge {spec.name} with trust_remote_code=True: its code runs here.", stacklevel=2)
        self.id, self.spec, self.device = judge_id or spec.id, spec, device
        self.key = f"rm:{path}:{spec.max_length}:{_weights_stamp(path)}"
        self.truncated = self.duplicate_bos = 0
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = models.pick_dtype(spec.dtype, device)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=dtype, trust_remote_code=spec.trust_remote_code
        ).to(device)
        self.model.eval().requires_grad_(False)
        if getattr(self.model.config, "pad_token_id", None) is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def encode(self, prompt: str, response: str) -> list[int]:
        ids = reward_model.render(self.tokenizer, prompt, response)
        bos = self.tokenizer.bos_token_id
        if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
            ids = ids[1:]
            self.duplicate_bos += 1
        if len(ids) > self.spec.max_length:  # keep the end: the response the judge is asked about
            ids = ids[-self.spec.max_length :]
            self.truncated += 1
        return ids

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        encoded = [self.encode(p, r) for p, r in zip(prompts, responses, strict=True)]
        return score_ids(self.model, encoded, self.tokenizer.pad_token_id, self.spec.batch_size, self.device)


@torch.no_grad()
def score_ids(model, encoded: list[list[int]], pad: int, batch_size: int, device: torch.device) -> list[float]:
    """Scores of token sequences, left-padded in batches of similar lengths, with position ids that
    skip the padding (so a batched score equals the score of the sequence alone)."""
    scores = [0.0] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in idx], device=device)
        mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in idx], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions)
        value = getattr(out, "score", None)  # ArmoRM-style models return their preference score here
        value = out.logits[:, 0] if value is None else value.reshape(len(idx), -1)[:, 0]
        for i, v in zip(idx, value.float().cpu().tolist(), strict=True):
            scores[i] = v
    return scores


def _weights_stamp(path: str) -> str:
    p = Path(path).expanduser()
    if not p.is_dir():
        return path  # a hub id: its files do not change under a sweep
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in p.iterdir() if f.is_file())
    return cache_key(files)


@dataclass(frozen=True)
class Context:
    """Where judges run and what the built-in reward model is trained from."""

    device: torch.device
    cache_dir: str
    start_path: str  # the SFT start point (the built-in reward model starts from its weights)
    data: dict  # the sweep's data section (the built-in reward model's labels)
    log: object = print
    paths: dict | None = None  # hub judge -> its pinned snapshot directory (ablate.provenance)


def load(spec: JudgeSpec, ctx: Context) -> Judge:
    """The judge a ``JudgeSpec`` names (the built-in reward model is trained first if not cached)."""
    if spec.name == ORACLE:
        return OracleJudge()
    if spec.name == REWARD_MODEL:
        path = reward_model.ensure(ctx.cache_dir, ctx.start_path, ctx.data, log=ctx.log)
        return RewardModelJudge(spec, str(path), ctx.device, judge_id=spec.id)
    return RewardModelJudge(spec, (ctx.paths or {}).get(spec.name, spec.name), ctx.device, judge_id=spec.id)


def check(spec: JudgeSpec, ev: EvalConfig, data: DataConfig) -> str | None:
    """Why ``spec`` cannot judge this sweep (before anything is launched), or None. Hub ids are not
    looked up (offline); a local directory must hold a sequence-classification model and a tokenizer."""
    if spec.name in (ORACLE, REWARD_MODEL):
        if data.source != "builtin:synthetic":
            return f"{spec.name} judges the built-in task only (data.source: builtin:synthetic)"
        if spec.name == ORACLE and ev.prompts != "held_out":
            return "builtin:oracle scores the built-in task's own prompts only (evaluation.prompts: held_out)"
        return None
    path = Path(spec.name).expanduser()
    if not path.exists():
        if models.model_exists(spec.name):
            return None  # a hub id
        return f"{spec.name!r} is not a directory (nor a hub id)"
    if not (path / "config.json").is_file():
        return f"{spec.name} has no config.json (not a model saved with save_pretrained)"
    import json

    config = json.loads((path / "config.json").read_text())
    archs = config.get("architectures") or []
    remote = "AutoModelForSequenceClassification" in (config.get("auto_map") or {})
    if remote and not spec.trust_remote_code and not any(_is_transformers_class(a) for a in archs):
        return f"{spec.name} brings its own model code; set `trust_remote_code: true` on this judge if you trust it"
    if not remote and not any(a.endswith("ForSequenceClassification") for a in archs):
        return (
            f"{spec.name} is a {', '.join(archs) or 'model without architectures'}, not a sequence-classification "
            "reward model (e.g. LlamaForSequenceClassification with num_labels 1)"
        )
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        return f"{spec.name} has no tokenizer files (save the tokenizer with the model)"
    return None


def _is_transformers_class(name: str) -> bool:
    import transformers

    return hasattr(transformers, name)
