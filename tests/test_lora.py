"""LoRA policies (ablate.trial.lora) end to end without Ray: real peft adapters on the small task's start point,
real training. What trains, what the reference is, what is saved, and the sweep file's lora fields."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from ablate import models
from ablate import spec as spec_mod
from ablate.spec import SpecError
from ablate.trial import checkpoint as ckpt_mod
from ablate.trial import config as trial_config
from ablate.trial import logps, lora, reference, worker_cache
from ablate.trial.backends.single import SingleProcess
from ablate.trial.runner import run_trial
from tests.conftest import SMALL, make_trial

LORA = {"r": 8, "alpha": 16.0, "dropout": 0.0, "target_modules": "all-linear"}
LR = 5e-3  # LoRA trains few weights: a larger step than full fine-tuning's default


def lora_trial(small_spec, start, method: str, **overrides) -> dict:
    cfg = make_trial(small_spec, start, method, **overrides)
    return {**cfg, "lora": dict(LORA), "training": {**cfg["training"], "learning_rate": LR}}


def trained(cfg: dict) -> tuple[dict, torch.nn.Module, dict[str, bytes], list[dict]]:
    """Run the trial; return its final metrics, the trained policy, its artifacts and reports."""
    artifacts: dict[str, bytes] = {}
    reports: list[dict] = []
    save = artifacts.__setitem__
    final = run_trial(cfg, reports.append, save, backend=(backend := SingleProcess(trial_config.parse(cfg), save)))
    assert final["status"] == "finished"
    return final, backend.policy, artifacts, reports


def start_point(cfg: dict) -> torch.nn.Module:
    return models.load_model(cfg["start"]["path"], torch.device("cpu"), trainable=False)


def test_lora_training_changes_only_the_adapter(small_spec, start):
    cfg = lora_trial(small_spec, start, "simpo")
    final, policy, _, _ = trained(cfg)
    frozen = dict(start_point(cfg).named_parameters())
    adapter = lora.adapter_parameters(policy)
    assert final["trainable_params"] == sum(p.numel() for p in adapter) < final["total_params"] / 4
    for name, p in policy.named_parameters():
        if ".lora_" in name:
            assert p.dtype == torch.float32 and p.requires_grad
        else:  # the start point, bit for bit
            assert not p.requires_grad and torch.equal(p, frozen[name.replace(".base_layer", "")]), name
    lora_b = [p for n, p in policy.named_parameters() if ".lora_B." in n]
    assert all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: every adapter trained
    assert math.isfinite(final["reward_accuracy"]) and final["steps"] == 8


@pytest.mark.parametrize("method", ["dpo", "ipo", "kto", "rdpo"])
def test_disabled_adapter_is_the_start_point(small_spec, start, method):
    """The online reference of a LoRA policy (its adapter off) equals the frozen start point's log-probs,
    after training under each reference-based objective, and training with it gives the losses of the
    precomputed reference (computed from the start point)."""
    online = lora_trial(small_spec, start, method, reference="online")
    final, policy, _, reports = trained(online)
    cfg = trial_config.parse(online)
    pairs = worker_cache.tokenized_splits(cfg, models.load_tokenizer(cfg.start.path)).held_out
    ref = reference.prepare(cfg, SingleProcess(cfg), [], 0)
    assert ref.model is None and ref.adapter_off  # no second model
    off = ref.held_out(pairs, policy)
    frozen = logps.pair_logps(start_point(online), pairs, 64, 0, "cpu")
    on = logps.pair_logps(policy, pairs, 64, 0, "cpu")
    assert torch.allclose(off.chosen, frozen.chosen, atol=1e-4) and torch.allclose(off.rejected, frozen.rejected, atol=1e-4)
    assert (on.chosen - frozen.chosen).abs().max() > 1e-2  # the trained adapter does change the policy
    assert all(p.requires_grad for p in lora.adapter_parameters(policy))  # switched back on

    if method != "dpo":
        return  # the training path below is the same for every method
    _, _, _, pre = trained(lora_trial(small_spec, start, method, reference="precomputed"))
    for a, b in zip(reports, pre, strict=True):
        if "train_loss" in a:
            assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
    assert final["reward_accuracy"] == pytest.approx(pre[-1]["reward_accuracy"], abs=1e-6)


def test_final_adapter_loads_with_peft_on_the_start_point(small_spec, start, tmp_path):
    from peft import PeftModel

    cfg = lora_trial(small_spec, start, "simpo")
    _, policy, artifacts, _ = trained(cfg)
    assert sorted(artifacts) == ["adapter_config.json", "adapter_model.safetensors", "heldout.json", "provenance.json"]
    assert len(artifacts["adapter_model.safetensors"]) < 200_000  # the adapter, not the model
    for name, data in artifacts.items():
        (tmp_path / name).write_bytes(data)
    loaded = PeftModel.from_pretrained(start_point(cfg), tmp_path)
    ids = torch.tensor([[1, 5, 9, 12, 7, 3]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, policy.eval()(input_ids=ids).logits, atol=1e-5)


def test_checkpoint_keeps_the_adapter_and_resumes(small_spec, start, tmp_path):
    cfg = lora_trial(small_spec, start, "dpo", reference="online", training={"checkpoint_every": 4})
    states: list[dict] = []

    def report_checkpoint(metrics: dict, directory: str) -> None:
        states.append(ckpt_mod.load(directory))

    full = run_trial(cfg, lambda _: None, report_checkpoint=report_checkpoint)
    assert [s["step"] for s in states] == [4, 8]
    assert all(".lora_" in k for k in states[0]["model"])  # no start-point weights in the checkpoint
    resumed = run_trial(cfg, lambda _: None, resume=states[0])
    assert resumed["resumed_from_step"] == 4
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], abs=1e-6)
    assert resumed["reward_accuracy"] == full["reward_accuracy"]


def test_lora_with_gradient_checkpointing_trains(small_spec, start):
    cfg = lora_trial(small_spec, start, "simpo", model={"gradient_checkpointing": True})
    plain, _, _, _ = trained(lora_trial(small_spec, start, "simpo"))
    final, policy, _, _ = trained(cfg)
    assert policy.is_activation_checkpointing
    assert final["train_loss"] == pytest.approx(plain["train_loss"], abs=1e-5)  # the same steps, recomputed


# --- the sweep file -------------------------------------------------------------------------------


def load(tmp_path, body: dict) -> spec_mod.SweepSpec:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", **body}))
    return spec_mod.load_sweep(path)


def test_lora_rank_grid_and_full_entries_expand(tmp_path):
    spec = load(tmp_path, {
        "model": {"lora": {"r": {"grid": [8, 16, 64]}, "alpha": 16}},
        "methods": [{"method": "simpo"}, {"method": "dpo", "lora": False}, {"method": "dpo", "lora": {"r": 4}}],
    })  # fmt: skip
    trials = spec_mod.expand(spec)
    got = [(t["label"], t["setting"], t.get("lora") and t["lora"]["r"]) for t in trials]
    assert got == [
        ("SimPO (LoRA)", "lora.r=8,lora.alpha=16.0", 8), ("SimPO (LoRA)", "lora.r=16,lora.alpha=16.0", 16),
        ("SimPO (LoRA)", "lora.r=64,lora.alpha=16.0", 64), ("DPO", "default", None),
        ("DPO (LoRA)", "lora.r=4,lora.alpha=16.0", 4),
    ]  # fmt: skip
    assert "lora" not in trials[0]["model"]  # the adapter is the trial's own section
    trial_config.parse({**trials[0], "start": {"path": "x"}})  # a valid trial config


def test_lora_search_draws_the_rank(tmp_path):
    spec = load(tmp_path, {
        "search": "random", "num_samples": 3,
        "methods": [{"method": "simpo", "lora": {"r": {"randint": [4, 32]}, "dropout": {"uniform": [0.0, 0.2]}}}],
    })  # fmt: skip
    (entry,) = spec_mod.search_plan(spec)
    assert set(entry.spaces) == {"lora.r", "lora.dropout"} and entry.label == "SimPO (LoRA)"
    trial = spec_mod.sampled_trial(spec, entry, {"lora.r": 12, "lora.dropout": 0.123456}, 0, 0)
    assert trial["lora"]["r"] == 12 and trial["lora"]["dropout"] == 0.1235
    assert trial["setting"] == "lora.r=12,lora.dropout=0.1235"


@pytest.mark.parametrize(
    "body, needles",
    [
        ({"model": {"lora": {"alpah": 8}}}, ["model.lora.alpah", "did you mean 'alpha'"]),
        ({"model": {"lora": {"r": 0}}}, ["model.lora.r", "greater than or equal to 1"]),
        ({"methods": [{"method": "simpo", "lora": {"r": 8, "dropuot": 0.1}}]}, ["methods.0.lora.dropuot", "dropout"]),
        ({"model": {"lora": {"r": {"uniform": [4, 8]}}}}, ["model.lora.r", "grid search"]),
    ],
)
def test_bad_lora_fields_name_the_field(tmp_path, body, needles):
    with pytest.raises(SpecError) as e:
        load(tmp_path, {"methods": [{"method": "simpo"}], **body})
    for needle in needles:
        assert needle in str(e.value), str(e.value)


def test_small_lora_settings_are_valid():
    spec_mod.SweepSpec.model_validate({**SMALL, "model": {"lora": LORA}})


def test_ready_lora_sweep(capsys):
    """sweeps/lora.yaml: SimPO and DPO, each full and as LoRA adapters of two ranks, two seeds."""
    from ablate.sweep.cli import main as run_main
    from tests.conftest import REPO

    path = REPO / "sweeps" / "lora.yaml"
    spec = spec_mod.load_sweep(path)
    trials = spec_mod.expand(spec)
    assert len(trials) == 12 and spec.seeds == [0, 1]
    kinds = {(t["method"], t.get("lora") and t["lora"]["r"]) for t in trials}
    assert kinds == {("simpo", None), ("simpo", 4), ("simpo", 16), ("dpo", None), ("dpo", 4), ("dpo", 16)}
    assert all(t["reference"] == "online" for t in trials if t["method"] == "dpo")
    assert run_main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "DPO (LoRA)" in out and "LoRA r=16" in out and out.strip().splitlines()[-1] == "12 trials"
