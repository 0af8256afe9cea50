"""What a trial generates on, how, and the baseline it is judged against (docs/judging.md).

* The evaluation prompts: the held-out pairs' prompts (default), or the instruction field of a local
  JSONL/JSON/Parquet file, an ``hf://`` file or a hub data set (``evaluation.prompts``), the first
  ``evaluation.num_prompts`` of them, formatted and truncated as the training prompts are.
* The settings (``evaluation.generation``): greedy or sampled (temperature, top_p), the token budget,
  stop token ids, a sampling seed shared by every trial and the baseline.
* The baseline: the start point's generations on the same prompts with the same settings, produced
  once (by the driver for the built-in task, else by the first trial that needs them) and cached
  under a key of the start point, the prompts' token ids and the settings.
* Collapse diagnostics of a generation set: repeated 4-grams, distinct-2, answers cut at the budget.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ablate import records
from ablate.cache import cache_key
from ablate.data import sources as datasource
from ablate.data import tokens as data_mod
from ablate.records import write_json

if TYPE_CHECKING:
    from ablate.spec.evaluation import EvalConfig
    from ablate.trial.backends import Backend
    from ablate.trial.config import TrialConfig
    from ablate.trial.worker_cache import Splits

BASELINE_VERSION = 2
HELD_OUT = "held_out"


@dataclass(frozen=True)
class GenerationSet:
    """Generations on the evaluation prompts: the prompt texts (before any chat template), the answers
    and their token counts (stop token excluded)."""

    prompts: list[str]
    texts: list[str]
    lengths: list[int]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> GenerationSet:
        return cls(list(obj["prompts"]), list(obj["texts"]), [int(n) for n in obj["lengths"]])


def sampling(ev: EvalConfig) -> dict:
    """``ablate.trial.evaluate.generate``'s sampling settings from the evaluation section."""
    g = ev.generation
    out: dict = {"temperature": g.temperature, "stop_token_ids": list(g.stop_token_ids)}
    if g.temperature > 0:
        out["top_p"] = g.top_p
    return out


def prompt_text(prompt) -> str:
    """A prompt as a judge reads it: the text, or a chat prompt's last user message."""
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1]) if users else ""
    return str(prompt)


def load_prompt_texts(source: str, field: str, split: str = "eval") -> list[str]:
    """The ``field`` of every row of a local file, an ``hf://`` file or a hub data set's ``split``."""
    path = Path(source).expanduser()
    if path.suffix in (".jsonl", ".json") and path.is_file():
        rows = [row for _, row in datasource.read_json_rows(path)]
    else:
        import datasets  # heavy; only for prompts that are not a local JSON file

        if path.suffix in datasource.LOCAL_FORMATS or source.startswith("hf://"):
            kind = datasource.LOCAL_FORMATS.get(Path(source).suffix, "json")
            rows = list(datasets.load_dataset(kind, data_files=source, split="train"))
        else:
            rows = list(datasets.load_dataset(source, split=split))
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get(field), str | list):
            raise datasource.DataError(
                f"{source} row {n}: no text field {field!r} (evaluation.prompt_field); its fields are "
                f"{sorted(row) if isinstance(row, dict) else type(row).__name__}. Set evaluation.prompt_field."
            )
    return [prompt_text(row[field]) for row in rows]


def eval_prompts(cfg: TrialConfig, splits: Splits, tokenizer) -> tuple[list[str], list[list[int]]]:
    """The evaluation prompts as texts (for judges) and as the token ids the policy continues."""
    ev, d = cfg.evaluation, cfg.data
    if ev.prompts == HELD_OUT:
        rows = splits.held_out_rows[: ev.num_prompts]
        return [prompt_text(r["prompt"]) for r in rows], [p.prompt_ids for p in splits.held_out[: ev.num_prompts]]
    texts = load_prompt_texts(ev.prompts, ev.prompt_field, ev.prompt_split)[: ev.num_prompts]
    formatted = [data_mod.format_prompt(tokenizer, t, d.chat_template) for t in texts]
    ids = tokenizer(formatted, add_special_tokens=False)["input_ids"] if formatted else []
    return texts, [data_mod._prompt_ids(tokenizer, i, d.max_prompt_length) for i in ids]


def generate_set(
    backend: Backend, model, tokenizer, prompts: list[str], prompt_ids: list[list[int]], ev: EvalConfig
) -> GenerationSet:
    """``model``'s answers to the prompts with the sweep's settings (a collective on multi-worker trials)."""
    torch.manual_seed(ev.generation.seed)  # the same draws for every trial and the baseline
    texts, counts = backend.generate(model, tokenizer, prompt_ids, ev.new_tokens, ev.batch_size, sampling(ev))
    return GenerationSet(list(prompts), texts, counts)


def baseline_path(cache_dir: str, start_path: str, prompt_ids: list[list[int]], ev: EvalConfig) -> Path:
    key = cache_key({
        "v": BASELINE_VERSION, "start": start_path, "prompts": cache_key(prompt_ids),
        "generation": ev.generation.model_dump(), "max_new_tokens": ev.new_tokens,
    })  # fmt: skip
    return Path(cache_dir).expanduser() / "baselines" / f"{key}.json"


def read_baseline(path: str | Path) -> GenerationSet:
    return GenerationSet.from_json(json.loads(Path(path).read_text()))


def baseline(
    cfg: TrialConfig, backend: Backend, tokenizer, prompts: list[str], prompt_ids: list[list[int]], start_model=None
) -> tuple[GenerationSet, Path]:
    """The start point's generations on the prompts, from the cache or generated now (each worker on its
    share) and written by the main worker: by ``start_model`` (a policy before its first step is the start
    point), else by the start point loaded for it. Returns the set and its file."""
    path = baseline_path(cfg.cache_dir, cfg.start.path, prompt_ids, cfg.evaluation)
    if backend.all_true(path.is_file()):
        return read_baseline(path), path
    model = start_model if start_model is not None else backend.load_reference(cfg)
    out = generate_set(backend, model, tokenizer, prompts, prompt_ids, cfg.evaluation)
    del model
    if backend.is_main:
        write_json(path, out.to_json())
    backend.barrier()
    return out, path


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def collapse_metrics(texts: list[str], lengths: list[int], max_new_tokens: int) -> dict[str, float]:
    """Degeneration signs of a generation set, on whitespace-separated words: the share of answers with
    a 4-gram that occurs twice or more, distinct-2 (distinct bigrams / bigrams, over all answers), and
    the share of answers that used the whole token budget (no stop token)."""
    words = [t.split() for t in texts]
    repeated = [len(set(g)) < len(g) for g in (ngrams(w, 4) for w in words)]
    bigrams = [b for w in words for b in ngrams(w, 2)]
    n = max(len(texts), 1)
    return {
        "repeat_4gram_rate": sum(repeated) / n,
        "distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else 0.0,
        "hit_max_tokens_rate": sum(c >= max_new_tokens for c in lengths) / n,
    }


SWEEP_BASELINES = "baselines"  # <sweep>/baselines/<key>.json: the baselines its trials were judged against


def publish_baselines(sweep_dir: str | Path) -> list[Path]:
    """Copy the baseline generations a local sweep's trials were judged against (their cache files, named
    in each ``heldout.json``) into ``<sweep>/baselines/``, so the results hold everything that re-judging
    and the AlpacaEval export need. Returns the files written."""
    sweep = Path(sweep_dir)
    written: list[Path] = []
    for heldout in sweep.glob(f"*/{records.HELDOUT_FILE}"):
        try:
            gen = json.loads(heldout.read_text()).get("generations") or {}
        except (OSError, ValueError):
            continue
        source = gen.get("baseline_file")
        target = sweep / SWEEP_BASELINES / f"{gen.get('baseline_key')}.json"
        if source and not target.is_file() and Path(source).is_file():
            write_json(target, json.loads(Path(source).read_text()))
            written.append(target)
    return written


def find_baseline(sweep_dir: str | Path, generations: dict) -> GenerationSet | None:
    """The baseline of a trial's stored generations: from the sweep's copy, else from the cache file."""
    for path in (Path(sweep_dir) / SWEEP_BASELINES / f"{generations.get('baseline_key')}.json",
                 Path(str(generations.get("baseline_file") or "")).expanduser()):  # fmt: skip
        if path.is_file():
            return read_baseline(path)
    return None
