"""One trial end to end without Ray: real model, real training, real evaluation."""

import math

import pytest

from ablate import worker_cache
from ablate.trial import run_trial
from tests.conftest import make_trial

FINAL_METRICS = [
    "reward_accuracy", "reward_margin", "chosen_avg_logp", "rejected_avg_logp", "length_logp_spearman",
    "reward_likelihood_agreement", "gen_length", "oracle_win_rate", "runtime_s", "peak_memory_mb",
    "tokens_per_s", "train_loss", "peak_memory_growth_mb", "runtime_cpu_s", "started_at",
]  # fmt: skip


@pytest.mark.parametrize("method", ["simpo", "dpo"])
def test_trial_reports_every_metric(small_spec, start, method):
    reports = []
    final = run_trial(make_trial(small_spec, start, method), reports.append)
    assert final["status"] == "finished"
    for k in FINAL_METRICS:
        assert k in final and math.isfinite(final[k]), k
    assert 0 <= final["reward_accuracy"] <= 1 and 0 <= final["oracle_win_rate"] <= 1
    assert final["steps"] == 8  # 128 pairs / batch 16, one epoch
    assert [r["step"] for r in reports[:-1]] == [4, 8]  # training reports every log_every steps
    assert reports[-1] is final or reports[-1] == final


def test_simpo_reward_likelihood_agreement_is_exactly_one(small_spec, start):
    final = run_trial(make_trial(small_spec, start, "simpo", {"gamma": 0.5}), lambda _: None)
    assert final["reward_likelihood_agreement"] == 1.0


def test_same_config_and_seed_give_the_same_metrics(small_spec, start):
    cfg = make_trial(small_spec, start, "simpo")
    a, b = run_trial(cfg, lambda _: None), run_trial(cfg, lambda _: None)
    for k in ("train_loss", "reward_accuracy", "reward_margin", "oracle_win_rate"):
        assert a[k] == b[k]


def test_a_workers_first_trial_warms_the_worker_and_trains_as_later_ones(small_spec, start, monkeypatch):
    cfg = make_trial(small_spec, start, "dpo", reference="online")
    later = run_trial(cfg, lambda _: None)
    # As in a fresh worker process: its caches empty and no training step taken yet. The warm-up before
    # the memory baseline loads them and takes a throwaway step, without touching the seeded RNG.
    monkeypatch.setattr(worker_cache, "_models", {})
    monkeypatch.setattr(worker_cache, "_tokenized", {})
    monkeypatch.setattr(worker_cache, "_stepped", set())
    first = run_trial(cfg, lambda _: None)
    assert worker_cache._models and worker_cache._stepped  # warmed up by the trial
    for k in ("train_loss", "reward_accuracy", "reward_margin", "oracle_win_rate"):
        assert first[k] == later[k], k
    for final in (first, later):  # the trial's own memory: policy, reference, optimizer, activations
        assert 0 < final["peak_memory_growth_mb"] <= final["peak_memory_mb"]


def test_online_and_precomputed_reference_give_the_same_losses(small_spec, start):
    online, pre = [], []
    run_trial(make_trial(small_spec, start, "dpo", reference="online"), online.append)
    run_trial(make_trial(small_spec, start, "dpo", reference="precomputed"), pre.append)
    for a, b in zip(online, pre, strict=True):
        if "train_loss" in a:
            assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
    assert online[-1]["reward_accuracy"] == pytest.approx(pre[-1]["reward_accuracy"], abs=1e-6)


@pytest.mark.parametrize(
    "method", ["simpo", "dpo", "ipo", "cpo", "kto", "orpo", "rdpo", "rrhf", "slic_hf", "sft"]
)
def test_every_objective_trains_and_evaluates(small_spec, start, method):
    final = run_trial(make_trial(small_spec, start, method), lambda _: None)
    assert final["status"] == "finished"
    assert final["steps"] == 8
    for k in FINAL_METRICS:
        assert math.isfinite(final[k]), (method, k)


def test_reference_free_methods_never_load_a_reference(small_spec, start, tmp_path):
    cfg = make_trial(small_spec, start, "simpo", cache_dir=str(tmp_path / "fresh-cache"))
    assert cfg["reference"] is None
    run_trial(cfg, lambda _: None)
    assert not (tmp_path / "fresh-cache" / "reference").exists()  # no reference log-probs computed
