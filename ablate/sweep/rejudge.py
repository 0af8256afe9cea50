"""``python -m ablate.judge RESULTS_DIR --judge SPEC [--judge SPEC ...]``: judge a finished sweep's stored
generations with new judges, without training again.

Every finished trial keeps its generations in ``heldout.json`` (prompt, text, token count) and the
baseline it was judged against is kept once per sweep (``<sweep>/baselines/``, or its cache file).
Each judge scores every trial's generations and the baseline's (once), and the trial gets
``judgments.json`` next to its results: per judge, the same metrics a trial reports
(``win_rate@<judge>``, ``lc_win_rate@<judge>``, ...) and the per-prompt scores; ``python -m
analysis.report`` reads them like the trial's own. A judge added after a long sweep costs one pass
over the generations.

SPEC is a judge's name (``builtin:oracle``, ``builtin:reward-model``, a reward model's hub id or
directory) or a YAML mapping with the fields of ``evaluation.judges`` entries, e.g.
``'{name: RLHFlow/ArmoRM-Llama3-8B-v0.1, trust_remote_code: true}'``. Exit 2 on bad input (no sweep,
a judge that cannot load or does not apply), with nothing judged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml
from pydantic import ValidationError

from ablate import models, records
from ablate.data import sources as datasource
from ablate.judging import judges
from ablate.judging import scoring as judging
from ablate.judging.generations import GenerationSet, find_baseline, publish_baselines
from ablate.records import write_json
from ablate.spec.evaluation import JudgeSpec
from ablate.sweep import lease, sweepdir
from ablate.trial.config import TrialConfig

EXIT_BAD_INPUT = 2
JUDGMENTS_FILE = records.JUDGMENTS_FILE


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ablate.judge", description=__doc__.split("\n\n")[0],
                                epilog="SPEC: " + __doc__.split("SPEC is ", 1)[1].split("\n\n")[0])  # fmt: skip
    p.add_argument("results", help="a sweep's results directory (results/<name>)")
    p.add_argument("--judge", action="append", required=True, metavar="SPEC", help="a judge (repeatable)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when there is one)")
    return p.parse_args(argv)


def parse_judge(text: str) -> JudgeSpec:
    """A judge from the command line: a name, or a YAML mapping of ``evaluation.judges`` fields."""
    value = yaml.safe_load(text) if text.lstrip().startswith("{") else text
    return JudgeSpec.model_validate({"name": value} if isinstance(value, str) else value)


def finished_trials(sweep: Path) -> list[tuple[Path, TrialConfig, dict]]:
    """(directory, config, stored generations) of every finished trial that kept its generations."""
    out = []
    for d in sorted(p for p in sweep.iterdir() if p.is_dir()):
        try:
            cfg = TrialConfig.model_validate(records.read_trial_config(d))
            final = records.read_json(d / records.FINAL_FILE)
            gen = (records.read_json(d / records.HELDOUT_FILE) or {}).get("generations") or {}
        except (OSError, ValueError, KeyError, ValidationError):
            continue
        if final and final.get("status") == "finished" and gen.get("text"):
            out.append((d, cfg, gen))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sweep = Path(args.results)
    try:
        specs = [parse_judge(j) for j in args.judge]
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'judge'}: {x['msg'].removeprefix('Value error, ')}"
                             for x in e.errors())  # fmt: skip
        print(f"error: --judge: {problems}. Give a judge's name or a mapping of name, label, trust_remote_code, "
              "max_length, batch_size, dtype. Nothing was judged.", file=sys.stderr)  # fmt: skip
        return EXIT_BAD_INPUT
    except yaml.YAMLError as e:
        print(f"error: --judge: not a judge name or a YAML mapping ({e}).", file=sys.stderr)
        return EXIT_BAD_INPUT
    trials = finished_trials(sweep) if sweep.is_dir() else []
    if not trials:
        print(f"error: {sweep}: no finished trial with stored generations (heldout.json). Give a sweep's results "
              "directory, run with `evaluation.generate: true`.", file=sys.stderr)  # fmt: skip
        return EXIT_BAD_INPUT
    for spec in specs:
        for _, cfg, _ in trials[:1] + [t for t in trials if t[1].data != trials[0][1].data]:
            problem = judges.check(spec, cfg.evaluation, cfg.data)
            if problem:
                print(f"error: --judge {spec.name}: {problem}. Nothing was judged.", file=sys.stderr)
                return EXIT_BAD_INPUT
    home = sweepdir.lease_home(str(sweep.resolve()))  # one driver per sweep: no judging while it runs
    held = lease.acquire(home, f"python -m ablate.judge {args.results}", f"{args.results}: sweep {Path(home).name!r}")
    if isinstance(held, str):
        print(f"error: {held} Nothing was judged.", file=sys.stderr)
        return EXIT_BAD_INPUT
    with held:
        publish_baselines(sweep)
        device = models.pick_device() if args.device is None else torch.device(args.device)
        return judge_sweep(sweep, trials, specs, device)


def judge_sweep(sweep: Path, trials: list, specs: list[JudgeSpec], device) -> int:
    loaded: dict[tuple, judges.Judge] = {}
    held_out: dict[str, list[dict] | None] = {}
    judged = 0
    for d, cfg, gen in trials:
        baseline = find_baseline(sweep, gen)
        if baseline is None:
            print(f"warning: {d.name}: its baseline ({gen.get('baseline_file')}) is gone; skipped.", file=sys.stderr)
            continue
        ours = GenerationSet(gen["prompt"], gen["text"], gen["length"])
        data_key = json.dumps(cfg.data.model_dump(), sort_keys=True)
        if data_key not in held_out:
            held_out[data_key] = _held_out_rows(cfg)
        ctx = judges.Context(device, cfg.cache_dir, cfg.start.path, cfg.data.model_dump())
        path = d / JUDGMENTS_FILE
        record = json.loads(path.read_text()) if path.is_file() else {}
        for spec in specs:
            key = (spec.model_dump_json(), cfg.start.path, json.dumps(cfg.data.task.model_dump(), sort_keys=True))
            if key not in loaded:
                loaded[key] = judges.load(spec, ctx)
            judge = loaded[key]
            metrics, scores = judging.judge_with(judge, cfg.cache_dir, ours, baseline, gen["baseline_key"],
                                                 held_out[data_key], cfg.data.source == "builtin:synthetic")  # fmt: skip
            record[judge.id] = {"metrics": metrics, **scores}
            shown = ", ".join(f"{k.split('@')[0]} {v:.3f}" for k, v in metrics.items() if "win_rate" in k)
            print(f"{d.name}: {judge.id}: {shown}")
        write_json(path, record)
        judged += 1
    print(f"Judged {judged} trials with {', '.join(s.id for s in specs)}; report: python -m analysis.report {sweep}")
    return 0 if judged else 1


def _held_out_rows(cfg: TrialConfig) -> list[dict] | None:
    """The held-out pairs a judge's accuracy is measured on; None when the data cannot be read here."""
    try:
        return datasource.load_splits(cfg.data.model_dump())[1]
    except Exception as e:  # e.g. a hub data set offline: judge without the accuracy
        print(f"warning: held-out pairs of {cfg.data.source} not readable ({e}); no judge accuracy.", file=sys.stderr)
        return None


if __name__ == "__main__":
    sys.exit(main())
