"""A reused worker's caches, in memory and on disk: what every trial of a sweep loads the same.

* Tokenized data: a sweep's trials share one data set, so its tokenization is done once and kept
  on disk (JSON, keyed by the tokenizer's content and the data config) and in the worker's memory.
* Start-point weights: a reused worker process (Ray Tune ``reuse_actors``) keeps the pristine
  start point in memory and hands each trial a copy instead of reading it from disk again; only
  models up to ``MODEL_CACHE_MAX_BYTES`` are kept, so a big model never costs a second copy in RAM.

Ray-free; single-process trials (``ablate.trial.backends.single``) load through these."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ablate import models, progress
from ablate.cache import cache_key
from ablate.data import sources as datasource
from ablate.data import tokens as data_mod
from ablate.data.tokens import TokenizedPair
from ablate.records import write_json
from ablate.trial.config import TrialConfig

TOKENIZED_VERSION = 2
MODEL_CACHE_MAX_BYTES = 1 << 30
TOKENIZE_CHUNK = 4096  # pairs per tokenizer call: progress is shown between chunks



@dataclass(frozen=True)
class Splits:
    """A trial's tokenized data: training and held-out pairs, the held-out rows (their prompts, for
    generation) and the counts of skipped and truncated pairs (``ablate.data.tokens.SKIP_COUNTS``)."""

    train: list[TokenizedPair]
    held_out: list[TokenizedPair]
    held_out_rows: list[dict]
    counts: dict[str, int]


_tokenized: dict[str, Splits] = {}
_models: dict[tuple, torch.nn.Module] = {}
_too_big: set[tuple] = set()


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything that decides the token ids: vocabulary, rules, special tokens, template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    extra = json.dumps(
        [tokenizer.bos_token_id, tokenizer.eos_token_id, getattr(tokenizer, "chat_template", None)],
        default=str,
    )
    return hashlib.sha256((body + extra).encode()).hexdigest()[:16]


def _source_stamp(data: dict) -> object:
    """Local data files' sizes and modification times (the held-out file's and a save_to_disk
    directory's files too), so edited data is tokenized again."""
    stamps = []
    for source in (data["source"], data.get("eval_source")):
        path = Path(source).expanduser() if source else None
        if path is None or not (path.is_file() or path.is_dir()):
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        stamps += [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    return stamps or None


def tokenized_splits(cfg: TrialConfig, tokenizer) -> Splits:
    """The trial's data, tokenized once per data set and tokenizer, from this process's memory, the
    sweep's cache directory, or computed (then saved)."""
    d = cfg.data.model_dump()
    if cfg.data.on_policy is not None and not cfg.data.on_policy.built:  # never the own pairs under that label
        raise datasource.DataError("data.on_policy: the on-policy pairs were not built (ablate.run builds them first)")
    key = cache_key(
        {
            "v": TOKENIZED_VERSION,
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "data": d,
            "file": _source_stamp(d),
        }
    )
    if key in _tokenized:
        return _copy(_tokenized[key])
    path = Path(cfg.cache_dir).expanduser() / "tokenized" / f"{key}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        out = Splits(_pairs(saved["train"]), _pairs(saved["eval"]), saved["eval_rows"], saved["counts"])
    else:
        counts = dict.fromkeys(data_mod.SKIP_COUNTS, 0)
        train_rows, eval_rows = datasource.load_splits(d, counts)

        def tok(rows: list[dict], name: str) -> list[TokenizedPair]:
            pairs: list[TokenizedPair] = []
            with progress.Progress(f"tokenizing the {name} pairs", len(rows), "pairs") as shown:
                for s in range(0, len(rows), TOKENIZE_CHUNK):
                    chunk = rows[s : s + TOKENIZE_CHUNK]
                    pairs += data_mod.tokenize_pairs(
                        tokenizer, chunk, d["max_length"], d["max_prompt_length"], d["chat_template"], counts
                    )
                    shown.advance(len(chunk))
            return pairs

        out = Splits(tok(train_rows, "training"), tok(eval_rows, "held-out"), eval_rows, counts)
        write_json(
            path, {"train": _lists(out.train), "eval": _lists(out.held_out), "eval_rows": eval_rows, "counts": counts}
        )
    _tokenized[key] = out
    return _copy(out)


def _copy(splits: Splits) -> Splits:
    return replace(splits, counts=dict(splits.counts))  # a trial may add to its counts


def _lists(pairs: list[TokenizedPair]) -> list[list[list[int]]]:
    return [[p.prompt_ids, p.chosen_ids, p.rejected_ids] for p in pairs]


def _pairs(lists: list[list[list[int]]]) -> list[TokenizedPair]:
    return [TokenizedPair(*triple) for triple in lists]


def _weights_stamp(path: str) -> object:
    p = Path(path).expanduser()
    if not p.is_dir():
        return path  # a hub id: its files live in the hub cache, which does not change under a sweep
    return sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in p.iterdir() if f.is_file())


def start_point_model(
    name_or_path: str,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    trainable: bool = True,
    gradient_checkpointing: bool = False,
) -> torch.nn.Module:
    """``ablate.models.load_model`` of the start point, from a pristine copy kept in this process when
    the model is small (a reused worker reads it from disk once, not once per trial)."""
    key = (name_or_path, str(dtype), json.dumps(_weights_stamp(name_or_path), default=str))
    if trust_remote_code or key in _too_big:  # a model's own code may not survive a deep copy
        return models.load_model(
            name_or_path, device, dtype, trust_remote_code, trainable, gradient_checkpointing
        )
    pristine = _models.get(key)
    if pristine is None:
        model = models.load_model(name_or_path, torch.device("cpu"), dtype, trainable=False)
        if sum(p.numel() * p.element_size() for p in model.parameters()) > MODEL_CACHE_MAX_BYTES:
            _too_big.add(key)
            return models.prepare(model.to(device), trainable, gradient_checkpointing)
        # One start point per worker is the common case; never hoard several. Its copies in other
        # dtypes stay: under bf16 a DPO trial loads a float32 policy and a bf16 reference.
        for other in [k for k in _models if k[::2] != key[::2]]:
            del _models[other]
        _models[key] = pristine = model
    return models.prepare(copy.deepcopy(pristine).to(device), trainable, gradient_checkpointing)
