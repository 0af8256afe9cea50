"""The paper-scale sweep files (sweeps/paper/): valid, the expected trials, 8 GPUs and ZeRO-3 per
trial, global batch 128. Checked with --dry-run only: they need a GPU cluster, and validation must
not touch the hub (HF_HUB_OFFLINE=1 here; hub ids are not looked up)."""

from __future__ import annotations

import pytest

from ablate import spec as spec_mod
from ablate.sweep.cli import main as run_main
from tests.conftest import REPO

# Released SimPO settings (repository README): model, data, beta, gamma/beta, learning rate.
PAPER = {
    "mistral-7b-base": ("alignment-handbook/zephyr-7b-sft-full", "HuggingFaceH4/ultrafeedback_binarized", 2.0, 0.8, 3e-7),
    "mistral-7b-instruct": ("mistralai/Mistral-7B-Instruct-v0.2", "princeton-nlp/mistral-instruct-ultrafeedback", 2.5, 0.1, 5e-7),
    "llama3-8b-base": ("princeton-nlp/Llama-3-Base-8B-SFT", "HuggingFaceH4/ultrafeedback_binarized", 2.0, 0.5, 6e-7),
    "llama3-8b-instruct": ("meta-llama/Meta-Llama-3-8B-Instruct", "princeton-nlp/llama3-ultrafeedback", 2.5, 0.55, 1e-6),
}  # fmt: skip
LR_GRID = 4  # {3e-7, 5e-7, 6e-7, 1e-6}
# SimPO + w/o LN + gamma=0 at the released setting, then each baseline's grid x the lr grid.
BASELINE_GRIDS = 3 + 4 + 3 + 3 + 4 + 4 * 3 + 4 + 4 * 4  # DPO IPO CPO KTO ORPO R-DPO RRHF SLiC-HF
EXPECTED_TRIALS = 3 + LR_GRID * BASELINE_GRIDS


LORA_VARIANT = "llama3-8b-base-lora"
ON_POLICY_VARIANT = "llama3-8b-instruct-v0.2"  # SimPO v0.2's on-policy recipe (tests/test_onpolicy.py too)


def test_every_paper_setting_has_a_file():
    assert {p.stem for p in (REPO / "sweeps" / "paper").glob("*.yaml")} == set(PAPER) | {LORA_VARIANT, ON_POLICY_VARIANT}


def trial_lines(out: str) -> list[str]:
    """The dry run's trial rows: after the data split and the header, before the memory plan."""
    lines = out.strip().splitlines()
    lines = lines[: lines.index(next(line for line in lines if line.startswith("memory plan")))]
    return [line for line in lines if line.split() and line.split()[0].isdigit()]


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_sweep_dry_run(name, capsys, monkeypatch):
    path = REPO / "sweeps" / "paper" / f"{name}.yaml"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run_main([str(path), "--dry-run"]) == 0  # the CLI's own entry point, in process
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == f"{EXPECTED_TRIALS} trials"
    assert any(line.startswith("order: interleaved") for line in out.splitlines())
    rows = trial_lines(out)
    assert len(rows) == EXPECTED_TRIALS
    assert all(line.endswith("8 workers x (cpu=8.0 gpu=1.0), ZeRO-3") for line in rows)

    model, data, beta, ratio, lr = PAPER[name]
    spec = spec_mod.load_sweep(path)
    trials = spec_mod.expand(spec)
    assert len(trials) == EXPECTED_TRIALS
    assert spec.model.name_or_path == model and spec.data.source == data
    assert spec.data.max_length == 2048 and spec.model.gradient_checkpointing
    assert spec.max_concurrent == 4  # one trial per GPU node; waiting trials hold no driver process
    t = trials[0]
    assert t["label"] == "SimPO" and t["hparams"]["beta"] == beta
    assert t["hparams"]["gamma"] == pytest.approx(beta * ratio) and t["training"]["learning_rate"] == lr
    for t in trials:
        tr, res = t["training"], t["resources"]
        assert tr["batch_size"] * tr["grad_accum"] * res["workers"] == 128  # the paper's global batch
        assert res["workers"] * res["gpus_per_worker"] == 8 and t["deepspeed"]["stage"] == 3
    baselines = {t["label"] for t in trials} - {"SimPO", "SimPO w/o LN", "SimPO gamma=0"}
    assert baselines == {"DPO", "IPO", "CPO", "KTO", "ORPO", "R-DPO", "RRHF", "SLiC-HF"}
    assert {t["training"]["learning_rate"] for t in trials if t["label"] == "DPO"} == {3e-7, 5e-7, 6e-7, 1e-6}


def test_lora_variant_fits_eight_trials_per_8xh100_node(capsys, monkeypatch):
    """The LoRA variant of Llama-3-8B Base: the paper's trials, each on one GPU, every one fitting an H100's
    80 GB by the memory plan (GPU memory from cluster.yaml's p5.48xlarge nodes): 8 trials per node."""
    path = REPO / "sweeps" / "paper" / f"{LORA_VARIANT}.yaml"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run_main([str(path), "--dry-run", "--cluster", str(REPO / "cluster.yaml"), "--trial-hours", "1"]) == 0
    out, err = capsys.readouterr()
    assert not err  # no entry is too big
    assert "GPU memory 80.0 GB from gpu_8x_h100: p5.48xlarge" in out
    assert len(trial_lines(out)) == EXPECTED_TRIALS and "GPU-hours: 199 trials x 1 GPUs x 1 h = 199.0" in out
    plan = [line.split() for line in out.splitlines() if "LoRA r=64" in line]
    assert len(plan) == 11 and all(int(row[-1]) >= 1 for row in plan)  # every entry: at least 1 per GPU
    spec = spec_mod.load_sweep(path)
    assert spec.model.name_or_path == PAPER["llama3-8b-base"][0] and spec.model.lora.r == 64
    for t in spec_mod.expand(spec):
        assert t["lora"]["r"] == 64 and t["resources"]["gpus"] == 1 and t["deepspeed"] is None
        assert t["training"]["batch_size"] * t["training"]["grad_accum"] == 128  # the paper's global batch


def test_on_policy_v02_sweep_dry_run(capsys, monkeypatch):
    """SimPO v0.2: ArmoRM judges 5 samples per prompt; SimPO (beta 10, gamma/beta 0.3, lr 1e-6) and DPO on
    both data arms; the build's generator and judge fit one 80 GB GPU."""
    path = REPO / "sweeps" / "paper" / f"{ON_POLICY_VARIANT}.yaml"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run_main([str(path), "--dry-run", "--cluster", str(REPO / "cluster.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "4 trials"
    assert "x 5 samples x 4096 max_new_tokens; judge RLHFlow/ArmoRM-Llama3-8B-v0.1" in out
    assert "they fit one GPU of 80 GB" in out
    spec = spec_mod.load_sweep(path)
    assert spec.data.on_policy.sample_seeds() == [13, 21, 42, 79, 100]
    g = spec.data.on_policy.generation
    assert (g.temperature, g.top_p) == (0.8, 0.95) and spec.data.on_policy.judge.trust_remote_code
    simpo = [t for t in spec_mod.expand(spec) if t["method"] == "simpo"]
    assert {t["label"] for t in simpo} == {"SimPO [off-policy]", "SimPO [on-policy]"}
    assert all(t["hparams"]["beta"] == 10.0 and t["hparams"]["gamma"] == pytest.approx(3.0) for t in simpo)
    assert all(t["training"]["learning_rate"] == 1e-6 for t in simpo)
