"""Benchmark 2 at a GPU's scale: a ~1B-parameter Llama-architecture model and long pairs, given to
ablate the way a user gives a real model and data set: a local model directory and a local .jsonl
file (nothing can be downloaded here, so both are built: random weights, random words).

The shape follows the paper's smaller settings where it matters for cost: a 32,000-token
vocabulary (Mistral's and Llama 2's), 16 layers of width 2048 (TinyLlama's), pairs whose prompt
plus response reach 900 tokens, batch 8 pairs. Random weights cost the same arithmetic and memory
as trained ones, so runtime and peak memory are what a trained start point would give.

    python -m bench.simpo_vs_dpo --scale gpu    # or --scale gpu --quick: a small shape, a smoke run
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = 32000 - 4  # plus <pad>, <unk>, <bos>, <eos>
MODEL = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 16,
    "num_attention_heads": 16,
    "max_position_embeddings": 1024,
}
QUICK_MODEL = {
    **MODEL,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
}
PROMPT_WORDS = (64, 256)
RESPONSE_WORDS = (128, 640)
MAX_LENGTH, MAX_PROMPT_LENGTH = 900, 256
PAIRS = 440  # the file's last tenth is held out: 396 training pairs, 44 held out
QUICK = {"prompt": (8, 32), "response": (16, 64), "max_length": 128, "max_prompt_length": 32, "pairs": 64}


def shape(quick: bool) -> dict:
    if quick:
        return QUICK
    return {"prompt": PROMPT_WORDS, "response": RESPONSE_WORDS, "max_length": MAX_LENGTH,
            "max_prompt_length": MAX_PROMPT_LENGTH, "pairs": PAIRS}  # fmt: skip


def describe(quick: bool) -> str:
    m, d = QUICK_MODEL if quick else MODEL, shape(quick)
    return (
        f"local model dir: {m['num_hidden_layers']} layers x {m['hidden_size']}, vocab 32000; local .jsonl: "
        f"{d['pairs']} pairs, prompt {d['prompt'][0]}-{d['prompt'][1]} + response {d['response'][0]}-"
        f"{d['response'][1]} tokens (max {d['max_length']})"
    )


def build_model_dir(out: Path, quick: bool) -> Path:
    """Tokenizer and random-weight model saved with ``save_pretrained``, as a hub download would be."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if (out / "config.json").is_file():
        return out
    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<bos>", "<eos>", *word_list()])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    shape = QUICK_MODEL if quick else MODEL
    config = LlamaConfig(
        vocab_size=len(vocab),
        num_key_value_heads=shape["num_attention_heads"],
        bos_token_id=vocab["<bos>"],
        eos_token_id=vocab["<eos>"],
        pad_token_id=vocab["<pad>"],
        tie_word_embeddings=False,
        **shape,
    )
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):  # initialising 1B weights on a GPU takes a second, on CPU a minute
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def word_list() -> list[str]:
    return [f"t{i:05d}" for i in range(WORDS)]


def write_pairs(path: Path, quick: bool, seed: int = 0) -> Path:
    rng = random.Random(seed)
    d = shape(quick)
    words = word_list()

    def text(lo_hi: tuple[int, int]) -> str:
        return " ".join(rng.choices(words, k=rng.randint(*lo_hi)))

    rows = [
        {"prompt": text(d["prompt"]), "chosen": text(d["response"]), "rejected": text(d["response"])}
        for _ in range(d["pairs"])
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sweep(workdir: Path, quick: bool, methods: list[dict]) -> dict:
    """The sweep file's content (a dict) for ``methods`` on the built model and data."""
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = build_model_dir(workdir / ("model-quick" if quick else "model"), quick)
    data = write_pairs(workdir / f"pairs{'-quick' if quick else ''}.jsonl", quick)
    d = shape(quick)
    return {
        "name": "bench-simpo-dpo-gpu",
        "cache_dir": str(workdir / "cache"),
        "methods": methods,
        "model": {"name_or_path": str(model_dir)},
        "data": {
            "source": str(data),
            "max_length": d["max_length"],
            "max_prompt_length": d["max_prompt_length"],
        },
        # the paper's learning rate scale; one epoch of 50 steps of 8 pairs
        "training": {"learning_rate": 5e-7, "batch_size": 8, "epochs": 1, "log_every": 10},
        "evaluation": {"batch_size": 8, "generate": False},
    }
