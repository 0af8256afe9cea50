"""Where a data set's pairs come from, and which of them are trained on and which are held out.

A source is the built-in task (``builtin:synthetic``), a local file (``.jsonl``/``.json``/``.parquet``),
a local directory written by ``datasets``' ``save_to_disk`` (a ``DatasetDict`` with splits, or one
``Dataset``), or anything else ``datasets.load_dataset`` takes (a hub id, a folder of data files).

``split_plan`` says, for a trial config's ``data`` section, which source and split give the training
pairs and which the held-out ones:

* ``eval_source`` given: training pairs from ``source``, held-out pairs from ``eval_source`` (each
  source's ``train_split`` / ``eval_split`` if it has splits, else the whole file or table);
* a single file or table without ``eval_source``: its last tenth is held out;
* a source with splits (saved ``DatasetDict``, hub data set): ``train_split`` and ``eval_split``.

The CLI prints the plan and the pair counts (``--dry-run`` too) and every trial records them in its
config as ``data_split`` (``record``), so nothing is held out silently.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class DataError(ValueError):
    """A data set that cannot be used; the message says which field and what to do."""


Kind = Literal["builtin", "file", "saved_splits", "saved_table", "load_dataset"]


def kind(source: str) -> Kind:
    """What ``source`` names (a path with a data file's suffix is a file even if it is missing, so the
    checks can say it does not exist)."""
    if source.startswith("builtin:"):
        return "builtin"
    path = Path(source).expanduser()
    if path.suffix in LOCAL_FORMATS:
        return "file"
    if (path / "dataset_dict.json").is_file():
        return "saved_splits"
    if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
        return "saved_table"
    return "load_dataset"


def is_local(source: str | None) -> bool:
    """A local file or saved directory, read and checked before anything launches."""
    return source is not None and kind(source) in ("file", "saved_splits", "saved_table")


def saved_split_names(path: str | Path) -> list[str]:
    """The splits of a ``DatasetDict`` saved with ``save_to_disk`` (from its ``dataset_dict.json``)."""
    try:
        return list(json.loads((Path(path).expanduser() / "dataset_dict.json").read_text())["splits"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(
            f"{path}: unreadable dataset_dict.json ({e}); save the data set again with save_to_disk"
        ) from None


@dataclass(frozen=True)
class Part:
    """One side of the split: a source, its split (None: the whole file or table) and, for a single
    table split in two, which part of it (``head``: all but the last tenth; ``tail``: the last tenth)."""

    source: str
    split: str | None = None
    part: Literal["all", "head", "tail"] = "all"

    def describe(self) -> str:
        where = self.source + (f" split {self.split!r}" if self.split else "")
        return {
            "all": where,
            "head": f"{where} without its last tenth",
            "tail": f"the last tenth of {where}",
        }[self.part]

    def take(self, rows: list) -> list:
        if self.part == "all":
            return rows
        n_eval = max(1, len(rows) // 10)
        return rows[:-n_eval] if self.part == "head" else rows[-n_eval:]


def _whole(source: str, split: str) -> Part:
    return Part(source, split if kind(source) in ("saved_splits", "load_dataset") else None)


def split_plan(data: dict) -> tuple[Part, Part]:
    """(training part, held-out part) of a ``data`` section (not for the built-in task)."""
    source, eval_source = data["source"], data.get("eval_source")
    train_split, eval_split = data.get("train_split", "train"), data.get("eval_split", "test")
    if eval_source:
        return _whole(source, train_split), _whole(eval_source, eval_split)
    if kind(source) in ("file", "saved_table"):
        return Part(source, None, "head"), Part(source, None, "tail")
    return Part(source, train_split), Part(source, eval_split)


def record(data: dict, counts: dict | None = None) -> dict:
    """What a trial records as ``data_split``: where its training and held-out pairs come from and, when
    known before launch (built-in task, local data), how many there are after skipping unusable pairs."""
    if data["source"].startswith("builtin:"):
        task = data["task"]
        return {"train": f"{data['source']} train", "held_out": f"{data['source']} eval",
                "train_pairs": task["n_train"], "held_out_pairs": task["n_eval"]}  # fmt: skip
    train, held_out = split_plan(data)
    counts = counts or {}
    return {"train": train.describe(), "held_out": held_out.describe(),
            "train_pairs": counts.get("train_pairs"), "held_out_pairs": counts.get("held_out_pairs")}  # fmt: skip


def describe(split: dict) -> str:
    """One line for the CLI: ``train: <where> (N pairs); held out: <where> (M pairs)``."""

    def n(key: str) -> str:
        return f" ({split[key]} pairs)" if split.get(key) is not None else " (counted when trials load it)"

    return f"train: {split['train']}{n('train_pairs')}; held out: {split['held_out']}{n('held_out_pairs')}"


def load_saved(path: str, split: str | None):
    """A ``save_to_disk`` directory's table (``split`` of a ``DatasetDict``), memory-mapped by ``datasets``."""
    import datasets

    ds = datasets.load_from_disk(str(Path(path).expanduser()))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(
                f"{path} has splits {list(ds)} and no {split!r}. Set data.train_split / data.eval_split to "
                "one of them, or give the held-out pairs in data.eval_source"
            )
        return ds[split]
    return ds


# --- reading rows ------------------------------------------------------------------------------


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
    elif kind(source) in ("saved_splits", "saved_table"):
        ds = load_saved(source, split)
    else:
        ds = datasets.load_dataset(source, split=split)
    missing = [f for f in fields if f not in ds.column_names]
    if missing:
        raise DataError(
            f"data set {source} has no field(s) {missing}; it has {ds.column_names}. "
            "Rename the columns or set data.fields in the sweep file."
        )
    return [check_row(row, f"{source} row {i}", fields) for i, row in enumerate(ds)]


def load_splits(data: dict, counts: dict | None = None) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out rows) for a ``data`` section of a trial config, without unusable pairs
    (``drop_unusable``; ``counts``, if given, receives how many were skipped and why). With built on-policy
    pairs (``data.on_policy.built``, ``ablate.onpolicy.build``) they are the training rows; the held-out stay."""
    from ablate.data import synthetic

    built = (data.get("on_policy") or {}).get("built")
    if built:
        _, held_out = load_splits({**data, "on_policy": None}, counts)
        rows = [check_row(row, f"{built} line {n}", ("prompt", "chosen", "rejected")) for n, row in read_json_rows(Path(built))]
        return drop_unusable(rows, counts), held_out

    if data["source"] == "builtin:synthetic":
        task = synthetic.build_task(synthetic.TaskConfig.model_validate(data["task"]))
        return task["train"], task["eval"]
    fields = tuple(data["fields"])
    read: dict[tuple, list[dict]] = {}  # a single file split in two is read once
    parts = []
    for part in split_plan(data):
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
    if not (is_local(data["source"]) or is_local(data.get("eval_source"))):
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
