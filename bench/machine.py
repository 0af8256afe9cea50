"""What the machine can do: the one-thread matmul rate, the arithmetic of an epoch, and quiet logs."""

from __future__ import annotations

import os
import time

import torch


def matmul_gflops(size: int = 1024, reps: int = 8, rounds: int = 5) -> tuple[float, float]:
    """Best one-thread float32 GEMM rate of a few rounds, by wall-clock and by CPU time."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(reps):
            a @ b
        best = [
            min(best[0], (time.perf_counter() - t) / reps),
            min(best[1], (time.process_time() - c) / reps),
        ]
    return 2 * size**3 / best[0] / 1e9, 2 * size**3 / best[1] / 1e9


def forward_flops(config, shapes: list[tuple[int, int, int]], shared_prompt: bool = False) -> float:
    """Forward FLOPs of a Llama-style decoder over preference pairs given as (prompt, chosen, rejected)
    token counts, without padding: every linear layer (the LM head on every position) and causal
    attention (scores and values). Usually each pair is two sequences, prompt + chosen and prompt +
    rejected; with ``shared_prompt`` the prompt is computed once (``ablate.data.shared_prompt``)."""
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_token = layers * (2 * h * h + 2 * h * kv + 3 * h * inter) + h * config.vocab_size
    tokens = keys = 0
    for p, c, r in shapes:
        tokens += p + c + r + (0 if shared_prompt else p)
        keys += (p + c) * (p + c + 1) // 2 + (p + r) * (p + r + 1) // 2  # keys each query attends to
        keys -= p * (p + 1) // 2 if shared_prompt else 0
    return 2 * per_token * tokens + layers * 4 * h * keys


def flops_per_epoch(
    config, shapes: list[tuple[int, int, int]], method: str, shared_prompt: bool = False
) -> float:
    """Arithmetic of one epoch's training steps: forward + backward (3x forward), plus the reference's
    forward for DPO with an online reference (a precomputed one is paid before training starts)."""
    fwd = forward_flops(config, shapes, shared_prompt)
    return 3 * fwd + (fwd if method == "dpo" else 0.0)


def quiet() -> None:
    """Silence progress bars and info logs of datasets/transformers/TRL (printing costs time)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
