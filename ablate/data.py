"""Preference pairs → token ids with prompt tokens masked out of the labels → padded batches.

Sources: the built-in synthetic task (``builtin:synthetic``), a local JSONL/JSON/Parquet file, a
directory written by ``datasets``' ``save_to_disk``, or a hub dataset id (through ``datasets``); which
rows are trained on and which are held out: ``ablate.datasource``. Rows need ``prompt``, ``chosen`` and ``rejected``
(field names configurable); chosen/rejected may also be chat message lists, as in
UltraFeedback-binarized, in which case the last assistant message is the response.

Bad rows (see docs/reliability.md): a row without a field, with a value that is not text, a file
that is not UTF-8 or not JSON is an error (``DataError``) before any trial starts; a pair with an
empty response or identical responses is skipped, and over-long prompts and responses are
truncated, each counted in the trial's metrics (``SKIP_COUNTS``).
"""

from __future__ import annotations

import codecs
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

IGNORE_INDEX = -100
LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
# Counted (not fatal) problems, reported in every trial's final metrics, over train and held-out pairs.
SKIP_COUNTS = ("skipped_pairs_empty", "skipped_pairs_identical", "truncated_prompts", "truncated_responses")


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


def _is_chat(value) -> bool:
    return isinstance(value, list) and all(
        isinstance(m, dict) and isinstance(m.get("content"), str) for m in value
    )


def read_json_rows(path: Path) -> list[tuple[int, object]]:
    """``(line number, parsed value)`` of a JSON-lines file, or of a ``.json`` file holding one array.

    Strict: bytes that are not UTF-8 and lines that are not JSON are errors naming the line. A UTF-8
    byte-order mark (written by Windows tools and spreadsheet exports) is skipped."""
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path} line {line}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}). "
            "Re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 in.jsonl > out.jsonl`."
        ) from None
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            return list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}: not valid JSON ({e}). Fix the file or write one JSON object per line."
            ) from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path} line {number}: not valid JSON ({e.msg} at column {e.colno}). "
                "Each line must be one JSON object with the prompt and both responses."
            ) from None
    return rows


def check_row(row, where: str, fields: tuple[str, str, str]) -> dict:
    """One raw row -> ``{prompt, chosen, rejected}``, or a ``DataError`` naming the row and field."""
    if not isinstance(row, dict):
        raise DataError(
            f"{where}: a row is a JSON object with fields {list(fields)}, got {type(row).__name__}."
        )
    out = {}
    for name, field in zip(("prompt", "chosen", "rejected"), fields, strict=True):
        value = row.get(field)
        if field not in row or value is None:
            raise DataError(
                f"{where}: field {field!r} is missing (the row has {sorted(row)}). Every row needs "
                f"{', '.join(map(repr, fields))}: fix or remove the row, or map the names with data.fields."
            )
        if not (isinstance(value, str) or _is_chat(value)):
            raise DataError(
                f"{where}: field {field!r} is {type(value).__name__} {str(value)[:40]!r}, not text. "
                "Use a string (or a list of chat messages with string content)."
            )
        out[name] = value if name == "prompt" else _response_text(value)
    return out


def drop_unusable(rows: list[dict], counts: dict | None = None) -> list[dict]:
    """Skip pairs that carry no preference: an empty response, or chosen identical to rejected."""
    kept = []
    for row in rows:
        if not row["chosen"].strip() or not row["rejected"].strip():
            key = "skipped_pairs_empty"
        elif row["chosen"] == row["rejected"]:
            key = "skipped_pairs_identical"
        else:
            kept.append(row)
            continue
        if counts is not None:
            counts[key] = counts.get(key, 0) + 1
    return kept


def load_rows(
    source: str, split: str, fields: tuple[str, str, str] = ("prompt", "chosen", "rejected")
) -> list[dict]:
    """Rows ``{prompt, chosen, rejected}`` from a local file or a hub dataset split."""
    import datasets  # heavy; only needed for non-built-in data

    from ablate import datasource

    path = Path(source).expanduser()
    if path.suffix in (".jsonl", ".json") and path.is_file():
        rows = [check_row(row, f"{path} line {n}", fields) for n, row in read_json_rows(path)]
        if not rows:
            raise DataError(f"{path}: no rows. Give a file with one JSON object per line.")
        return rows
    if path.suffix in LOCAL_FORMATS:
        if not path.is_file():
            raise DataError(f"data file {path} does not exist")
        ds = datasets.load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path), split="train")
    elif datasource.kind(source) in ("saved_splits", "saved_table"):
        ds = datasource.load_saved(source, split)
    else:
        ds = datasets.load_dataset(source, split=split)
    missing = [f for f in fields if f not in ds.column_names]
    if missing:
        raise DataError(
            f"data set {source} has no field(s) {missing}; it has {ds.column_names}. "
            "Rename the columns or set data.fields in the sweep file."
        )
    return [check_row(row, f"{source} row {i}", fields) for i, row in enumerate(ds)]


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


def load_splits(data: dict, counts: dict | None = None) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out rows) for a ``data`` section of a trial config, without unusable pairs
    (``drop_unusable``; ``counts``, if given, receives how many were skipped and why). With built on-policy
    pairs (``data.on_policy.built``, ``ablate.onpolicy``) they are the training rows; the held-out stay."""
    from ablate import synthetic

    built = (data.get("on_policy") or {}).get("built")
    if built:
        _, held_out = load_splits({**data, "on_policy": None}, counts)
        rows = [check_row(row, f"{built} line {n}", ("prompt", "chosen", "rejected")) for n, row in read_json_rows(Path(built))]
        return drop_unusable(rows, counts), held_out

    if data["source"] == "builtin:synthetic":
        task = synthetic.build_task(synthetic.TaskConfig.model_validate(data["task"]))
        return task["train"], task["eval"]
    from ablate import datasource

    fields = tuple(data["fields"])
    read: dict[tuple, list[dict]] = {}  # a single file split in two is read once
    parts = []
    for part in datasource.split_plan(data):
        key = (part.source, part.split)
        if key not in read:
            read[key] = load_rows(part.source, part.split or "train", fields)
        parts.append(part.take(read[key]))
    train, held_out = drop_unusable(parts[0], counts), drop_unusable(parts[1], counts)
    for name, rows in (("training", train), ("held-out", held_out)):
        if not rows:
            raise DataError(
                f"{data['source']}: no usable {name} pairs left after skipping empty and identical "
                "responses. Give pairs whose chosen and rejected responses are non-empty and differ."
            )
    return train, held_out


def validate_local(data: dict) -> dict[str, int] | None:
    """Driver-side check of local data (files or save_to_disk directories) before any trial starts: the
    ``DataError`` a trial would raise, or the counts of pairs that trials will skip. None for built-in
    and hub data."""
    from ablate import datasource

    if not (datasource.is_local(data["source"]) or datasource.is_local(data.get("eval_source"))):
        return None
    counts = {"skipped_pairs_empty": 0, "skipped_pairs_identical": 0}
    train, held_out = load_splits({**data, "on_policy": None}, counts)  # the data set's own pairs
    return {"train_pairs": len(train), "held_out_pairs": len(held_out), **counts}


def file_columns(path: Path) -> list[str]:
    """Field names of a local .jsonl/.json/.parquet data file, read cheaply (first row or schema) so a
    sweep can be checked before launching."""
    import json

    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        if path.suffix == ".jsonl":
            # Only the first row is decoded here; read_json_rows checks every line before launch.
            with path.open("rb") as f:
                first = next((line for line in f if line.removeprefix(codecs.BOM_UTF8).strip()), b"")
            row = json.loads(first.decode("utf-8-sig")) if first else None  # -sig: a byte-order mark is skipped
        else:
            with path.open(encoding="utf-8-sig") as f:
                content = json.load(f)
            row = content[0] if isinstance(content, list) and content else content
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"cannot read {path} ({e})") from None
    if not isinstance(row, dict):
        raise DataError(f"{path} does not hold JSON objects (one preference pair per object)")
    return list(row)
