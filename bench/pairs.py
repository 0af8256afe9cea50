"""Benchmark 1's own data and model: synthetic preference pairs over a 512-token word vocabulary and a
tiny Llama (4 layers, hidden 128), built in memory so ablate and TRL start from identical copies.

Lengths follow the benchmark's spec: prompts of 8-24 tokens, responses of 10-60 tokens (the
tokenizer adds a BOS before the prompt and each trainer an EOS after the response)."""

from __future__ import annotations

import random

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL = ["<pad>", "<unk>", "<bos>", "<eos>"]
WORDS = [f"t{i:03d}" for i in range(508)]
PROMPT_TOKENS = (8, 24)
RESPONSE_TOKENS = (10, 60)

MODEL_SHAPE = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "max_position_embeddings": 128,
}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose encoding starts with BOS, as Llama's does (TRL's DPO relies on it)."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    import torch

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        num_key_value_heads=MODEL_SHAPE["num_attention_heads"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **MODEL_SHAPE,
    )
    return LlamaForCausalLM(config).float()


def make_pairs(n: int = 256, seed: int = 0) -> list[dict]:
    """``n`` rows {prompt, chosen, rejected} of space-separated words, lengths drawn uniformly."""
    rng = random.Random(seed)

    def text(lo_hi: tuple[int, int]) -> str:
        return " ".join(rng.choices(WORDS, k=rng.randint(*lo_hi)))

    # Responses start with a space: TRL joins prompt and response as strings before tokenizing.
    return [
        {
            "prompt": text(PROMPT_TOKENS),
            "chosen": " " + text(RESPONSE_TOKENS),
            "rejected": " " + text(RESPONSE_TOKENS),
        }
        for _ in range(n)
    ]
