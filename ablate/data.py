"""Preference pairs → token ids with prompt tokens masked out of the labels → padded batches.

Sources: the built-in synthetic task (``builtin:synthetic``), a local JSONL/JSON/Parquet file,
or a hub dataset id (through ``datasets``). Rows need ``prompt``, ``chosen`` and ``rejected``
(field names configurable); chosen/rejected may also be chat message lists, as in
UltraFeedback-binarized, in which case the last assistant message is the response.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

IGNORE_INDEX = -100
LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class DataError(ValueError):
    """A data set that cannot be used; the message says which field and what to do."""


@dataclass
class TokenizedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


def _response_text(value) -> str:
    if isinstance(value, list):  # chat format: the response is the last assistant turn
        turns = [m for m in value if isinstance(m, dict) and m.get("role") == "assistant"]
        if not turns:
            raise DataError("a chat-format response has no assistant message")
        return str(turns[-1].get("content", ""))
    return value


def load_rows(
    source: str, split: str, fields: tuple[str, str, str] = ("prompt", "chosen", "rejected")
) -> list[dict]:
    """Rows ``{prompt, chosen, rejected}`` from a local file or a hub dataset split."""
    import datasets  # heavy; only needed for non-built-in data

    path = Path(source).expanduser()
    if path.suffix in LOCAL_FORMATS:
        if not path.is_file():
            raise DataError(f"data file {path} does not exist")
        ds = datasets.load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path), split="train")
    else:
        ds = datasets.load_dataset(source, split=split)
    missing = [f for f in fields if f not in ds.column_names]
    if missing:
        raise DataError(
            f"data set {source} has no field(s) {missing}; it has {ds.column_names}. "
            "Rename the columns or set data.fields in the sweep file."
        )
    p, c, r = fields
    return [
        {"prompt": row[p], "chosen": _response_text(row[c]), "rejected": _response_text(row[r])} for row in ds
    ]


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
    tokenizer, rows: list[dict], max_length: int, max_prompt_length: int, use_chat_template: bool = False
) -> list[TokenizedPair]:
    prompts = _encode(tokenizer, [format_prompt(tokenizer, row["prompt"], use_chat_template) for row in rows])
    chosen = _encode(tokenizer, [row["chosen"] for row in rows])
    rejected = _encode(tokenizer, [row["rejected"] for row in rows])
    out = []
    for p, c, r in zip(prompts, chosen, rejected, strict=True):
        prompt = _prompt_ids(tokenizer, p, max_prompt_length)
        budget = max_length - len(prompt)
        out.append(
            TokenizedPair(prompt, _response_ids(tokenizer, c, budget), _response_ids(tokenizer, r, budget))
        )
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


def load_splits(data: dict) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out rows) for a ``data`` section of a trial config."""
    from ablate import synthetic

    if data["source"] == "builtin:synthetic":
        task = synthetic.build_task(synthetic.TaskConfig.model_validate(data["task"]))
        return task["train"], task["eval"]
    fields = tuple(data["fields"])
    path = Path(data["source"]).expanduser()
    if path.suffix in LOCAL_FORMATS:
        rows = load_rows(data["source"], "train", fields)
        n_eval = max(1, len(rows) // 10)  # a single file: its last tenth is held out
        return rows[:-n_eval], rows[-n_eval:]
    return load_rows(data["source"], data["train_split"], fields), load_rows(
        data["source"], data["eval_split"], fields
    )
