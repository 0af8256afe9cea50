"""The memory plan (ablate.sweep.memory_plan): parameter counts against real models, the estimate against
measured peaks on CPU, the dry run's plan, and a sweep whose trial cannot fit refused at launch."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from ablate import models
from ablate.spec.schema import LoraConfig
from ablate.sweep import memory_plan
from ablate.sweep.cli import main as run_main
from ablate.sweep.memory_plan import GB, ModelShape
from ablate.trial import lora
from bench import memory_check
from tests.conftest import REPO

LLAMA3_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **memory_plan.KNOWN_CONFIGS[
    "meta-llama/Meta-Llama-3-8B"]}  # fmt: skip


def test_shape_counts_the_parameters_peft_and_transformers_make():
    tokenizer = models.build_builtin_tokenizer()
    cfg = models.TinyModelConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4)
    model = models.build_builtin_model(cfg, tokenizer, seed=0)
    shape = memory_plan.model_shape("builtin:tiny", cfg.model_dump())
    assert shape.params == sum(p.numel() for p in model.parameters())
    for target in ("all-linear", ["q_proj", "v_proj"]):
        adapter = LoraConfig(r=4, target_modules=target)
        with_adapter = lora.attach(models.build_builtin_model(cfg, tokenizer, seed=0), adapter)
        assert shape.lora_params(adapter) == models.parameter_counts(with_adapter)["trainable_params"]
    assert ModelShape.of(LLAMA3_8B).params == 8_030_261_248  # Llama-3-8B's published size


@pytest.mark.slow
def test_estimate_is_within_30_percent_of_measured_peaks():
    # Both sizes, SimPO and DPO (online reference: a second model, or the adapter switched off), full and
    # LoRA, in three trials (bench/memory_check.py says what is measured); all 8 combinations are in
    # docs/memory.md (python -m bench.memory_check).
    cases = [("small", "SimPO", False), ("small", "DPO", False), ("medium", "DPO", True)]
    rows = memory_check.run(cases)
    print(memory_check.table(rows))
    for r in rows:
        assert 0.7 <= r["ratio"] <= 1.3, r
    assert rows[2]["trainable_params"] < rows[0]["trainable_params"] / 4  # the adapter


def big_model_sweep(tmp_path, **extra) -> str:
    """A sweep on a local directory with Llama-3-8B's config.json (no weights: nothing is loaded)."""
    model = tmp_path / "llama3-8b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(LLAMA3_8B))
    sweep = {"name": "big", "storage": str(tmp_path / "results"), "methods": [{"method": "simpo"}],
             "model": {"name_or_path": str(model), "dtype": "bfloat16"}, "resources": {"gpus": 1},
             "data": {"max_length": 1024, "max_prompt_length": 512}, "training": {"batch_size": 4},
             "evaluation": {"batch_size": 4}, **extra}  # fmt: skip
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return str(path)


def test_trial_that_cannot_fit_exits_2_at_launch(tmp_path, capsys):
    path = big_model_sweep(tmp_path)
    assert run_main([path, "--gpu-memory", "80GB"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: methods.0 (SimPO): a trial needs an estimated ") and "per worker" in err
    for fix in ("LoRA", "`model.lora", "ZeRO-3", "gradient_checkpointing", "training.batch_size", "--force"):
        assert fix in err, fix
    assert not (tmp_path / "results").exists()  # nothing launched

    # The dry run warns and shows it; --force passes the check (here the bad address stops it next).
    assert run_main([path, "--dry-run", "--gpu-memory", "80GB"]) == 0
    out, err = capsys.readouterr()
    assert "warning:" in err and "(does not fit)" in out and out.strip().splitlines()[-1] == "1 trials"
    assert run_main([path, "--gpu-memory", "80GB", "--force", "--address", "127.0.0.1:1"]) == 2
    assert "--address" in capsys.readouterr().err


def test_lora_and_fractional_gpus_in_the_plan(tmp_path, capsys):
    lora_path = big_model_sweep(tmp_path, model={"name_or_path": str(tmp_path / "llama3-8b"), "dtype": "bfloat16",
                                                 "gradient_checkpointing": True, "lora": {"r": 16}})  # fmt: skip
    assert run_main([lora_path, "--gpu-memory", "80GB", "--dry-run", "--trial-hours", "2"]) == 0
    out, err = capsys.readouterr()
    row = next(line for line in out.splitlines() if "SimPO (LoRA)" in line and "GB" in line)
    assert "LoRA r=16" in row and row.rstrip().endswith(" 2") and not err  # fits, twice per GPU
    assert "GPU-hours: 1 trials x 1 GPUs x 2 h = 2.0" in out
    # A quarter of a GPU: four such trials would share one, which they do not fit.
    quarter = yaml.safe_load(open(lora_path))
    quarter["resources"] = {"gpus": 0.25}
    (tmp_path / "quarter.yaml").write_text(yaml.safe_dump(quarter))
    assert run_main([str(tmp_path / "quarter.yaml"), "--gpu-memory", "80GB"]) == 2
    assert "more than its 0.25 of a GPU: 20.0 GB" in capsys.readouterr().err


def test_gpu_memory_from_the_cluster_file():
    memory, what = memory_plan.cluster_gpu_memory(REPO / "cluster.yaml")
    assert memory == 80 * GB and "p5.48xlarge" in what
    assert memory_plan.parse_size("141 GiB") == 141 * GB and memory_plan.parse_size("24000MB") == 24000 * 2**20


def test_estimate_parts_follow_zero_stages():
    shape = ModelShape.of(LLAMA3_8B)
    setup = memory_plan.Setup(batch_size=2, max_length=2048, eval_batch_size=2, compute_bytes=2,
                              gradient_checkpointing=True, workers=8)  # fmt: skip
    parts = {stage: memory_plan.estimate(shape, setup.__class__(**{**setup.__dict__, "zero_stage": stage})).parts
             for stage in (0, 1, 2, 3)}  # fmt: skip
    p = shape.params
    assert parts[0]["optimizer"] == 12 * p and parts[1]["optimizer"] == 12 * p / 8
    assert parts[1]["gradients"] == 2 * p and parts[2]["gradients"] == 2 * p / 8
    assert parts[2]["weights"] == 2 * p and parts[3]["weights"] == 2 * p / 8
    single = memory_plan.estimate(shape, setup.__class__(**{**setup.__dict__, "workers": 1}))
    assert single.parts["weights"] == 4 * p and single.parts["optimizer"] == 8 * p  # float32 master, AdamW
    assert torch.finfo(torch.bfloat16).bits == 16


def test_gathered_copy_needs_the_full_weights_and_the_kv_cache():
    # What ZeRO-3 evaluation weighs against free memory before gathering a plain copy (a plain model
    # here: each parameter counted once, the tied embeddings too).
    from ablate.trial.backends.deepspeed import gathered_bytes

    tok = models.build_builtin_tokenizer()
    model = models.build_builtin_model(models.TinyModelConfig(), tok, 0)
    weights = sum(p.numel() for p in model.parameters()) * 4
    shape = ModelShape.of(model.config.to_dict())
    assert shape.params * 4 == weights
    cache = 3 * 40 * shape.layers * 2 * shape.kv * 4 + 3 * shape.vocab * 4
    assert gathered_bytes(model, batch=3, tokens=40) == weights + cache
