"""GPU-only checks, run by ``bash bench/on_gpu.sh`` on a lent GPU machine (CI has no GPU, so they
are skipped there and count for nothing): a trial on CUDA computes in bf16 and its attention never
takes cuDNN's kernels, whose per-shape set-up dominated GPU trials (docs/benchmarks.md, 2)."""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from ablate.trial.runner import run_trial
from tests.conftest import make_trial

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/on_gpu.sh)")


@pytest.mark.parametrize("method", ["simpo", "dpo"])
def test_gpu_trial_attention_avoids_cudnn(small_spec, start, method):
    cfg = make_trial(small_spec, start, method, **({"reference": "online"} if method == "dpo" else {}))
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        final = run_trial(cfg, lambda _: None)
    names = {e.key for e in prof.key_averages()}
    assert final["status"] == "finished"
    assert not [n for n in names if "cudnn_attention" in n]
    assert [n for n in names if "flash_attention" in n or "efficient_attention" in n]


def test_gpu_trials_compute_in_bf16_and_keep_float32_weights():
    from ablate import models

    compute = models.pick_dtype("auto", torch.device("cuda"))
    assert compute == torch.bfloat16 and models.master_dtype(compute) == torch.float32
