"""Judges (ablate.judging.judges, ablate.judging.scoring) end to end on the built-in task, with real torch and real files:
the oracle, the built-in reward model (trained once, cached) and a Hugging Face reward model from a local
directory saved with ``save_pretrained`` (a tiny LlamaForSequenceClassification whose tokenizer has a chat
template); bad judge specs stop the CLI with exit code 2 before anything is launched."""

from __future__ import annotations

import json
import random

import pytest
import torch
import yaml
from tokenizers import processors
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForSequenceClassification

from ablate import models
from ablate.data import synthetic
from ablate.judging import judges, reward_model
from ablate.judging import scoring as judging
from ablate.spec.evaluation import JudgeSpec
from ablate.sweep.cli import main as run_main
from ablate.trial.runner import run_trial
from tests.conftest import SMALL, make_trial

CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}"


def save_tiny_reward_model(path, seed: int = 0):
    """A random tiny LlamaForSequenceClassification (one label) with the built-in vocabulary; its tokenizer
    adds BOS itself and its chat template writes one too (the doubled BOS a judge must undo)."""
    tok = models.build_builtin_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tok.bos_token_id)]
    )
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, num_labels=1, max_position_embeddings=128,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    LlamaForSequenceClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory):
    return save_tiny_reward_model(tmp_path_factory.mktemp("rm") / "tiny-rm")


def test_reward_model_input_is_the_chat_template_with_one_bos_and_left_truncated(tiny_rm):
    judge = judges.RewardModelJudge(JudgeSpec(name=str(tiny_rm), max_length=8), str(tiny_rm), torch.device("cpu"))
    bos = judge.tokenizer.bos_token_id
    ids = judge.encode("Q: w01 w02 w03 A:", "w01 w02")  # <bos> user: Q: w01 w02 w03 A: assistant: w01 w02: 10 tokens
    assert judge.duplicate_bos == 1 and judge.truncated == 1
    assert len(ids) == 8 and ids[-1] == judge.tokenizer.convert_tokens_to_ids("w02") and bos not in ids
    short = judge.encode("Q: w01 A:", "")
    assert short.count(bos) == 1 and short[0] == bos and judge.truncated == 1


def test_batched_scores_equal_scores_alone(tiny_rm):
    judge = judges.RewardModelJudge(JudgeSpec(name=str(tiny_rm), batch_size=4), str(tiny_rm), torch.device("cpu"))
    prompts = ["Q: w01 w02 A:", "Q: w03 A:", "Q: w04 w05 w06 A:", "Q: w07 A:", "Q: w08 w09 A:"]
    answers = ["w01 w02", "well so w03 really very", "w04", "w07 w07 w07 w07", ""]
    batched = judge.score(prompts, answers)
    alone = [judge.score([p], [a])[0] for p, a in zip(prompts, answers, strict=True)]
    assert batched == pytest.approx(alone, abs=1e-5)
    assert len(set(batched)) == len(batched)  # a real model, not a constant


def test_every_judge_kind_end_to_end(small_spec, start, tiny_rm):
    evaluation = {**SMALL["evaluation"], "judges": ["builtin:oracle", "builtin:reward-model",
                                                   {"name": str(tiny_rm), "label": "tiny-rm"}]}  # fmt: skip
    trial = make_trial(small_spec, start, "simpo", {"beta": 2.0, "gamma": 1.0}, evaluation=evaluation,
                       training={"learning_rate": 3e-5})  # fmt: skip
    saved: dict[str, bytes] = {}
    metrics = run_trial(trial, report=lambda _: None, save_artifact=lambda n, b: saved.__setitem__(n, b))
    assert metrics["status"] == "finished"
    for j in ("builtin:oracle", "builtin:reward-model", "tiny-rm"):
        for m in ("win_rate", "lc_win_rate", "judge_accuracy"):
            assert 0.0 <= metrics[f"{m}@{j}"] <= 1.0, (m, j)
        assert metrics[f"lc_win_rate_se@{j}"] >= 0 and metrics[f"judge_truncated@{j}"] == 0
    # The oracle judge is the old oracle win rate, and is always right about the oracle.
    assert metrics["win_rate@builtin:oracle"] == metrics["oracle_win_rate"]
    assert metrics["judge_accuracy@builtin:oracle"] == 1.0
    rm_dir = reward_model.model_dir(trial["cache_dir"], start["path"], trial["data"])
    config = AutoConfig.from_pretrained(rm_dir)
    assert config.architectures == ["LlamaForSequenceClassification"] and config.num_labels == 1
    heldout = json.loads(saved["heldout.json"])["generations"]
    n = SMALL["evaluation"]["num_prompts"]
    assert len(heldout["text"]) == len(heldout["prompt"]) == len(heldout["length"]) == n
    assert set(heldout["judges"]) == {"builtin:oracle", "builtin:reward-model", "tiny-rm"}
    assert all(len(s["scores"]) == len(s["baseline_scores"]) == n for s in heldout["judges"].values())
    for key in ("repeat_4gram_rate", "distinct_2", "hit_max_tokens_rate", "chosen_logp_fell"):
        assert 0.0 <= metrics[key] <= 1.0


def test_builtin_reward_model_learned_the_labels_and_their_length_bias(small_spec, start):
    """The built-in judge agrees with the oracle more often than chance on fresh pairs, and inherits the
    labels' length bias: padding an ideal answer raises its score, although the oracle says it is worse."""
    path = reward_model.ensure(small_spec.cache_dir, start["path"], small_spec.data.model_dump(), log=lambda *_: None)
    judge = judges.RewardModelJudge(JudgeSpec(name="builtin:reward-model"), str(path), torch.device("cpu"))
    fresh = synthetic.make_pairs(random.Random("fresh"), 600, synthetic.TaskConfig(seed=7))
    assert judging.pair_accuracy(judge, fresh, oracle_truth=True) > 0.56
    prompts = ["Q: w01 w02 A:", "Q: w03 w04 w05 A:", "Q: w06 w07 A:", "Q: w08 w09 w10 A:"]
    ideal = ["w01 w02", "w03 w04 w05", "w06 w07", "w08 w09 w10"]
    padded = [a + " really very just" for a in ideal]
    assert sum(p > i for p, i in zip(judge.score(prompts, padded), judge.score(prompts, ideal), strict=True)) >= 3


def _sweep(tmp_path, cache_dir, evaluation: dict, **extra) -> str:
    sweep = {**SMALL, "name": "judged", "storage": str(tmp_path / "results"), "cache_dir": str(cache_dir),
             "evaluation": {**SMALL["evaluation"], **evaluation}, **extra}  # fmt: skip
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return str(path)


@pytest.mark.parametrize(
    ("evaluation", "extra", "message"),
    [
        ({"judges": ["builtin:orcale"]}, {}, "did you mean 'builtin:oracle'"),
        ({"judges": ["builtin:reward-model"]}, {"data": {"source": "DATA"}}, "judges the built-in task only"),
        ({"judges": ["JUDGE_DIR/missing"]}, {}, "is not a directory"),
        ({"judges": ["LM_DIR"]}, {}, "not a sequence-classification reward model"),
        ({"judges": ["builtin:oracle"], "generate": False}, {}, "`evaluation.generate` is false"),
        ({"judges": ["builtin:oracle"]}, {"metric": "lc_win_rate@builtin:reward-model"}, "no judge 'builtin:reward-model'"),
        ({"judges": ["builtin:oracle", "builtin:oracle"]}, {}, "share a name"),
        ({"prompts": "JUDGE_DIR/prompts.jsonl", "prompt_field": "question", "judges": []}, {}, "has no field 'question'"),
    ],
)
def test_bad_judge_specs_exit_2_with_nothing_launched(tmp_path, cache_dir, capsys, evaluation, extra, message):
    (tmp_path / "prompts.jsonl").write_text('{"instruction": "Say hi."}\n')
    (tmp_path / "data.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n' * 20)
    lm = tmp_path / "lm"
    AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=40, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                                 num_attention_heads=1)).save_pretrained(lm)  # fmt: skip
    text = json.dumps(evaluation).replace("JUDGE_DIR", str(tmp_path)).replace("LM_DIR", str(lm))
    extra = json.loads(json.dumps(extra).replace("DATA", str(tmp_path / "data.jsonl")))
    if "data" in extra:
        extra["data"] = {**SMALL["data"], **extra["data"]}
    capsys.readouterr()
    assert run_main([_sweep(tmp_path, cache_dir, json.loads(text), **extra)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err  # one paragraph
    assert not (tmp_path / "results").exists()


def test_a_judge_with_its_own_code_needs_trust_remote_code(tmp_path, cache_dir, tiny_rm, capsys):
    remote = tmp_path / "armo-like"
    remote.mkdir()
    for f in tiny_rm.iterdir():
        (remote / f.name).write_bytes(f.read_bytes())
    config = json.loads((remote / "config.json").read_text())
    config.update(architectures=["LlamaForRewardModelWithGating"],
                  auto_map={"AutoModelForSequenceClassification": "modeling_custom.LlamaForRewardModelWithGating"})  # fmt: skip
    (remote / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert run_main([_sweep(tmp_path, cache_dir, {"judges": [str(remote)]})]) == 2
    assert "set `trust_remote_code: true` on this judge" in capsys.readouterr().err
    ok = _sweep(tmp_path, cache_dir, {"judges": [{"name": str(remote), "trust_remote_code": True}]})
    assert run_main([ok, "--dry-run"]) == 0
    assert "trust_remote_code: true" in capsys.readouterr().err  # warned, like the policy's


def test_prompts_from_a_file_sampled_and_judged(small_spec, start, tmp_path):
    """Instructions from a local JSONL file (AlpacaEval-style), sampled with a seed: the baseline comes
    from the untrained policy (the start point), the reward model judges, and the same seed samples the
    same answers again."""
    rows = [{"instruction": f"Q: w{i:02d} w{(i + 3) % 24:02d} A:"} for i in range(12)]
    (tmp_path / "instructions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    evaluation = {**SMALL["evaluation"], "prompts": str(tmp_path / "instructions.jsonl"), "num_prompts": 10,
                  "generation": {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 6, "seed": 3},
                  "judges": ["builtin:reward-model"]}  # fmt: skip
    trial = make_trial(small_spec, start, "simpo", evaluation=evaluation, training={"learning_rate": 3e-5})
    runs = []
    for _ in range(2):
        saved: dict[str, bytes] = {}
        final = run_trial(trial, report=lambda _: None, save_artifact=saved.__setitem__)
        runs.append((final, json.loads(saved["heldout.json"])["generations"]))
    (final, gen), (again, gen2) = runs
    assert gen["prompt"] == [r["instruction"] for r in rows[:10]]
    assert max(gen["length"]) <= 6 and "oracle_win_rate" not in final  # not the task's own prompts
    assert 0 <= final["win_rate@builtin:reward-model"] <= 1
    assert gen["text"] == gen2["text"] and final["win_rate@builtin:reward-model"] == again["win_rate@builtin:reward-model"]
    baseline = json.loads(open(gen["baseline_file"]).read())
    assert baseline["prompts"] == gen["prompt"] and len(baseline["texts"]) == 10


def test_collapse_diagnostics_by_hand():
    from ablate.judging.generations import collapse_metrics

    texts = ["a b c d a b c d", "a b", "x y z"]  # the first repeats a 4-gram; 7 + 1 + 2 bigrams, 6 distinct
    m = collapse_metrics(texts, [8, 2, 5], max_new_tokens=5)
    assert m["repeat_4gram_rate"] == pytest.approx(1 / 3)
    assert m["distinct_2"] == pytest.approx(6 / 10)
    assert m["hit_max_tokens_rate"] == pytest.approx(2 / 3)


def test_judges_table_without_an_oracle_compares_the_judges():
    import pandas as pd

    from analysis.judged import judges_frame

    best = pd.DataFrame({"label": ["A", "B", "C"], "win_rate@j1_mean": [0.7, 0.5, 0.3],
                         "win_rate@j2_mean": [0.3, 0.5, 0.7], "lc_win_rate@j1_mean": [0.6, 0.5, 0.4],
                         "lc_win_rate@j2_mean": [0.6, 0.4, 0.5]})  # fmt: skip
    trials = pd.DataFrame({"status": ["finished"] * 3, "win_rate@j1": [0.7, 0.5, 0.3], "win_rate@j2": [0.3, 0.5, 0.7],
                           "length_coef@j1": [1.0, 2.0, 3.0], "length_coef@j2": [0.0, 0.0, 0.0]})  # fmt: skip
    frame = judges_frame(best, trials)
    row = frame.iloc[0]
    assert row["Judges"] == "j1 vs j2" and row["τ raw WR"] == "-1.00" and row["τ LC"] == "+0.33"
    assert row["Length weight φ"] == "2.000 ± 1.000 / 0.000 ± 0.000"


def test_findings_use_the_first_judges_lc_win_rate_without_an_oracle():
    import pandas as pd

    from analysis.findings_frame import findings

    rows = []
    for label, length, lc in (("SimPO", 3.0, 0.60), ("SimPO w/o LN", 4.0, 0.40)):
        for seed, noise in enumerate((-0.01, 0.0, 0.01)):
            rows.append({"label": label, "status": "finished", "setting": "s", "method": "simpo", "reference": None,
                         "gen_length": length + noise, "length_logp_spearman": 0.1, "reward_likelihood_agreement": 1.0,
                         "reward_accuracy": 0.6, "runtime_s": 1.0, "peak_memory_mb": 1.0, "seed": seed,
                         "win_rate@rm": lc + 0.1, "lc_win_rate@rm": lc + noise})  # fmt: skip
    table = findings(pd.DataFrame(rows), "lc_win_rate@rm")
    claim = table[table["metric"] == "lc_win_rate@rm"].iloc[0]
    assert claim["claim"] == "w/o LN has a lower LC win rate (rm) than SimPO" and claim["verdict"] == "supported"
