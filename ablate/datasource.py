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

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ablate.data import LOCAL_FORMATS, DataError

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
