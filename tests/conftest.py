"""Shared fixtures: a small SFT start point trained once per test session (real torch, real files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One math thread per process: `make test` runs two pytest workers on two cores, beside Ray's trial
# processes (which Ray already gives one thread per CPU). Torch's default of one thread per core has the
# processes' OpenMP threads spin against each other: the in-process training tests ran 16 % slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from ablate import spec as spec_mod  # noqa: E402
from ablate.trial import startpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

SMALL = {
    "name": "small",
    "methods": [{"method": "simpo"}],
    "data": {"task": {"n_train": 128, "n_eval": 32, "n_sft": 600}},
    "sft": {"epochs": 2},
    "training": {"batch_size": 16, "log_every": 4},
    "evaluation": {"num_prompts": 16, "max_new_tokens": 8},
}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def small_spec(cache_dir) -> spec_mod.SweepSpec:
    return spec_mod.SweepSpec.model_validate({**SMALL, "cache_dir": str(cache_dir)})


@pytest.fixture(scope="session")
def start(small_spec) -> dict:
    return startpoint.prepare_sweep(small_spec, log=lambda *_: None)


def make_trial(small_spec, start, method: str, hparams: dict | None = None, **overrides) -> dict:
    """A single trial config of ``method`` on the small task, as ``ablate.spec.expand`` makes them."""
    entry = {
        "method": method,
        "hparams": hparams or {},
        **{k: v for k, v in overrides.items() if k == "reference"},
    }
    spec = small_spec.model_copy(update={"methods": [spec_mod.MethodEntry.model_validate(entry)]})
    trial = spec_mod.expand(spec)[0]
    trial["start"] = start
    for k, v in overrides.items():
        if k != "reference":
            trial[k] = {**trial[k], **v} if isinstance(v, dict) else v
    return trial


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with slow (Ray) tests first, each file's tests in their own order: under ``make test``'s
    two workers the long files start at once and the quick ones fill in around them, rather than the
    longest starting last and running alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # a stable sort
