"""The memory plan's estimate (``ablate.sweep.memory_plan``) against the measured peak of the same trials on CPU.

Each trial runs in one process on a start point built for it (a Llama of the given shape with a
32,000-word vocabulary, random weights, saved with ``save_pretrained``) and a local .jsonl whose
pairs all reach ``max_length`` (prompts cut to ``max_prompt_length``, both responses to the rest),
as long real preference data does: the estimate's micro-batch is the longest one.

Measured: the growth of the process's peak resident memory (``VmHWM``, reset when the trial starts)
over its resident memory just before the trial, with glibc's allocator returning every block of 64 KiB
or more to the system when freed (``MALLOC_MMAP_THRESHOLD_``), so that the peak is the trial's and
not memory an earlier trial left in the allocator. The worker's pristine copy of the start point
(``ablate.trial.worker_cache``) is loaded before the baseline: it belongs to the worker, not the trial.
No generation (the estimate leaves out generation's key/value cache, small beside training).

    python -m bench.memory_check [--quick]     the table of docs/memory.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT = "RESULT "
VOCAB = 8000
SHAPES = {  # two model sizes: ~3M and ~11M parameters (about half of them in the untied embeddings and head)
    "small": {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4, "num_attention_heads": 4},
    "medium": {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 8, "num_attention_heads": 4},
}
METHODS = {"SimPO": ("simpo", None), "DPO": ("dpo", "online")}
LORA = {"r": 16, "alpha": 32.0, "dropout": 0.0, "target_modules": "all-linear"}
DATA = {"max_length": 64, "max_prompt_length": 4, "pairs": 20}  # 18 training pairs: steps of 8, 8, 2
BATCH = 8
ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}


def build_start(out: Path, shape: dict) -> Path:
    """A tokenizer over ``VOCAB`` words and a random-weight Llama of ``shape``, saved like a download."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if (out / "config.json").is_file():
        return out
    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<bos>", "<eos>", *words()])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="<pad>", unk_token="<unk>")  # fmt: skip
    config = LlamaConfig(vocab_size=len(vocab), num_key_value_heads=shape["num_attention_heads"],
                         bos_token_id=2, eos_token_id=3, pad_token_id=0, tie_word_embeddings=False,
                         max_position_embeddings=256, **shape)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def words() -> list[str]:
    return [f"w{i:05d}" for i in range(VOCAB - 4)]


def write_pairs(path: Path) -> Path:
    """Pairs longer than ``max_length``: every one is cut to exactly the longest row a trial can see."""
    rng = random.Random(0)
    vocab = words()
    n = DATA["max_length"] * 2

    def text() -> str:
        return " ".join(rng.choices(vocab, k=n))

    path.write_text("".join(json.dumps({"prompt": text(), "chosen": text(), "rejected": text()}) + "\n"
                            for _ in range(DATA["pairs"])))  # fmt: skip
    return path


def sweep(work: Path, size: str, method: str, lora: bool) -> dict:
    """The sweep file (as a dict) of one measured trial."""
    name, reference = METHODS[method]
    entry = {"method": name, **({"reference": reference} if reference else {}), "lora": dict(LORA) if lora else False}
    return {
        "name": "memory-check",
        "cache_dir": str(work / "cache"),
        "methods": [entry],
        "model": {"name_or_path": str(build_start(work / f"model-{size}", SHAPES[size])), "dtype": "float32"},
        "data": {"source": str(write_pairs(work / "pairs.jsonl")), "max_length": DATA["max_length"],
                 "max_prompt_length": DATA["max_prompt_length"]},  # fmt: skip
        "training": {"batch_size": BATCH, "learning_rate": 1e-4, "log_every": 100, "checkpoint_every": 0},
        "evaluation": {"batch_size": BATCH, "generate": False},
    }


def estimated(sw: dict) -> float:
    from ablate import spec as spec_mod
    from ablate.sweep import memory_plan

    (entry,) = memory_plan.sweep_memory(spec_mod.SweepSpec.model_validate(sw))
    return entry.estimate.peak


def measure_all(cases: list[tuple[str, str, bool]], work: Path) -> list[dict]:
    """Run ``cases`` (size, method, lora) one after another in this process (started with ``ENV``)."""
    import torch

    from ablate import models
    from ablate import spec as spec_mod
    from ablate.trial import config as trial_config
    from ablate.trial import worker_cache
    from ablate.trial.memory_probe import MemoryProbe
    from ablate.trial.runner import run_trial

    torch.set_num_threads(1)
    out, warmed = [], set()
    for size, method, lora in cases:
        sw = sweep(work, size, method, lora)
        trial = {**spec_mod.expand(spec_mod.SweepSpec.model_validate(sw))[0],
                 "start": {"path": sw["model"]["name_or_path"], "baseline": None}}  # fmt: skip
        if size not in warmed:  # the worker's pristine start point and tokenized data first
            worker_cache.start_point_model(trial["start"]["path"], torch.device("cpu"), trainable=False)
            cfg = trial_config.parse(trial)
            worker_cache.tokenized_splits(cfg, models.load_tokenizer(cfg.start.path))
            warmed.add(size)
        probe = MemoryProbe.start(torch.device("cpu"))
        final = run_trial(trial, lambda _: None)
        growth = probe.growth_mb()
        est = estimated(sw) / 2**20
        out.append({"size": size, "method": method, "lora": lora, "measured_mb": growth, "estimated_mb": est,
                    "ratio": est / growth, "trainable_params": final["trainable_params"],
                    "total_params": final["total_params"]})  # fmt: skip
    return out


def run(cases: list[tuple[str, str, bool]] | None = None, work: Path | None = None) -> list[dict]:
    """Measure ``cases`` (default: both sizes x SimPO, DPO x full, LoRA) in one fresh process."""
    cases = cases or [(s, m, lo) for s in SHAPES for m in METHODS for lo in (False, True)]
    with tempfile.TemporaryDirectory(prefix="memory-check-") as tmp:
        work = work or Path(tmp)
        cmd = [sys.executable, "-m", "bench.memory_check", "--measure", json.dumps(cases), "--work", str(work)]
        env = {**os.environ, **ENV, "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return json.loads(lines[-1][len(RESULT):])


def table(rows: list[dict]) -> str:
    out = ["| model | method | fine-tuning | trainable params | estimated MB | measured MB | estimate / measured |",
           "|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        ft = f"LoRA r={LORA['r']}" if r["lora"] else "full"
        out.append(f"| {r['size']} ({r['total_params'] / 1e6:.1f}M) | {r['method']} | {ft} | {r['trainable_params']:,} | "
                   f"{r['estimated_mb']:.0f} | {r['measured_mb']:.0f} | {r['ratio']:.2f} |")  # fmt: skip
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the small model only")
    p.add_argument("--measure", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        cases = [tuple(c) for c in json.loads(args.measure)]
        print(RESULT + json.dumps(measure_all(cases, Path(args.work))), flush=True)
        return 0
    cases = [(s, m, lo) for s in (["small"] if args.quick else SHAPES) for m in METHODS for lo in (False, True)]
    rows = run(cases)
    print(f"Estimated vs measured peak memory per trial on CPU (float32, batch {BATCH} pairs of "
          f"{2 * DATA['max_length']} tokens, vocabulary {VOCAB}; DPO with an online reference):")  # fmt: skip
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
