"""Whether an on-policy build's generator (the start point, with its KV cache) and judge fit one GPU,
for ``--dry-run`` (``ablate.onpolicy.build.dry_run_lines``); the shapes come from ``ablate.sweep.memory_plan``."""

from __future__ import annotations

from ablate.spec import SweepSpec
from ablate.sweep import memory_plan
from ablate.sweep.memory_plan import GB, ModelShape, gb

# Reward models the paper's recipes judge with, by hub id: Llama-3-8B's shape with a one-value head.
KNOWN_JUDGES = {
    "RLHFlow/ArmoRM-Llama3-8B-v0.1": memory_plan.KNOWN_CONFIGS["meta-llama/Meta-Llama-3-8B"],
    "Skywork/Skywork-Reward-Llama-3.1-8B": memory_plan.KNOWN_CONFIGS["meta-llama/Meta-Llama-3-8B"],
}


def generator_bytes(shape: ModelShape, batch: int, tokens: int, c: int) -> tuple[float, float]:
    """(weights, KV cache and the last position's logits) of batched sampling in ``c`` bytes per value."""
    kv_cache = batch * tokens * shape.layers * 2 * shape.kv * c
    return shape.params * c, kv_cache + batch * shape.vocab * 4


def judge_bytes(shape: ModelShape, batch: int, tokens: int, c: int) -> float:
    """Weights and one layer's activations (a forward without the LM head's logits)."""
    return shape.params * c + batch * tokens * (4 * shape.hidden + 3 * shape.ffn) * c


def judge_shape(spec: SweepSpec) -> ModelShape | None:
    judge = spec.data.on_policy.judge.name
    if judge == "builtin:oracle":
        return None
    if judge == "builtin:reward-model":
        return memory_plan.model_shape(spec.model.name_or_path, spec.model.tiny.model_dump())
    known = KNOWN_JUDGES.get(judge)
    return ModelShape.of(known) if known else memory_plan.model_shape(judge, {})


def fit_line(spec: SweepSpec, new_tokens: int, gpu_memory: float | None) -> str:
    cfg = spec.data.on_policy
    c = memory_plan.compute_bytes(spec)
    gen = memory_plan.model_shape(spec.model.name_or_path, spec.model.tiny.model_dump())
    if gen is None:
        return f"on-policy build memory: unknown ({spec.model.name_or_path}'s config.json is not available offline)"
    weights, cache = generator_bytes(gen, cfg.batch_size, spec.data.max_prompt_length + new_tokens, c)
    shape = judge_shape(spec)
    spec_j = cfg.judge
    judged = min(spec_j.max_length, spec.data.max_prompt_length + new_tokens)  # a prompt and one answer
    judge = 0.0 if shape is None else judge_bytes(shape, spec_j.batch_size, judged, c)
    judge_text = "none (the oracle)" if shape is None and spec_j.name == "builtin:oracle" else (
        gb(judge) if shape is not None else "unknown (its config.json is not available offline)")
    total = weights + cache + judge
    line = (f"on-policy build memory: generator {gb(weights + cache)} (weights {gb(weights)}, KV cache for "
            f"{cfg.batch_size} prompts {gb(cache)}), judge {judge_text}; both loaded: {gb(total)}")
    if gpu_memory is None:
        return line + " (no GPU memory given)"
    verdict = "fit" if total <= gpu_memory else "do not fit"
    return line + f": they {verdict} one GPU of {gpu_memory / GB:.0f} GB" + (
        "" if total <= gpu_memory else " (lower data.on_policy.batch_size or the judge's batch_size)")
