"""The GPU machine's script (bench/on_gpu.sh) and its Python helper (bench/gpu_sweep.py), checked here
at a small scale: they run only when a session is lent a GPU, so a change that breaks them would
otherwise cost that session's device time. No GPU, no network, no wheel folder needed."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from ablate import spec as spec_mod
from bench import gpu_sweep
from tests.conftest import REPO


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-sweep")
    return out, gpu_sweep.build(out, quick=True)


def test_sweep_file_runs_single_gpu_bf16_trials_one_at_a_time(built):
    out, path = built
    spec = spec_mod.load_sweep(str(path))
    trials = spec_mod.expand(spec)
    assert [(t["method"], t["seed"]) for t in trials] == [("simpo", 0), ("simpo", 1), ("dpo", 0), ("dpo", 1)]
    assert spec.resources.gpus == 1 and spec.model.dtype == "bfloat16" and spec.max_concurrent == 1
    assert spec.storage == str(out / "results")


def test_flop_terms_count_the_parameters_that_multiply_tokens(built):
    from transformers import AutoModelForCausalLM

    out, _ = built
    terms = json.loads((out / "flops.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(str(out / "model-quick"), dtype=torch.float32)
    embedding = model.get_input_embeddings().weight.numel()
    assert terms["params"] == sum(p.numel() for p in model.parameters()) - embedding
    # Two rows per pair attend over shorter sequences than one row holding both responses.
    assert 1 < terms["context_two_rows"] < terms["context_one_row"]


def test_zero3_sweep_is_one_gpu_worker_with_stage_3(built):
    out, _ = built
    spec = spec_mod.load_sweep(str(out / "zero3.yaml"))
    (trial,) = spec_mod.expand(spec)
    assert trial["method"] == "simpo" and trial["seed"] == 0
    assert trial["resources"]["workers"] == 1 and trial["resources"]["gpus_per_worker"] == 1
    assert trial["deepspeed"]["stage"] == 3  # a DeepSpeed trial with one worker


def finished_trial(root, name: str, label: str, reference: str | None) -> None:
    trial_dir = root / "results" / "sweep" / name
    trial_dir.mkdir(parents=True)
    cfg = {"label": label, "seed": 0, "reference": reference, "resources": {"workers": 1}, "deepspeed": None}
    final = {"status": "finished", "tokens_per_s": 1e4, "steps": 5, "runtime_s": 1.0, "peak_memory_mb": 1}
    (trial_dir / "params.json").write_text(json.dumps({"trial": cfg}))
    (trial_dir / "final.json").write_text(json.dumps(final))


def test_mfu_of_finished_trials(tmp_path):
    terms = {"params": 1e9, "layers": 10, "hidden_size": 1000, "context_one_row": 100, "context_two_rows": 50}
    (tmp_path / "flops.json").write_text(json.dumps(terms))
    finished_trial(tmp_path, "simpo", "SimPO", None)
    finished_trial(tmp_path, "dpo", "DPO", "online")
    rows = {r["label"]: r for r in gpu_sweep.mfu(tmp_path, peak=1e15)}
    assert rows["SimPO"]["mfu_6n"] == pytest.approx(6e9 * 1e4 / 1e15)
    assert rows["SimPO"]["mfu_all"] == pytest.approx((6e9 + 12 * 10 * 1000 * 100) * 1e4 / 1e15)
    assert rows["DPO"]["mfu_all"] == pytest.approx((8e9 + 16 * 10 * 1000 * 100) * 1e4 / 1e15)


def test_on_gpu_dry_run_prints_every_step(tmp_path):
    # The script's own logic; PYTHON=true stands in for the Python steps, which the tests above run.
    env = {**os.environ, "PYTHON": "true", "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work")}
    cmd = ["bash", "bench/on_gpu.sh", "--dry-run"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = [line.split(" (timeout")[0] for line in proc.stdout.splitlines() if line.startswith("== ")]
    assert steps == [
        "== install wheels", "== environment", "== build model, data and sweep", "== sweep dry run",
        "== ZeRO-3 trial dry run", "== GPU samples in the background: nvidia-smi --query-gpu=timestamp,"
        "utilization.gpu,memory.used --format=csv -l 1 > " + str(tmp_path / "out" / "nvidia_smi.csv"),
        "== Ray Tune sweep, 4 single-GPU trials", "== Ray Train + DeepSpeed ZeRO-3 trial", "== tests/test_gpu.py", "== LoRA vs full at GPU scale",
        "== final metrics and MFU", "== report", "== pack results", "== timings",
    ]  # fmt: skip
    assert "--no-index --no-deps" in proc.stdout and "gpu_sweep build --out" in proc.stdout
    assert (tmp_path / "out" / "on_gpu.log").is_file()


def test_wheel_scripts_parse():
    for script in ("bench/gpu_wheels.sh", "bench/check_gpu_wheels.sh", "bench/on_gpu.sh"):
        subprocess.run(["bash", "-n", script], cwd=REPO, check=True)


def test_on_gpu_exit_status_reports_a_failed_step(tmp_path):
    env = {**os.environ, "PYTHON": "false", "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work")}
    proc = subprocess.run(
        ["bash", "bench/on_gpu.sh", "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1 and "failed or skipped: build model, data and sweep" in proc.stdout
