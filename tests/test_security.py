"""Security defaults: no remote code unless the sweep file asks (with a warning), YAML loaded safely,
no unpickling of files (torch.load only with weights_only=True) anywhere in the source tree."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ablate import models
from ablate.sweep import cli as run
from tests.conftest import REPO, SMALL

CUSTOM_CODE = """
import os
from pathlib import Path
Path(os.environ["ABLATE_TEST_MARKER"]).write_text("custom code ran")
from transformers import PretrainedConfig
class ShadyConfig(PretrainedConfig):
    model_type = "shady"
"""


@pytest.fixture
def custom_code_model(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A model directory whose config and tokenizer point at Python code shipped with it."""
    d = tmp_path / "shady-model"
    d.mkdir()
    (d / "config.json").write_text(
        json.dumps({"model_type": "shady", "auto_map": {"AutoConfig": "configuration_shady.ShadyConfig",
                                                         "AutoModelForCausalLM": "configuration_shady.Shady"}})
    )  # fmt: skip
    (d / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["configuration_shady.ShadyTokenizer", None]}})
    )
    (d / "configuration_shady.py").write_text(CUSTOM_CODE)
    marker = tmp_path / "marker"
    monkeypatch.setenv("ABLATE_TEST_MARKER", str(marker))
    return d, marker


def test_models_and_tokenizers_do_not_run_shipped_code_by_default(custom_code_model):
    d, marker = custom_code_model
    with pytest.raises(ValueError, match="trust_remote_code"):
        models.load_model(str(d), torch.device("cpu"))
    with pytest.raises(ValueError, match="trust_remote_code"):
        models.load_tokenizer(str(d))
    assert not marker.exists()


def test_the_shipped_code_does_run_when_trusted(custom_code_model, tmp_path):
    """The control for the test above: the same directory with trust_remote_code=True runs its code
    (in a subprocess, so transformers copies the module into a temporary HF_MODULES_CACHE)."""
    d, marker = custom_code_model
    code = f"import torch; from ablate import models; models.load_model({str(d)!r}, torch.device('cpu'), trust_remote_code=True)"
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert marker.read_text() == "custom code ran", proc.stderr[-2000:]
    assert "trust_remote_code=True: its code runs here" in proc.stderr  # the trial-side warning


def write_sweep(tmp_path, **fields) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**SMALL, "storage": str(tmp_path / "results"), **fields}))
    return str(path)


def test_the_run_warns_when_the_sweep_file_trusts_remote_code(tmp_path, capsys):
    quiet = write_sweep(tmp_path)
    assert run.main([quiet, "--dry-run"]) == 0
    assert "trust_remote_code" not in capsys.readouterr().err
    trusting = write_sweep(tmp_path, model={"trust_remote_code": True})
    assert run.main([trusting, "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {trusting}: model.trust_remote_code is true" in err and "builtin:tiny" in err


def test_a_python_object_tag_in_a_sweep_file_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(
        f'name: !!python/object/apply:os.system ["touch {marker}"]\nmethods: [{{method: simpo}}]\n'
    )
    assert run.main([str(path), "--dry-run"]) == run.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: not valid YAML") and "python/object/apply:os.system" in err
    assert not marker.exists()


# --- a scan of the source tree for loaders that can run code -----------------------------------

SCANNED = ["ablate", "analysis", "bench", "tests"]
UNPICKLERS = {("pickle", "load"), ("pickle", "loads"), ("cloudpickle", "load"), ("cloudpickle", "loads"),
              ("dill", "load"), ("dill", "loads"), ("joblib", "load"), ("pd", "read_pickle"),
              ("pandas", "read_pickle"), ("marshal", "loads"), ("shelve", "open")}  # fmt: skip
UNSAFE_YAML = {"unsafe_load", "full_load", "load_all", "unsafe_load_all", "full_load_all"}


def unsafe_calls(source: str, filename: str = "<src>") -> list[str]:
    """Calls that can execute code from a file: ``torch.load`` without ``weights_only=True``,
    unpicklers, ``yaml.load`` without a safe loader, ``eval``/``exec``, ``trust_remote_code=True``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        kw = {k.arg: k.value for k in node.keywords}
        where = f"{filename}:{node.lineno}"
        if (owner, name) == ("torch", "load"):
            w = kw.get("weights_only")
            if not (isinstance(w, ast.Constant) and w.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
        elif (owner, name) in UNPICKLERS:
            found.append(f"{where}: {owner}.{name}")
        elif owner == "yaml" and (name in UNSAFE_YAML or name == "load"):
            loader = kw.get("Loader", node.args[1] if len(node.args) > 1 else None)
            safe = isinstance(loader, ast.Attribute) and loader.attr in ("SafeLoader", "CSafeLoader")
            if not safe:
                found.append(f"{where}: yaml.{name} without SafeLoader")
        elif isinstance(f, ast.Name) and name in ("eval", "exec"):  # the builtins, not model.eval()
            found.append(f"{where}: {name}()")
        w = kw.get("trust_remote_code")
        if isinstance(w, ast.Constant) and w.value is True:
            found.append(f"{where}: trust_remote_code=True")
    return found


def test_the_scanner_finds_each_unsafe_loader():
    bad = """
import pickle, torch, yaml
torch.load("x.pt")
torch.load("x.pt", weights_only=False)
pickle.load(open("x", "rb"))
yaml.load(text)
yaml.load(text, Loader=yaml.Loader)
yaml.unsafe_load(text)
eval("1")
AutoModel.from_pretrained("x", trust_remote_code=True)
"""
    assert len(unsafe_calls(bad)) == 8
    good = """
torch.load("x.pt", weights_only=True)
yaml.safe_load(text)
yaml.load(text, Loader=yaml.SafeLoader)
AutoModel.from_pretrained("x", trust_remote_code=trust_remote_code)
"""
    assert unsafe_calls(good) == []


def test_no_source_file_loads_code_from_data():
    files = [p for d in SCANNED if (REPO / d).is_dir() for p in sorted((REPO / d).rglob("*.py"))]
    assert len(files) > 10
    found = [hit for p in files for hit in unsafe_calls(p.read_text(), str(p.relative_to(REPO)))]
    # The one unpickler: SweepSearcher.restore reads the searcher state that ablate itself wrote into the
    # sweep's storage (Ray's Tuner.restore unpickles its own tuner.pkl from the same folder).
    allowed = [hit for hit in found if hit.startswith("ablate/sweep/tune.py:") and hit.endswith("pickle.load")]
    assert len(allowed) <= 1
    assert [hit for hit in found if hit not in allowed] == []
