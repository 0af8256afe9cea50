"""Preference pairs → token ids with prompt tokens masked out of the labels → padded batches.

Sources: the built-in synthetic task (``builtin:synthetic``), a local JSONL/JSON/Parquet file, a
directory written by ``datasets``' ``save_to_disk``, or a hub dataset id (through ``datasets``); which
rows are trained on and which are held out: ``ablate.data.sources``. Rows need ``prompt``, ``chosen`` and ``rejected``
(field names configurable); chosen/rejected may also be chat message lists, as in
UltraFeedback-binarized, in which case the last assistant message is the response.

Bad rows (see docs/reliability.md): a row without a field, with a value that is not text, a file
that is not UTF-8 or not JSON is an error (``DataError``) before any trial starts; a pair with an
empty response or identical responses is skipped, and over-long prompts and responses are
truncated, each counted in the trial's metrics (``SKIP_COUNTS``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100
# Counted (not fatal) problems, reported in every trial's final metrics, over train and held-out pairs.
SKIP_COUNTS = ("skipped_pairs_empty", "skipped_pairs_identical", "truncated_prompts", "truncated_responses")


@dataclass
class TokenizedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


def format_prompt(tokenizer, prompt, use_chat_template: bool) -> str:
    if isinstance(prompt, list) or (use_chat_template and getattr(tokenizer, "chat_template", None)):
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt


def tokenize_prompt(tokenizer, prompt: str, max_prompt_length: int) -> list[int]:
    return _prompt_ids(tokenizer, tokenizer(prompt, add_special_tokens=False)["input_ids"], max_prompt_length)


def _prompt_ids(tokenizer, ids: list[int], max_prompt_length: int) -> list[int]:
    if tokenizer.bos_token_id is not None and (not ids or ids[0] != tokenizer.bos_token_id):
        ids = [tokenizer.bos_token_id] + ids
    return ids[-max_prompt_length:]  # an over-long prompt keeps its end, next to the response


def tokenize_response(tokenizer, response: str, budget: int) -> list[int]:
    return _response_ids(tokenizer, tokenizer(response, add_special_tokens=False)["input_ids"], budget)


def _response_ids(tokenizer, ids: list[int], budget: int) -> list[int]:
    return (ids + [tokenizer.eos_token_id])[: max(budget, 1)]


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of many texts in one call (the fast tokenizers encode a batch in Rust)."""
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def tokenize_pairs(
    tokenizer,
    rows: list[dict],
    max_length: int,
    max_prompt_length: int,
    use_chat_template: bool = False,
    counts: dict | None = None,
) -> list[TokenizedPair]:
    """Token ids of each pair; ``counts`` (if given) receives ``truncated_prompts`` and ``truncated_responses``."""
    prompts = _encode(tokenizer, [format_prompt(tokenizer, row["prompt"], use_chat_template) for row in rows])
    chosen = _encode(tokenizer, [row["chosen"] for row in rows])
    rejected = _encode(tokenizer, [row["rejected"] for row in rows])
    out = []
    for p, c, r in zip(prompts, chosen, rejected, strict=True):
        prompt = _prompt_ids(tokenizer, p, max_prompt_length)
        budget = max_length - len(prompt)
        pair = TokenizedPair(prompt, _response_ids(tokenizer, c, budget), _response_ids(tokenizer, r, budget))
        if counts is not None:
            full_prompt = _prompt_ids(tokenizer, p, 10**9)
            counts["truncated_prompts"] = counts.get("truncated_prompts", 0) + (
                len(full_prompt) > len(prompt)
            )
            cut = any(ids[-1] != tokenizer.eos_token_id for ids in (pair.chosen_ids, pair.rejected_ids))
            counts["truncated_responses"] = counts.get("truncated_responses", 0) + cut
        out.append(pair)
    return out


def _pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    return torch.tensor([s + [value] * (width - len(s)) for s in seqs], dtype=torch.long)


def collate_sequences(
    prompts: list[list[int]], responses: list[list[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (prompt and padding = -100)."""
    seqs = [p + r for p, r in zip(prompts, responses, strict=True)]
    labels = [[IGNORE_INDEX] * len(p) + r for p, r in zip(prompts, responses, strict=True)]
    input_ids = _pad(seqs, pad_id)
    return {
        "input_ids": input_ids,
        "attention_mask": _pad([[1] * len(s) for s in seqs], 0),
        "labels": _pad(labels, IGNORE_INDEX),
    }


def collate_pairs(pairs: list[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """One batch of 2B rows: the B chosen sequences first, then the B rejected ones."""
    prompts = [p.prompt_ids for p in pairs] * 2
    responses = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    return collate_sequences(prompts, responses, pad_id)


def batch_indices(
    lengths: list[int], batch_size: int, seed: int, group_by_length: bool = True
) -> list[list[int]]:
    """Shuffled batches; with grouping, each window of 32 batches is sorted by length to cut padding."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        window = batch_size * 32
        order = [
            i
            for s in range(0, len(order), window)
            for i in sorted(order[s : s + window], key=lengths.__getitem__)
        ]
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    rng.shuffle(batches)  # keep length groups but not a long-to-short curriculum
    return batches
