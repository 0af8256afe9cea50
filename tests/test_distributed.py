"""Multi-worker trials: 2 Ray Train workers with DeepSpeed ZeRO-3 (CPU accelerator, gloo) on the
embedded default, checked step by step against the single-process trial with the same global batch.

Tolerance: the per-step training loss of the 2-worker trial may differ from the 1-worker one by at
most 1e-4 (absolute). Both runs do the same float32 arithmetic on the same pairs in the same order;
they differ only in how sums are split (two half micro-batches all-reduced vs one batch, ZeRO-3's
flattened fp32 partitions vs per-tensor AdamW, a global grad norm summed from shards), which moves
results by float32 round-off: about 1e-7 per step here, drifting slowly over steps through Adam.
1e-4 leaves room for that drift on other CPUs while staying about 1000x below the loss's change
between steps (~0.1), so a wrong split of the batch, a wrong loss scaling or a missed all-reduce
(each an error of order 1e-2 or more) fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from ablate import spec as spec_mod
from ablate.trial import startpoint
from ablate.trial.runner import run_trial
from tests.conftest import REPO, SMALL

pytestmark = pytest.mark.slow

LOSS_TOLERANCE = 1e-4
WORKERS = 2
GLOBAL_BATCH = SMALL["training"]["batch_size"]  # 16 pairs per optimizer step in both runs


def env() -> dict:
    # The DeepSpeed op that DeepSpeed compiles on first use (~25 s) is cached across test runs.
    return {
        **os.environ,
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
        "TORCH_EXTENSIONS_DIR": os.environ.get(
            "TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions")
        ),
        "PYTHONPATH": str(REPO),
    }


def sweep(tmp_path, methods: list[dict], **extra) -> dict:
    return {
        **SMALL,
        "name": "zero3",
        "storage": str(tmp_path / "results"),
        "cache_dir": str(tmp_path / "cache"),  # own cache: the reference log-probs are computed sharded here
        "methods": methods,
        "training": {**SMALL["training"], "batch_size": GLOBAL_BATCH // WORKERS, "log_every": 1},
        # 0.3 logical CPUs per worker: all three trials (6 workers and 3 drivers) run at once on 2 CPUs.
        "resources": {"workers": WORKERS, "cpus_per_worker": 0.3},
        "deepspeed": {"stage": 3},
        **extra,
    }


def results(trial_dir) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    return [r for r in rows if "step" in r and "status" not in r], rows[-1]


def single_worker_trial(sw: dict, method_index: int) -> tuple[list[float], dict]:
    """The same trial as one process (run_trial) with the whole global batch per step."""
    one = {k: v for k, v in sw.items() if k not in ("resources", "deepspeed")}
    one["training"] = {**sw["training"], "batch_size": GLOBAL_BATCH}
    spec = spec_mod.SweepSpec.model_validate(one)
    trial = spec_mod.expand(spec)[method_index]
    trial["start"] = startpoint.prepare_sweep(spec, log=lambda *_: None)
    trial["cache_dir"] = spec.cache_dir
    reports: list[dict] = []
    final = run_trial(trial, reports.append)
    return [r["train_loss"] for r in reports if "step" in r], final


LORA = {"r": 8, "alpha": 16.0}


def test_two_workers_zero3_match_one_worker(tmp_path):
    # SimPO loads no reference; DPO's reference log-probs are precomputed by the ZeRO-3-sharded reference;
    # the LoRA policy's online reference is its own sharded model with the adapter switched off.
    methods = [
        {"method": "simpo"},
        {"method": "dpo", "reference": "precomputed"},
        {"method": "dpo", "reference": "online", "lora": LORA, "training": {"learning_rate": 5e-3}},
    ]
    sw = sweep(tmp_path, methods)
    path = tmp_path / "zero3.yaml"
    path.write_text(yaml.safe_dump(sw))
    proc = subprocess.run(
        [sys.executable, "-m", "ablate.run", str(path)], capture_output=True, text=True, cwd=REPO, env=env(),
        timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{len(methods)} trials finished, 0 errored" in proc.stdout

    trial_dirs = sorted(
        d for d in (tmp_path / "results" / "zero3").iterdir() if (d / "result.json").is_file()
    )
    assert len(trial_dirs) == len(methods)
    # The precomputed reference log-probs were computed by the workers (each on half the pairs) and cached.
    assert len(list((tmp_path / "cache" / "reference").glob("*.pt"))) == 2  # train and eval splits

    for i, trial_dir in enumerate(trial_dirs):
        history, final = results(trial_dir)
        assert final["status"] == "finished" and final["workers"] == WORKERS and final["zero_stage"] == 3
        assert final["global_batch"] == GLOBAL_BATCH
        assert final["eval_generation"] == "gathered"  # the tiny policy fits: generated from a gathered copy
        # The busiest worker's memory: the process's peak and the trial's own growth over its start.
        assert 0 < final["peak_memory_growth_mb"] <= final["peak_memory_mb"]
        # As a single-process trial: the final record and the per-response held-out data for the report.
        assert json.loads((trial_dir / "final.json").read_text())["status"] == "finished"
        heldout = json.loads((trial_dir / "heldout.json").read_text())
        assert len(heldout["pairs"]["chosen_reward"]) == SMALL["data"]["task"]["n_eval"]
        # The trained policy is the Ray Train checkpoint, inside the trial's directory in storage.
        checkpoint = final["checkpoint_path"]
        saved = "adapter_config.json" if "lora" in methods[i] else "config.json"
        assert checkpoint.startswith(str(trial_dir)) and os.path.isfile(os.path.join(checkpoint, saved))
        if "lora" in methods[i]:  # the adapter alone, gathered from the ZeRO-3 shards
            assert sorted(os.listdir(checkpoint)) == ["adapter_config.json", "adapter_model.safetensors"]
            assert 0 < final["trainable_params"] < final["total_params"] / 4

        multi = [h["train_loss"] for h in history]
        single, single_final = single_worker_trial(sw, i)
        assert len(multi) == len(single) == 8  # 128 pairs / 16 per step, logged every step
        diffs = [abs(a - b) for a, b in zip(multi, single, strict=True)]
        print(f"{methods[i]}: max |loss(2 workers) - loss(1 worker)| = {max(diffs):.2e}; losses {multi}")
        assert max(diffs) <= LOSS_TOLERANCE, (multi, single)
        # Held-out metrics come from the same policy, evaluated on shares of the held-out set.
        assert final["reward_accuracy"] == pytest.approx(single_final["reward_accuracy"], abs=1 / 32)
        assert final["reward_margin"] == pytest.approx(single_final["reward_margin"], abs=1e-3)
        assert final["gen_length"] == pytest.approx(single_final["gen_length"], abs=0.5)


def test_zero3_evaluation_generates_from_a_gathered_copy_as_in_lockstep(start):
    # Two worker processes (gloo, real DeepSpeed ZeRO-3 on CPU, without Ray) hold a LoRA policy whose
    # adapter is not zero: generating from a plain copy gathered once gives the same greedy answers as
    # the sharded model forwarding in lockstep (synced_gpus), and is the way picked when it fits.
    import torch

    from ablate.data.synthetic import VOCAB
    from bench.generation import zero3_generations, zero3_trial

    trial = zero3_trial(start, WORKERS, lora=LORA)
    torch.manual_seed(0)
    prompts = [[2, *torch.randint(4, len(VOCAB), (n,)).tolist()] for n in (5, 11, 7, 14, 6, 9, 12)]  # BOS first
    out = zero3_generations(trial, prompts, new_tokens=8, batch=2, lora_noise=0.5)
    assert out["auto"] == "gathered" and out["auto_no_room"] == "synced"
    synced, gathered = out["synced"], out["gathered"]
    assert len(gathered["texts"]) == len(prompts)
    assert gathered["texts"] == synced["texts"] and gathered["counts"] == synced["counts"]
    assert any(c > 0 for c in gathered["counts"])
