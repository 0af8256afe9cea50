"""A generation set judged against the baseline by each judge of the sweep: the per-judge metrics
(``win_rate@<judge>``, ``lc_win_rate@<judge>`` and its standard error, the length weight, the judge's
accuracy on held-out pairs, truncated inputs) and the per-prompt scores kept in ``heldout.json``.

Used by a trial after generating (``ablate.trial.evaluate``) and by ``python -m ablate.judge`` on stored
generations. The baseline's scores and a judge's held-out pair accuracy depend only on the judge and
the sweep's data, so they are computed once and cached (``<cache_dir>/judged/``)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ablate import metrics as metric_names
from ablate.cache import cache_key
from ablate.data import synthetic
from ablate.judging import judges as judges_mod
from ablate.judging import winrate
from ablate.judging.generations import GenerationSet, prompt_text
from ablate.records import write_json
from ablate.spec.evaluation import JudgeSpec

MAX_ACCURACY_PAIRS = 512  # held-out pairs a judge's accuracy is measured on


@dataclass
class Judged:
    metrics: dict[str, float] = field(default_factory=dict)
    records: dict[str, dict] = field(default_factory=dict)  # judge id -> its scores of both sets


def chars(texts: list[str]) -> list[int]:
    """Answer lengths as AlpacaEval's length control counts them: characters."""
    return [len(t) for t in texts]


def judge_metrics(judge_id: str, scores: list[float], baseline_scores: list[float], ours: GenerationSet,
                  baseline: GenerationSet) -> dict[str, float]:  # fmt: skip
    """Raw and length-controlled win rate of ``ours`` against the baseline under one judge's scores."""
    prefs = winrate.preferences(scores, baseline_scores)
    lc = winrate.length_controlled(prefs, chars(ours.texts), chars(baseline.texts))
    values = {"win_rate": lc.win_rate, "lc_win_rate": lc.lc_win_rate, "lc_win_rate_se": lc.se,
              "length_coef": lc.length_coef}  # fmt: skip
    return {metric_names.judge_metric(k, judge_id): float(v) for k, v in values.items()}


def pair_accuracy(judge: judges_mod.Judge, pairs: list[dict], oracle_truth: bool) -> float:
    """How often the judge scores the better response of a held-out pair strictly higher (ties count
    wrong, as RewardBench counts them). Better: by the oracle on the built-in task (pairs it ties are
    left out), else the data set's chosen response."""
    rows = [{**p, "prompt": prompt_text(p["prompt"])} for p in pairs[:MAX_ACCURACY_PAIRS]]
    if oracle_truth:
        rows = [r for r in rows if synthetic.oracle_reward(r["prompt"], r["chosen"])
                != synthetic.oracle_reward(r["prompt"], r["rejected"])]  # fmt: skip
    if not rows:
        return math.nan
    prompts = [r["prompt"] for r in rows]
    a = judge.score(prompts, [r["chosen"] for r in rows])
    b = judge.score(prompts, [r["rejected"] for r in rows])
    right = 0
    for r, sa, sb in zip(rows, a, b, strict=True):
        first_better = (
            synthetic.oracle_reward(r["prompt"], r["chosen"]) > synthetic.oracle_reward(r["prompt"], r["rejected"])
            if oracle_truth
            else True
        )
        right += (sa > sb) if first_better else (sb > sa)
    return right / len(rows)


def cached(cache_dir: str, what: object, compute: Callable[[], object]) -> object:
    """A judged quantity from ``<cache_dir>/judged/``, or computed now and written there."""
    path = Path(cache_dir).expanduser() / "judged" / f"{cache_key(what)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    write_json(path, value)
    return value


def judge_generations(
    specs: list[JudgeSpec], ctx: judges_mod.Context, ours: GenerationSet, baseline: GenerationSet,
    baseline_key: str, pairs: list[dict] | None, oracle_truth: bool,
) -> Judged:  # fmt: skip
    """Every judge of ``specs`` on ``ours`` and the baseline (see the module doc)."""
    out = Judged()
    for spec in specs:
        judge = judges_mod.load(spec, ctx)
        metrics, record = judge_with(judge, ctx.cache_dir, ours, baseline, baseline_key, pairs, oracle_truth)
        out.metrics.update(metrics)
        out.records[judge.id] = record
        del judge
    return out


def judge_with(
    judge: judges_mod.Judge, cache_dir: str, ours: GenerationSet, baseline: GenerationSet, baseline_key: str,
    pairs: list[dict] | None, oracle_truth: bool,
) -> tuple[dict[str, float], dict]:  # fmt: skip
    """One loaded judge on ``ours`` and the baseline: its metrics and the scores of both sets."""
    before = judge.truncated
    scores = judge.score(ours.prompts, ours.texts)
    truncated = judge.truncated - before
    base_scores = cached(cache_dir, ["baseline", judge.key, baseline_key],
                         lambda: judge.score(baseline.prompts, baseline.texts))  # fmt: skip
    metrics = judge_metrics(judge.id, scores, base_scores, ours, baseline)
    if pairs:
        acc = cached(cache_dir, ["accuracy", judge.key, cache_key(pairs[:MAX_ACCURACY_PAIRS]), oracle_truth],
                     lambda: pair_accuracy(judge, pairs, oracle_truth))  # fmt: skip
        metrics[metric_names.judge_metric("judge_accuracy", judge.id)] = float(acc)
    metrics[metric_names.judge_metric("judge_truncated", judge.id)] = float(truncated)
    return metrics, {"scores": _rounded(scores), "baseline_scores": _rounded(base_scores)}


def _rounded(values) -> list[float]:
    return [round(float(v), 6) for v in values]
