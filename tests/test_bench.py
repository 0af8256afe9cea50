"""Smoke tests of the benchmarks: benchmark 1's ablate side (TRL is a benchmark-only extra and is not run here),
benchmark 2's GPU-scale inputs, benchmark 4's arithmetic."""

import copy
import math

import pytest
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
    from ablate.trial.runner import run_trial
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


def test_drift_benchmark_measures_rho_and_the_slope_per_trial_in_a_worker():
    # Benchmark 4's arithmetic on hand-made records: two workers of six trials each, interleaved.
    from bench.worker_drift import trend

    def records(memory_of):
        return [
            {"started_at": 100.0 + i, "process_id": i % 2, "process_started_at": 1.0,
             "peak_memory_mb": memory_of(i // 2, i)}
            for i in range(12)
        ]  # fmt: skip

    growing = trend(records(lambda k, i: 700.0 + 7.0 * k), "peak_memory_mb")  # +7 MB per trial in a worker
    assert growing["rho"] > 0.9 and growing["slope"] == pytest.approx(100 * 7.0 / growing["mean"])
    assert growing["half"] == pytest.approx(0.0, abs=1e-9) and growing["workers"] == 2
    flat = trend(records(lambda k, i: 700.0 + (1.0 if i % 3 else -2.0)), "peak_memory_mb")
    assert abs(flat["slope"]) < 0.2 and flat["half"] > 0
    assert math.isnan(trend(records(lambda k, i: 700.0), "runtime_s")["mean"])  # not reported


def test_paper_estimate_of_evaluation_under_zero3():
    # Benchmark 8b's arithmetic: 805 prompts on 8 workers in batches of 8, 4,096 tokens each, Llama-3-8B bf16.
    from bench.generation import GATHER_GBPS, GPU_STEP_S, paper_estimate

    e = paper_estimate(1.0)
    assert e["params"] == 8_030_261_248 and e["steps"] == 13 * 4096
    assert e["gather_s"] == pytest.approx(e["params"] * 2 * 7 / 8 / (GATHER_GBPS * 1e9))
    assert e["gathered_h"] * 3600 == pytest.approx(e["gather_s"] + e["steps"] * GPU_STEP_S)
    assert e["ratio"] == pytest.approx((GPU_STEP_S + e["gather_s"]) * e["steps"] / (e["gathered_h"] * 3600))
    assert paper_estimate(2.0)["synced_h"] > e["synced_h"] > e["gathered_h"]
