"""Mixed precision: under a bf16/fp16 compute dtype the trained policy keeps float32 weights, so the
small updates of preference optimisation are not rounded away, and trials run end to end (CPU
autocast here; the same code path is CUDA's on a GPU)."""

import math

import pytest
import torch

from ablate import models
from ablate.trial import preference
from ablate.trial.runner import run_trial
from ablate.trial.train import AdamWStepper, TrainSettings, train
from tests.conftest import make_trial
from tests.test_fast_paths import random_pairs, tiny_llama

LR = 1e-6  # the paper's learning rates are 3e-7 to 1e-6


def one_step(model, compute_dtype: torch.dtype) -> tuple[float, float]:
    """Largest weight change of one SimPO step at ``LR`` (no warm-up, so the step uses the full rate),
    and the fraction of the weights that changed at all."""
    before = [p.detach().float().clone() for p in model.parameters()]
    pairs = random_pairs(16)
    loss_fn = preference.loss_function(model, "simpo", {"beta": 2.0, "gamma": 1.0})
    settings = TrainSettings(learning_rate=LR, warmup_ratio=0.0, log_every=1)
    model.train()
    collate = preference.collator(pairs, 0, "cpu")
    stepper = AdamWStepper(model, loss_fn, settings, 1, collate, compute_dtype=compute_dtype)
    train(stepper, lambda epoch: preference.batch_order(pairs, 16, 0, epoch), settings)
    diffs = [
        (p.detach().float() - b).abs().flatten() for p, b in zip(model.parameters(), before, strict=True)
    ]
    diff = torch.cat(diffs)
    return diff.max().item(), (diff > 0).float().mean().item()


def test_bf16_compute_keeps_float32_weights_and_their_updates():
    mixed = tiny_llama()
    assert models.master_dtype(torch.bfloat16) == torch.float32
    change, moved = one_step(mixed, torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in mixed.parameters())
    assert LR / 2 < change < 20 * LR  # Adam's first step moves each weight by about the learning rate
    assert moved > 0.9


def test_bf16_weights_would_lose_the_same_updates():
    # Why the policy is not stored in bf16: the same step leaves almost every bf16 weight as it was
    # (only those within about 1e-4 of zero can hold a change of 1e-6).
    pure = tiny_llama().to(torch.bfloat16)
    _, moved = one_step(pure, torch.bfloat16)
    assert moved < 0.05


def test_fp16_compute_scales_the_loss_and_still_steps():
    model = tiny_llama()
    change, moved = one_step(model, torch.float16)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert LR / 2 < change < 20 * LR and moved > 0.9


@pytest.mark.parametrize("method", ["simpo", "dpo"])
def test_bf16_trial_runs_end_to_end(small_spec, start, method, tmp_path):
    cfg = make_trial(small_spec, start, method, cache_dir=str(tmp_path))
    cfg["model"] = {**cfg["model"], "dtype": "bfloat16"}
    bf16 = run_trial(cfg, lambda _: None)
    cfg32 = make_trial(small_spec, start, method, cache_dir=str(tmp_path))
    cfg32["model"] = {**cfg32["model"], "dtype": "float32"}  # explicit: ``auto`` is bf16 on a GPU
    fp32 = run_trial(cfg32, lambda _: None)
    assert bf16["status"] == "finished" and bf16["steps"] == fp32["steps"]
    for k in ("train_loss", "reward_accuracy", "reward_margin", "oracle_win_rate"):
        assert math.isfinite(bf16[k]), k
    # bf16 matmuls change the numbers a little, not the outcome of 8 steps
    assert bf16["train_loss"] == pytest.approx(fp32["train_loss"], rel=0.05)
    if method == "dpo":  # bf16 and float32 reference log-probs are cached apart
        assert len(list((tmp_path / "reference").glob("*.pt"))) == 4


def test_gpu_context_leaves_out_cudnn_attention_and_restores_it():
    # cuDNN attention rebuilds its graph for each new batch width (bench/profile_trial.py on an H200);
    # the flags are process-global, so this runs without a GPU.
    before = torch.backends.cuda.cudnn_sdp_enabled()
    with models.compute_context(torch.device("cuda"), torch.float32):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
    with models.compute_context(torch.device("cpu"), torch.bfloat16):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert torch.backends.cuda.cudnn_sdp_enabled() == before  # CPU kernels are left alone
    assert not torch.is_autocast_enabled("cpu")
