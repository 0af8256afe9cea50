"""The multi-worker part of the sweep file (resources.workers, the deepspeed section) and the
DeepSpeed config generated from it or merged with the user's own. Fast: no Ray, no DeepSpeed."""

from __future__ import annotations

import json
import textwrap

import pytest

from ablate import spec as spec_mod
from ablate.spec import SpecError
from ablate.trial import dsconfig

BASE = "name: x\nmethods: [{method: simpo}]\n"


def load(tmp_path, body: str):
    path = tmp_path / "sweep.yaml"
    path.write_text(BASE + textwrap.dedent(body))
    return spec_mod.load_sweep(path)


def trial(tmp_path, body: str) -> dict:
    return spec_mod.expand(load(tmp_path, body))[0]


def test_generated_config_follows_the_sweep(tmp_path):
    t = trial(
        tmp_path,
        """
        training: {batch_size: 2, grad_accum: 8, learning_rate: 5.0e-7, weight_decay: 0.01, max_grad_norm: 1.0}
        resources: {workers: 8, gpus_per_worker: 1, cpus_per_worker: 10}
        deepspeed: {stage: 3}
        """,
    )
    cfg = dsconfig.resolve(t, "bfloat16", on_gpu=True)
    assert cfg["train_batch_size"] == 128  # 2 pairs x 8 accumulation steps x 8 workers: the paper's batch
    assert (cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"]) == (2, 8)
    assert cfg["bf16"] == {"enabled": True} and cfg["fp16"] == {"enabled": False}
    assert cfg["zero_optimization"]["stage"] == 3
    assert cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert cfg["optimizer"]["params"]["lr"] == 5e-7 and cfg["optimizer"]["params"]["weight_decay"] == 0.01
    assert cfg["gradient_clipping"] == 1.0


def test_offload_and_reference_config(tmp_path):
    t = trial(tmp_path, "resources: {workers: 2}\ndeepspeed: {stage: 3, offload: all}\n")
    cfg = dsconfig.resolve(t, "float32", on_gpu=False)
    assert cfg["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert cfg["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert cfg["optimizer"]["params"]["torch_adam"] is False  # offloading needs DeepSpeed's CPU Adam
    ref = dsconfig.reference_config(cfg)
    assert ref["zero_optimization"]["stage"] == 3 and "optimizer" not in ref
    assert ref["zero_optimization"]["offload_param"] == cfg["zero_optimization"]["offload_param"]


def test_multi_worker_defaults_to_zero3_and_single_worker_has_no_deepspeed(tmp_path):
    assert trial(tmp_path, "resources: {workers: 2}\n")["deepspeed"]["stage"] == 3
    assert trial(tmp_path, "")["deepspeed"] is None


def test_users_own_config_is_merged(tmp_path):
    (tmp_path / "ds.json").write_text(
        json.dumps(
            {
                "train_micro_batch_size_per_gpu": "auto",
                "zero_optimization": {"stage": 2, "reduce_bucket_size": 5e7},
            }
        )
    )
    t = trial(tmp_path, "training: {batch_size: 4}\nresources: {workers: 2}\ndeepspeed: {config: ds.json}\n")
    assert t["deepspeed"]["config"] == str((tmp_path / "ds.json").resolve())  # relative to the sweep file
    cfg = dsconfig.resolve(t, "float32", on_gpu=False)
    assert cfg["train_micro_batch_size_per_gpu"] == 4 and cfg["train_batch_size"] == 8
    assert cfg["zero_optimization"] == {"stage": 2, "reduce_bucket_size": 5e7}  # theirs, untouched
    assert cfg["optimizer"]["type"] == "AdamW"  # added: they gave none


@pytest.mark.parametrize(
    "body, needles",
    [
        ("resources: {workers: 2, gpus: 1}\n", ["resources", "gpus_per_worker"]),
        ("resources: {gpus_per_worker: 1}\n", ["resources", "DeepSpeed trials"]),
        ("resources: {workers: 0}\n", ["resources.workers"]),
        ("resources: {gpus: 1}\ndeepspeed: {stage: 3}\n", ["resources", "cpus_per_worker, gpus_per_worker"]),
        ("resources: {workers: 2}\ndeepspeed: {stage: 4}\n", ["deepspeed.stage"]),
        ("resources: {workers: 2}\ndeepspeed: {stage: 2, offload: all}\n", ["deepspeed", "needs stage: 3"]),
        ("resources: {workers: 2}\ndeepspeed: {stage: 0, offload: optimizer}\n", ["stage 1, 2 or 3"]),
        (
            "resources: {workers: 2}\ndeepspeed: {config: missing.json}\n",
            ["deepspeed.config", "missing.json"],
        ),
        ("resources: {workers: 2}\ndeepspeed: {config: ds.json, stage: 2}\n", ["either config", "not both"]),
        ("resources: {workers: 2}\ndeepspeed: {stages: 3}\n", ["deepspeed.stages", "did you mean 'stage'"]),
    ],
)
def test_bad_multi_worker_settings_name_the_field(tmp_path, body, needles):
    with pytest.raises(SpecError) as e:
        load(tmp_path, body)
    for n in needles:
        assert n in str(e.value), (n, str(e.value))


def test_users_config_that_contradicts_the_sweep_is_refused(tmp_path):
    (tmp_path / "ds.json").write_text(json.dumps({"train_batch_size": 256}))
    with pytest.raises(SpecError) as e:
        load(
            tmp_path,
            "training: {batch_size: 2, grad_accum: 8}\nresources: {workers: 8}\ndeepspeed: {config: ds.json}\n",
        )
    assert "train_batch_size is 256" in str(e.value) and "sweep implies 128" in str(e.value)
