"""Smoke test of benchmark 1's ablate side (TRL is a benchmark-only extra and is not run here)."""

import copy

import torch

from bench import pairs
from bench.machine import flops_per_epoch
from bench.trainer_vs_trl import SETTINGS, ablate_side


def test_ablate_side_of_trainer_benchmark_trains_every_pair_once():
    torch.set_num_threads(1)
    tokenizer = pairs.build_tokenizer()
    base = pairs.build_model(tokenizer)
    rows = pairs.make_pairs(16)
    for method in ("simpo", "dpo", "dpo-precomputed"):
        policy, ref = copy.deepcopy(base), copy.deepcopy(base).eval().requires_grad_(False)
        out = ablate_side(method, rows, policy, ref, tokenizer, SETTINGS)
        assert out["steps"] == 16 // SETTINGS["batch_size"]
        assert len(out["step_s"]) == out["steps"] and len(out["shapes"]) == len(rows)
        # every token of the data was trained on: prompt twice, both responses with their EOS
        words = sum(
            2 * len(r["prompt"].split()) + len(r["chosen"].split()) + len(r["rejected"].split()) for r in rows
        )
        assert out["tokens"] == words + 2 * len(rows) * 2  # a BOS per sequence and an EOS per response
        assert any(not torch.equal(a, b) for a, b in zip(policy.parameters(), base.parameters(), strict=True))
        assert out["shared_prompt"]  # the tiny Llama takes the shared-prompt layout
    usual = flops_per_epoch(base.config, out["shapes"], "simpo")
    assert flops_per_epoch(base.config, out["shapes"], "dpo") > usual
    assert flops_per_epoch(base.config, out["shapes"], "simpo", shared_prompt=True) < usual
