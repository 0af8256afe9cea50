"""Provenance (ablate.provenance, analysis.provenance, analysis.diff) on real files: a model laid out as
a Hugging Face cache snapshot and trained from offline by hub id, trial records that differ in exactly
one input, and a sweep resumed after a package upgrade flagged by the report."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from ablate import provenance
from ablate.data import synthetic
from ablate.readout.loader import load_trials
from ablate.sweep import cli as run
from ablate.sweep import launch
from ablate.sweep import plan as plan_mod
from ablate.trial.config import TrialConfig
from ablate.trial.runner import run_trial
from analysis import diff
from analysis import report as report_mod
from analysis.provenance import export_record, section
from tests.analysis_data import paper_like_sweep
from tests.conftest import SMALL, make_trial

SHA = "0123456789abcdef0123456789abcdef01234567"


def hub_snapshot(hf_home: Path, repo: str, model_dir: str) -> Path:
    """``model_dir``'s files as the hub cache keeps a download: blobs, a snapshot of links, refs/main."""
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot, blobs = root / "snapshots" / SHA, root / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for f in Path(model_dir).iterdir():
        blob = blobs / f"blob-{f.name}"
        shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(SHA)
    return snapshot


def saver(trial_dir: Path):
    trial_dir.mkdir(parents=True, exist_ok=True)

    def save(name: str, data: bytes) -> None:
        (trial_dir / name).write_bytes(data)

    return save


def test_hub_model_is_pinned_once_and_trials_train_from_its_snapshot_offline(
    small_spec, start, tmp_path, monkeypatch, capsys
):
    hf_home = tmp_path / "hf"
    snapshot = hub_snapshot(hf_home, "org/tiny", start["path"])
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    spec = small_spec.model_copy(update={"model": small_spec.model.model_copy(update={"name_or_path": "org/tiny"})})
    pins = provenance.pin(spec)
    assert [(p.kind, p.name, p.revision, p.path) for p in pins] == [("model", "org/tiny", SHA, str(snapshot))]

    plan = plan_mod.build(spec).with_start(launch.start_points(spec))
    assert plan.trials[0]["start"]["path"] == "org/tiny"  # a real model is used as named ...
    plan = provenance.attach(plan, pins, log=lambda *_: None)
    cfg = plan.trials[0]
    assert cfg["start"]["path"] == str(snapshot)  # ... until pinned: every trial loads that snapshot
    assert cfg["provenance"]["model"]["revision"] == SHA and cfg["provenance"]["pins"] == [{"kind": "model", "name": "org/tiny", "revision": SHA}]
    trial_dir = tmp_path / "trial"
    final = run_trial({**cfg, "training": {**cfg["training"], "epochs": 1}}, lambda _: None, saver(trial_dir))
    assert final["status"] == "finished"
    record = json.loads((trial_dir / provenance.PROVENANCE_FILE).read_text())
    assert record["inputs"]["model"]["revision"] == SHA and record["effective_batch"] == 16
    assert record["environment"]["packages"]["torch"] and record["environment"]["python"]

    # The dry run prints the pin; a hub model that is not in the cache stops the launch (exit 2, no Ray).
    sweep = tmp_path / "hub.yaml"
    sweep.write_text(yaml.safe_dump({**SMALL, "model": {"name_or_path": "org/tiny"}, "cache_dir": str(tmp_path / "c")}))
    capsys.readouterr()
    assert run.main([str(sweep), "--dry-run"]) == 0
    assert f"pin: model org/tiny @ {SHA} ({snapshot})" in capsys.readouterr().out
    sweep.write_text(sweep.read_text().replace("org/tiny", "org/missing"))
    assert run.main([str(sweep)]) == 2
    err = capsys.readouterr().err
    assert "model org/missing: not in the local Hugging Face cache" in err and "huggingface-cli download" in err


def trial_dir(root: Path, name: str, spec, cfg: dict, start: dict) -> Path:
    """A trial directory as a sweep leaves it: params.json and the provenance.json the trial writes, with
    the driver's input fingerprints computed now."""
    cfg = {**cfg, "start": start, "cache_dir": spec.cache_dir,
           "provenance": provenance.sweep_inputs(spec, cfg["data"], start, [])}  # fmt: skip
    d = root / name
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps({"trial": cfg}))
    provenance.write(TrialConfig.model_validate(cfg), 1, saver(d))
    return d


def keys(a: Path, b: Path, capsys) -> list[str]:
    capsys.readouterr()
    code = diff.main([str(a), str(b)])
    out = capsys.readouterr().out
    assert code == (1 if out else 0)
    return [line[21:].split(": ", 1)[0] for line in out.splitlines()]  # "<category:20> <key>: A | B"


def test_diff_names_exactly_the_input_that_differs(small_spec, start, tmp_path, capsys):
    rows = synthetic.build_task(synthetic.TaskConfig())["train"][:80]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = tmp_path / "model"
    shutil.copytree(start["path"], model)
    local = {"path": str(model), "baseline": None}
    cfg = make_trial(small_spec, start, "simpo", data={"source": str(pairs)})
    base = trial_dir(tmp_path, "base", small_spec, cfg, local)

    # Only the data's rows: the same file, one response edited.
    pairs.write_text(pairs.read_text().replace(rows[3]["rejected"], rows[3]["rejected"] + " extra", 1))
    rows_changed = trial_dir(tmp_path, "rows", small_spec, cfg, local)
    assert keys(base, rows_changed, capsys) == ["inputs.data.train_rows"]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))

    # Only the chat template: the same model directory, a template added to its tokenizer.
    tok_cfg = model / "tokenizer_config.json"
    tok_cfg.write_text(json.dumps({**json.loads(tok_cfg.read_text()), "chat_template": "{{ messages[0]['content'] }}"}))
    templated = trial_dir(tmp_path, "template", small_spec, cfg, local)
    assert keys(base, templated, capsys) == ["inputs.chat_template"]

    # Only a package version: the record of a trial run after an upgrade.
    upgraded = tmp_path / "upgraded"
    shutil.copytree(base, upgraded)
    record = json.loads((upgraded / "provenance.json").read_text())
    record["environment"]["packages"]["transformers"] = "4.44.0"
    (upgraded / "provenance.json").write_text(json.dumps(record))
    assert keys(base, upgraded, capsys) == ["env.packages.transformers"]
    diff.main([str(base), str(upgraded)])
    installed = provenance.environment()["packages"]["transformers"]
    assert capsys.readouterr().out == f"{'environment':<20} env.packages.transformers: {installed} | 4.44.0\n"

    # Identical inputs print nothing (a copy, or the AlpacaEval export of the trial); a path that is not a
    # result is exit 2 with one paragraph.
    same = tmp_path / "same"
    shutil.copytree(base, same)
    assert keys(base, same, capsys) == []
    export = tmp_path / "export" / "alpaca_eval" / "simpo"
    export.mkdir(parents=True)
    (export / "model_outputs.json").write_text("[]")
    (export / "provenance.json").write_text(json.dumps(export_record(base)))
    assert keys(base, tmp_path / "export", capsys) == [] and keys(upgraded, export, capsys) == ["env.packages.transformers"]
    assert diff.main([str(base), str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'model'} is not a result") and err.count("\n") == 1


def test_report_flags_a_sweep_resumed_after_a_package_upgrade(tmp_path):
    sweep = paper_like_sweep(tmp_path)
    env = provenance.environment()
    for d in sorted(p for p in sweep.iterdir() if (p / "params.json").is_file()):
        cfg = json.loads((d / "params.json").read_text())["trial"]
        packages = dict(env["packages"], transformers="4.44.0") if cfg["seed"] >= 1 else env["packages"]
        record = {"version": 1, "environment": {**env, "packages": packages}, "inputs": {}, "effective_batch": 16}
        (d / "provenance.json").write_text(json.dumps(record))
    out = tmp_path / "reports"
    assert report_mod.main([str(sweep), "--out", str(out)]) == 0
    text = (out / "paper" / "report.md").read_text()
    assert "## Environment" in text
    section = text.split("## Environment", 1)[1]
    assert "4.44.0" in section and env["packages"]["transformers"] in section
    assert "Sweep paper's trials ran under different inputs" in text
    assert f"environment `packages.transformers`: 4.44.0, {env['packages']['transformers']}" in text


def test_trials_without_recorded_provenance_are_said_to_be_unknown(tmp_path):
    table, notes = section(load_trials([paper_like_sweep(tmp_path)]))
    assert table is None and len(notes) == 1 and notes[0].startswith("No trial recorded its provenance")


@pytest.mark.parametrize("name", ["org/tiny", "meta-llama/Meta-Llama-3-8B-Instruct", "gpt2"])
def test_hub_ids_are_told_from_paths(name, tmp_path):
    assert provenance.is_hub_id(name)
    assert not provenance.is_hub_id(str(tmp_path)) and not provenance.is_hub_id("builtin:tiny")
    assert not provenance.is_hub_id("./data/pairs.jsonl") and not provenance.is_hub_id("pairs.jsonl")
