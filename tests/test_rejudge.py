"""A finished sweep (real local Ray) judged again without training (``python -m ablate.judge``), its report
with every judge's win rates, the judges table and the LC-vs-length figure, the AlpacaEval export read
back by alpaca_eval's own loader, and AlpacaEval's annotations read back as one more judge."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import yaml

from ablate.sweep.rejudge import main as judge_main
from analysis.report import main as report_main
from tests.conftest import REPO, SMALL
from tests.test_judges import save_tiny_reward_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, cache_dir, start):
    """Two methods on the small task, judged by the oracle while they ran."""
    root = tmp_path_factory.mktemp("rejudge")
    spec = {**SMALL, "name": "rejudge", "storage": str(root / "results"), "cache_dir": str(cache_dir),
            "methods": [{"method": "simpo", "hparams": {"gamma": 1.0}},  # lr 1e-3: far from the start point
                        {"method": "dpo", "training": {"learning_rate": 3e-5}}]}  # fmt: skip
    path = root / "rejudge.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    proc = subprocess.run([sys.executable, "-m", "ablate.run", str(path)], capture_output=True, text=True,
                          cwd=REPO, timeout=1800, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, root / "results" / "rejudge"


def trial_dirs(results):
    return sorted(d for d in results.iterdir() if (d / "params.json").is_file())


def test_rejudge_report_and_alpaca_eval_round_trip(sweep, capsys):
    root, results = sweep
    assert len(list((results / "baselines").glob("*.json"))) == 1  # the baseline, kept with the results
    rm = save_tiny_reward_model(root / "tiny-rm", seed=1)
    assert judge_main([str(results), "--judge", "builtin:reward-model", "--judge", f"{{name: {rm}, label: tiny}}"]) == 0
    for d in trial_dirs(results):
        record = json.loads((d / "judgments.json").read_text())
        assert set(record) == {"builtin:reward-model", "tiny"}
        m = record["tiny"]["metrics"]
        assert 0 <= m["win_rate@tiny"] <= 1 and 0 <= m["lc_win_rate@tiny"] <= 1
        assert len(record["tiny"]["scores"]) == SMALL["evaluation"]["num_prompts"]

    out = root / "reports"
    assert report_main([str(results), "--out", str(out), "--export", "alpaca_eval"]) == 0
    report = out / "rejudge"
    main = list(csv.DictReader((report / "main.csv").open()))
    for j in ("builtin:oracle", "builtin:reward-model", "tiny"):
        assert all(row[f"win_rate@{j}_mean"] for row in main), j
        assert all(row[f"lc_win_rate_sweep@{j}_mean"] for row in main), j  # with the sweep's prompt difficulty
    judges = list(csv.DictReader((report / "judges.csv").open()))
    assert [r["Judge"] for r in judges] == ["builtin:oracle", "builtin:reward-model", "tiny"]
    assert judges[0]["τ raw WR vs oracle"] == "+1.00"
    assert (report / "lc-length.png").is_file()
    assert "## Judges" in (report / "report.md").read_text()

    from alpaca_eval.utils import load_or_convert_to_dataframe

    ref = load_or_convert_to_dataframe(str(report / "alpaca_eval" / "reference_outputs.json"))
    assert len(ref) == SMALL["evaluation"]["num_prompts"] and set(ref["generator"]) == {"start point (SFT)"}
    outputs = {}
    for label in ("simpo", "dpo"):
        model = load_or_convert_to_dataframe(str(report / "alpaca_eval" / label / "model_outputs.json"))
        assert {"instruction", "output", "generator", "dataset"} <= set(model.columns)
        assert model["instruction"].tolist() == ref["instruction"].tolist()
        outputs[model["generator"].iloc[0]] = model

    # AlpacaEval's annotations of those outputs (as its annotators write them) come back as a judge.
    annotations = [
        {"instruction": r["instruction"], "output_1": b["output"], "output_2": r["output"], "generator_1": b["generator"],
         "generator_2": gen, "annotator": "test_annotator", "preference": 2.0 if len(r["output"]) > len(b["output"]) else 1.0}
        for gen, model in outputs.items() for (_, r), (_, b) in zip(model.iterrows(), ref.iterrows(), strict=True)
    ]  # fmt: skip
    path = root / "annotations.json"
    path.write_text(json.dumps(annotations))
    assert report_main([str(results), "--out", str(out), "--judgments", str(path)]) == 0
    main = list(csv.DictReader((report / "main.csv").open()))
    assert all(row["win_rate@alpaca_eval:test_annotator_mean"] for row in main)
    capsys.readouterr()


@pytest.mark.parametrize(
    ("judge", "message"),
    [("builtin:nope", "unknown judge 'builtin:nope'"), ("/no/such/reward-model", "is not a directory"),
     ("{name: builtin:oracle, max_length: 2}", "max_length")],
)
def test_bad_rejudge_specs_exit_2_and_judge_nothing(sweep, capsys, judge, message):
    _, results = sweep
    before = {d.name: (d / "judgments.json").read_text() if (d / "judgments.json").is_file() else None
              for d in trial_dirs(results)}  # fmt: skip
    assert judge_main([str(results), "--judge", judge]) == 2
    assert message in capsys.readouterr().err
    after = {d.name: (d / "judgments.json").read_text() if (d / "judgments.json").is_file() else None
             for d in trial_dirs(results)}  # fmt: skip
    assert after == before
