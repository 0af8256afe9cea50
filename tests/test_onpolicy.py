"""On-policy preference data (ablate.onpolicy.build): one small real build on the session's SFT start point (real
torch generation, the task's oracle as judge, real shard files), its pairs checked against their own
prompts, a build killed by SIGKILL after its second shard resumed to the same bytes, the pick rules on
crafted samples, the cache key, the data arms' labels and the sweep file's checks (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from ablate import spec as spec_mod
from ablate.data import sources as datasource
from ablate.data import synthetic
from ablate.onpolicy import build as onpolicy
from ablate.onpolicy import pick as onpolicy_pick
from ablate.spec.onpolicy import OnPolicyConfig
from ablate.sweep.cli import main as run_main
from tests.conftest import REPO, SMALL

ON_POLICY = {"judge": "builtin:oracle", "samples": 3, "num_prompts": 24, "shard_size": 8, "batch_size": 16,
             "generation": {"max_new_tokens": 8}}  # fmt: skip


def trial_for(small_spec, start, cache_dir, **over) -> dict:
    """The first trial config of the small sweep with ``data.on_policy`` (``over`` on top of ON_POLICY)."""
    section = OnPolicyConfig.model_validate({**ON_POLICY, **over})
    spec = small_spec.model_copy(update={"data": small_spec.data.model_copy(update={"on_policy": section})})
    trial = spec_mod.expand(spec)[0]
    return {**trial, "start": start, "cache_dir": str(cache_dir)}


@pytest.fixture(scope="module")
def built(small_spec, start, tmp_path_factory):
    """One uninterrupted build: (job, pairs file, summary, shard records)."""
    trial = trial_for(small_spec, start, tmp_path_factory.mktemp("onpolicy"))
    job = onpolicy.Job.of_trial(trial)
    path, summary = onpolicy.build(job, log=lambda *_: None)
    records = [json.loads(line) for f in sorted(path.parent.glob("shard-*.jsonl")) for line in f.read_text().splitlines()]
    return trial, job, path, summary, records


def test_every_pair_answers_its_own_prompt(built):
    _, job, path, summary, records = built
    pairs = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 24 and summary["kept"] == len(pairs) > 0
    by_index = {r["prompt_index"]: r for r in records}
    for p in pairs:
        record = by_index[p["prompt_index"]]
        assert record["prompt"] == p["prompt"]
        texts = {s["id"]: s["text"] for s in record["samples"]}
        assert texts[p["chosen_id"]] == p["chosen"] and texts[p["rejected_id"]] == p["rejected"]
        # The oracle scored each answer against its own prompt (its score depends on the prompt's keywords).
        assert p["chosen_score"] == synthetic.oracle_reward(p["prompt"], p["chosen"])
        assert p["rejected_score"] == synthetic.oracle_reward(p["prompt"], p["rejected"]) < p["chosen_score"]


def test_batched_samples_are_the_answers_of_their_own_prompts(built):
    """Near-greedy sampling in length-sorted, left-padded batches gives each prompt the answer that
    ``model.generate`` gives it alone: answers are not filed under another prompt."""
    _, job, _, _, records = built
    cold = job.cfg.model_copy(update={"generation": job.cfg.generation.model_copy(update={"temperature": 1e-4})})
    sampler = onpolicy.Sampler(onpolicy.Job(cold, job.data, job.start_path, job.cache_dir, job.model))
    prompts = [r["prompt"] for r in records[:16]]
    batched = sampler.samples(prompts, 0)
    alone = []
    for ids in sampler.prompt_ids(prompts):
        out = sampler.model.generate(input_ids=torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                                     pad_token_id=sampler.tokenizer.pad_token_id)  # fmt: skip
        row = out[0, len(ids) :].tolist()
        end = next((k for k, t in enumerate(row) if t == sampler.tokenizer.eos_token_id), len(row))
        alone.append(sampler.tokenizer.decode(row[:end], skip_special_tokens=True).strip())
    own = sum(text == alone[i] for i, per in enumerate(batched) for text, _ in per)
    shifted = sum(text == alone[i - 1] for i, per in enumerate(batched) for text, _ in per)
    assert own >= 0.9 * 16 * 3 and shifted < own / 2, (own, shifted)


def test_samples_of_a_prompt_use_different_seeds(built):
    _, job, _, _, records = built
    for r in records:
        assert [s["seed"] for s in r["samples"]] == job.cfg.sample_seeds() == [0, 1, 2]
        assert [s["id"] for s in r["samples"]] == [f"{r['prompt_index']}-{k}" for k in range(3)]
    # Different seeds draw different answers: most prompts get more than one distinct answer.
    assert sum(len({s["text"] for s in r["samples"]}) > 1 for r in records) >= len(records) * 0.6


def test_killed_build_resumes_to_the_same_bytes(built, small_spec, start, tmp_path):
    trial, _, path, _, _ = built
    again = {**trial, "cache_dir": str(tmp_path)}
    code = ("import json, sys; from ablate.onpolicy import build as onpolicy; "
            "onpolicy.build(onpolicy.Job.of_trial(json.loads(sys.argv[1])), log=lambda *_: None)")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "ABLATE_FAULT": "stage=on_policy,index=0,step=2,kind=kill"}
    killed = subprocess.run([sys.executable, "-c", code, json.dumps(again)], env=env, cwd=REPO, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    job = onpolicy.Job.of_trial(again)
    folder = onpolicy.build_dir(job, onpolicy.prompts_of(job))
    assert sorted(p.name for p in folder.iterdir()) == ["shard-00000.jsonl", "shard-00001.jsonl"]  # no temp file
    resumed, _ = onpolicy.build(job, log=lambda *_: None)
    assert resumed != path and resumed.name == path.name
    for name in ["shard-00000.jsonl", "shard-00001.jsonl", "shard-00002.jsonl", path.name]:
        assert (folder / name).read_bytes() == (path.parent / name).read_bytes(), name


def test_trials_of_the_on_policy_arm_train_on_the_built_pairs(built):
    trial, _, path, summary, _ = built
    data = {**trial["data"], "on_policy": {**trial["data"]["on_policy"], "built": str(path)}}
    train, held_out = datasource.load_splits(data)
    own_train, own_held_out = datasource.load_splits({k: v for k, v in trial["data"].items() if k != "on_policy"})
    assert len(train) == summary["kept"] and held_out == own_held_out and train != own_train
    assert {"chosen_longer_rate", "chosen_mean_tokens"} <= set(summary["length"])
    assert sum(summary["dropped"].values()) + summary["kept"] == summary["prompts"] == 24


def record(*samples) -> dict:
    return {"prompt_index": 7, "prompt": "Q: w01 A:",
            "samples": [{"id": f"7-{k}", "text": t, "score": s, "tokens": len(t.split())} for k, (t, s) in enumerate(samples)]}  # fmt: skip


def test_pick_rules_dedupe_ties_and_margin():
    r = record(("a", 0.5), ("b b", 0.9), ("c", 0.1), ("b b", 0.9))
    pair = onpolicy_pick.pick(r, "best_worst", 0.0, True)
    assert (pair["chosen_id"], pair["rejected_id"], pair["chosen_score"], pair["rejected_score"]) == ("7-1", "7-2", 0.9, 0.1)
    assert onpolicy_pick.pick(record(("a", 1.0), ("a", 1.0), ("a", 1.0)), "best_worst", 0, True) == "duplicates"
    assert onpolicy_pick.pick(record(("a", 1.0), ("a", 1.0)), "best_worst", 0, False) == "ties"
    assert onpolicy_pick.pick(record(("a", 1.0), ("b", 1.0)), "best_worst", 0, True) == "ties"
    assert onpolicy_pick.pick(record(("a", 1.0), ("", 0.0)), "best_worst", 0, True) == "empty"
    assert onpolicy_pick.pick(r, "best_worst", 0.81, True) == "margin"
    rand = onpolicy_pick.pick(r, "best_random", 0.0, True)
    assert rand["chosen_id"] == "7-1" and rand["rejected_id"] in ("7-0", "7-2")
    assert rand == onpolicy_pick.pick(r, "best_random", 0.0, True)  # seeded by the prompt: reproducible
    pairs, dropped = onpolicy_pick.pairs_of([r, record(("a", 1.0), ("a", 1.0))], "best_worst", 0.0, True)
    assert len(pairs) == 1 and dropped == {"empty": 0, "duplicates": 1, "ties": 0, "margin": 0}


def test_cache_key_changes_with_every_input(small_spec, tmp_path):
    base = trial_for(small_spec, {"path": str(tmp_path / "sft"), "baseline": None}, tmp_path)
    job = onpolicy.Job.of_trial(base)
    prompts = onpolicy.prompts_of(job)

    def key(start_path=job.start_path, prompts=prompts, **over) -> str:
        cfg = OnPolicyConfig.model_validate({**ON_POLICY, **over})
        return onpolicy.pairs_key(onpolicy.Job(cfg, job.data, start_path, job.cache_dir, job.model), prompts)

    keys = [key(), key(start_path=str(tmp_path / "other-sft")), key(prompts=prompts[:-1]),
            key(prompts=[*prompts[1:], prompts[0]]), key(samples=4), key(generation={"max_new_tokens": 8, "seed": 1}),
            key(generation={"max_new_tokens": 8, "temperature": 0.7}), key(generation={"max_new_tokens": 9}),
            key(generation={"max_new_tokens": 8, "top_p": 0.9}), key(judge="builtin:reward-model"),
            key(pick="best_random"), key(min_margin=0.1), key(dedupe=False), key(shard_size=4)]  # fmt: skip
    assert len(set(keys)) == len(keys)
    assert key() == onpolicy.pairs_key(job, prompts)  # and nothing else moves it
    assert key(variants=["off_policy", "on_policy"]) == key()  # the arms share one data set


def test_data_arms_label_trials_and_keep_off_policy_configs(small_spec):
    section = OnPolicyConfig.model_validate({**ON_POLICY, "variants": ["off_policy", "on_policy"]})
    spec = small_spec.model_copy(update={"data": small_spec.data.model_copy(update={"on_policy": section})})
    trials = spec_mod.expand(spec)
    assert [t["label"] for t in trials] == ["SimPO [off-policy]", "SimPO [on-policy]"]
    assert "on_policy" not in trials[0]["data"] and trials[1]["data"]["on_policy"]["judge"]["name"] == "builtin:oracle"
    assert "on_policy" not in spec_mod.expand(small_spec)[0]["data"]  # sweeps without it: configs as before


@pytest.mark.parametrize(
    ("on_policy", "needles"),
    [
        ({"judge": "builtin:oracle", "samples": 1}, ["data.on_policy.samples", "greater than or equal to 2"]),
        ({"judge": "builtin:judgy"}, ["unknown judge", "builtin:"]),
        ({"judge": "/nowhere/rm"}, ["data.on_policy.judge", "not a directory"]),
        ({"judge": "builtin:reward-model", "prompts": "missing.jsonl"}, ["data.on_policy.prompts", "does not exist"]),
        ({"samples": 3}, ["data.on_policy.judge", "this field is required"]),
    ],
)
def test_bad_on_policy_sections_exit_2(tmp_path, capsys, on_policy, needles):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**SMALL, "cache_dir": str(tmp_path), "data": {**SMALL["data"], "on_policy": on_policy}}))
    assert run_main([str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert all(n in err for n in needles), err
    assert "Traceback" not in err


def test_dry_run_prints_the_build_size_and_memory(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    section = {**ON_POLICY, "judge": "builtin:reward-model", "num_prompts": 100, "variants": ["off_policy", "on_policy"]}
    path.write_text(yaml.safe_dump({**SMALL, "cache_dir": str(tmp_path), "data": {**SMALL["data"], "on_policy": section}}))
    assert run_main([str(path), "--dry-run", "--gpu-memory", "1GB"]) == 0
    out = capsys.readouterr().out
    assert "100 prompts x 3 samples x 8 max_new_tokens = 2,400 tokens at most" in out, out
    assert "generator" in out and "judge" in out and "they fit one GPU of 1 GB" in out
    assert "SimPO [off-policy]" in out and "SimPO [on-policy]" in out and "2 trials" in out


def test_report_tables_compare_the_arms_and_describe_the_data(tmp_path):
    import pandas as pd

    from ablate.spec.expand import data_variants
    from analysis import onpolicy as report_onpolicy
    from analysis import writers

    summary = onpolicy_pick.summary(
        [{"chosen_score": 1.0, "rejected_score": 0.2, "chosen_tokens": 9, "rejected_tokens": 3},
         {"chosen_score": 0.5, "rejected_score": 0.4, "chosen_tokens": 4, "rejected_tokens": 6}],
        {"empty": 0, "duplicates": 1, "ties": 2, "margin": 0}, 5, 3)  # fmt: skip
    (tmp_path / "t1").mkdir()
    (tmp_path / "t1" / "params.json").write_text(json.dumps({"trial": {"data_split": {"on_policy": {**summary, "file": "p.jsonl"}}}}))
    off, on = (s for s, _ in data_variants(spec_mod.SweepSpec.model_validate(
        {**SMALL, "data": {"on_policy": {**ON_POLICY, "variants": ["off_policy", "on_policy"]}}}).data))  # fmt: skip
    assert (off, on) == (report_onpolicy.OFF, report_onpolicy.ON)  # the report finds the labels expand writes
    rows = [("SimPO" + off, 0.40), ("SimPO" + off, 0.44), ("SimPO" + on, 0.60), ("SimPO" + on, 0.66),
            ("DPO" + on, 0.5), ("SFT", 0.1)]  # fmt: skip
    df = pd.DataFrame([{"label": lab, "setting": "default", "status": "finished", "oracle_win_rate": v, "seed": i,
                        "trial_dir": str(tmp_path / "t1")} for i, (lab, v) in enumerate(rows)])  # fmt: skip
    compare, data_table = report_onpolicy.tables(df, "oracle_win_rate")
    assert compare.data["method"].tolist() == ["SimPO"]  # DPO has one arm only, SFT none
    assert compare.data["on − off"].iloc[0].startswith("+0.210 [")
    row = data_table.data.iloc[0]
    assert (row["pairs kept"], row["dropped: duplicates"], row["ties"], row["chosen longer"]) == (2, 1, 2, "0.50")
    shown = [name for _, names, _ in writers.SECTIONS for name in names]
    assert {compare.name, data_table.name} <= set(shown)  # the report has a section for them


def test_on_policy_needs_a_grid_sweep(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    sweep = {**SMALL, "cache_dir": str(tmp_path), "search": "random", "num_samples": 2,
             "methods": [{"method": "simpo", "hparams": {"beta": {"uniform": [1.0, 3.0]}}}],
             "data": {**SMALL["data"], "on_policy": ON_POLICY}}  # fmt: skip
    path.write_text(yaml.safe_dump(sweep))
    assert run_main([str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "data.on_policy" in err and "search: grid" in err and "Traceback" not in err


def test_attach_builds_once_and_points_the_on_policy_arm_at_the_pairs(built, small_spec, start):
    from ablate.sweep import plan as plan_mod

    trial, _, path, summary, _ = built
    section = OnPolicyConfig.model_validate({**ON_POLICY, "variants": ["off_policy", "on_policy"]})
    spec = small_spec.model_copy(update={"cache_dir": trial["cache_dir"], "seeds": [0, 1],
                                         "data": small_spec.data.model_copy(update={"on_policy": section})})  # fmt: skip
    lines: list[str] = []
    plan = plan_mod.build(spec).with_start(lambda data: start)
    attached = onpolicy.attach(plan, log=lines.append)
    assert lines[0] == f"On-policy data: reusing {path}"  # a second sweep with the same key reuses the build
    assert sum("reusing" in line for line in lines) == 1  # one data set for both seeds' trials
    for before, after in zip(plan.trials, attached.trials, strict=True):
        if before["label"].endswith("[off-policy]"):
            assert after == before
        else:
            assert after["data"]["on_policy"]["built"] == str(path)
            assert after["data_split"]["on_policy"]["kept"] == summary["kept"]
            assert after["data_split"]["train_pairs"] == summary["kept"]
