"""A reused worker's caches, in memory and on disk: what every trial of a sweep loads the same.

* Tokenized data: a sweep's trials share one data set, so its tokenization is done once and kept
  on disk (JSON, keyed by the tokenizer's content and the data config) and in the worker's memory.
* Start-point weights: a reused worker process (Ray Tune ``reuse_actors``) keeps the pristine
  start point in memory and hands each trial a copy instead of reading it from disk again; only
  models up to ``MODEL_CACHE_MAX_BYTES`` are kept, so a big model never costs a second copy in RAM.

Ray-free; single-process trials (``ablate.backends.single``) load through these."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ablate import data as data_mod
from ablate import models
from ablate.cache import atomic_write_json, cache_key
from ablate.data import TokenizedPair
from ablate.train import adamw
from ablate.trial_config import TrialConfig

TOKENIZED_VERSION = 2
MODEL_CACHE_MAX_BYTES = 1 << 30



@dataclass(frozen=True)
class Splits:
    """A trial's tokenized data: training and held-out pairs, the held-out rows (their prompts, for
    generation) and the counts of skipped and truncated pairs (``ablate.data.SKIP_COUNTS``)."""

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
    """A local data file's size and modification time, so an edited file is tokenized again."""
    path = Path(data["source"]).expanduser()
    if path.suffix in data_mod.LOCAL_FORMATS and path.is_file():
        st = path.stat()
        return [str(path.resolve()), st.st_size, st.st_mtime_ns]
    return None


def tokenized_splits(cfg: TrialConfig, tokenizer) -> Splits:
    """The trial's data, tokenized once per data set and tokenizer, from this process's memory, the
    sweep's cache directory, or computed (then saved)."""
    d = cfg.data.model_dump()
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
        train_rows, eval_rows = data_mod.load_splits(d, counts)

        def tok(rows):
            return data_mod.tokenize_pairs(
                tokenizer, rows, d["max_length"], d["max_prompt_length"], d["chat_template"], counts
            )

        out = Splits(tok(train_rows), tok(eval_rows), eval_rows, counts)
        atomic_write_json(
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
    model, kept = _pristine(name_or_path, dtype, trust_remote_code)
    if model is None:
        return models.load_model(
            name_or_path, device, dtype, trust_remote_code, trainable, gradient_checkpointing
        )
    return models.prepare((copy.deepcopy(model) if kept else model).to(device), trainable, gradient_checkpointing)


def warm(name_or_path: str, dtypes: list[torch.dtype], trust_remote_code: bool = False) -> None:
    """Load the pristine start point in each of ``dtypes`` into this process's cache now, so that a
    worker's first trial does not count it in its own memory (``ablate.memory``). Only a local model
    directory whose weight files fit the cache is loaded here: a bigger one is never kept, and a hub
    id's size is unknown until it is loaded (its first trial then counts the cached copy)."""
    p = Path(name_or_path).expanduser()
    if trust_remote_code or not p.is_dir():
        return
    weights = sum(f.stat().st_size for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".pt"))
    if weights > MODEL_CACHE_MAX_BYTES // 2:  # float32 may be twice the size on disk (bf16 files)
        return
    for dtype in dict.fromkeys(dtypes):
        _pristine(name_or_path, dtype, trust_remote_code)


_stepped: set[tuple[str, str]] = set()  # (device, compute dtype) this process has taken a step on


def first_step(name_or_path: str, device: torch.device, compute: torch.dtype, trust_remote_code: bool = False) -> None:
    """Once per process, device and compute dtype: a training step of a copy of the cached start point
    on two 8-token rows. What torch sets up on its first forward, backward and fused AdamW step
    (kernels, autograd, lazily imported modules; ~10 MB on CPU, measured) then belongs to the
    worker, as its caches do, instead of to whichever trial it runs first. RNG-neutral: the trial's
    seeded random state is untouched. Skipped for a model the cache does not keep (big ones, where
    those megabytes do not matter)."""
    model, kept = _pristine(name_or_path, models.master_dtype(compute), trust_remote_code)
    if (str(device), str(compute)) in _stepped or model is None or not kept:
        return
    _stepped.add((str(device), str(compute)))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        policy = models.prepare(copy.deepcopy(model).to(device), trainable=True)
        optimizer = adamw(list(policy.parameters()), lr=0.0, weight_decay=0.0)
        ids = torch.zeros((2, 8), dtype=torch.long, device=device)  # token 0 exists in every vocabulary
        with models.compute_context(device, compute):
            loss = policy(input_ids=ids).logits.float().logsumexp(-1).mean()
        loss.backward()
        optimizer.step()


def _pristine(name_or_path: str, dtype: torch.dtype, trust_remote_code: bool) -> tuple[torch.nn.Module | None, bool]:
    """The pristine start point in ``dtype`` and whether this process keeps it (then callers copy it).
    (None, False) for a model that is never kept: one with its own code, or a known big one; a big
    model found on its first load is handed over as loaded, to the caller alone."""
    key = (name_or_path, str(dtype), json.dumps(_weights_stamp(name_or_path), default=str))
    if trust_remote_code or key in _too_big:  # a model's own code may not survive a deep copy
        return None, False
    pristine = _models.get(key)
    if pristine is None:
        model = models.load_model(name_or_path, torch.device("cpu"), dtype, trainable=False)
        if sum(p.numel() * p.element_size() for p in model.parameters()) > MODEL_CACHE_MAX_BYTES:
            _too_big.add(key)
            return model, False
        # One start point per worker is the common case; never hoard several. Its copies in other
        # dtypes stay: under bf16 a DPO trial loads a float32 policy and a bf16 reference.
        for other in [k for k in _models if k[::2] != key[::2]]:
            del _models[other]
        _models[key] = pristine = model
    return pristine, True
