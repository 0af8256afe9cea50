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


def test_gpu_scale_benchmark_runs_through_the_sweep_file_path(tmp_path):
    # Benchmark 2's GPU-scale inputs (a local model directory and a local .jsonl) go through the same
    # sweep-file checks and trial code as a user's; its quick shape runs here on CPU.
    import yaml

    from ablate import spec as spec_mod
    from ablate.trial import run_trial
    from bench import gpu_scale, simpo_vs_dpo

    sweep = gpu_scale.sweep(tmp_path, True, [simpo_vs_dpo.METHODS["SimPO"]])
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(sweep))
    spec = spec_mod.load_sweep(path)  # the CLI's validation: model dir and data file exist and fit
    trial = {**spec_mod.expand(spec)[0], "start": {"path": sweep["model"]["name_or_path"], "baseline": None}}
    final = run_trial(trial, lambda _: None)
    assert final["status"] == "finished"
    assert final["steps"] == 8  # 64 pairs, the last tenth (6) held out, batch 8
    assert 0.0 <= final["reward_accuracy"] <= 1.0
