"""A trial's inputs as flat facts, ranked by how likely they are to move its numbers (Ray-free).

A trial's facts are its config (``params.json``) and its ``provenance.json`` (``ablate.provenance``:
the fingerprints of its data rows, model, tokenizer, chat template and judges, its environment and
effective batch), flattened to ``key -> text``. ``analysis.diff`` compares two sets of trials by
them; the report's environment section (``section``) shows the environments a report's trials ran
under and warns when a sweep, or the arms of the method comparison, mix inputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ablate import records
from ablate.provenance import PROVENANCE_FILE

NOT_RECORDED = "(not recorded)"
# Config keys that are bookkeeping: they differ between runs of the same inputs (paths, names, order).
SKIPPED = {"index", "sweep", "cache_dir", "setting", "point", "stage", "replay", "start", "metric", "mode",
           "data_split", "provenance", "label"}  # fmt: skip
NUMERIC_PACKAGES = ("torch", "transformers", "tokenizers", "deepspeed", "peft", "datasets", "alpaca_eval")
# (rank, category, key prefixes): the first matching prefix decides; lower ranks move numbers more.
CATEGORIES = [
    (0, "data", ("inputs.data.", "config.data.")),
    (1, "model", ("inputs.model.", "config.model.", "config.start_id", "inputs.pins.")),
    (2, "chat template", ("inputs.chat_template", "inputs.doubled_bos")),
    (3, "tokenizer", ("inputs.tokenizer",)),
    (4, "configuration", ("config.method", "config.hparams.", "config.reference", "config.seed", "config.lora.",
                          "config.training.", "effective_batch", "world", "config.deepspeed.")),
    (5, "judge", ("inputs.judges.", "config.evaluation.judges")),
    (6, "evaluation", ("config.evaluation.",)),
    (7, "environment", tuple(f"env.packages.{p}" for p in NUMERIC_PACKAGES)
     + ("env.cuda", "env.cudnn", "env.gpus", "env.driver")),
    (8, "environment (other)", ("env.",)),
    (9, "other", ("",)),
]  # fmt: skip
# What the report checks across arms and within a sweep: the inputs, not the configuration.
INPUT_CATEGORIES = {"data", "model", "chat template", "tokenizer", "judge", "environment"}


def category(key: str) -> tuple[int, str]:
    return next((rank, name) for rank, name, prefixes in CATEGORIES if key.startswith(prefixes))


def _flatten(value, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, list) and value and all(isinstance(v, dict) and ("id" in v or "name" in v) for v in value):
        value = {str(v.get("id", v.get("name"))): v for v in value}  # judges, pins: one key per member
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}", out)
    else:
        out[prefix] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def facts(cfg: dict, record: dict | None) -> dict[str, str]:
    """A trial's flat facts from its config and its provenance record (None: recorded none)."""
    out: dict[str, str] = {}
    _flatten({k: v for k, v in cfg.items() if k not in SKIPPED}, "config", out)
    start = cfg.get("start")
    if isinstance(start, dict) and start.get("path"):  # sft-<hash>, or a pinned snapshot's commit
        out["config.start_id"] = Path(str(start["path"])).name
    if record:
        _flatten({k: v for k, v in (record.get("inputs") or {}).items() if k != "judge_paths"}, "inputs", out)
        _flatten(record.get("environment") or {}, "env", out)
        for k in ("effective_batch", "world"):
            if k in record:
                out[k] = json.dumps(record[k])
    return out


def read_record(trial_dir: Path) -> dict | None:
    try:
        return json.loads((Path(trial_dir) / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return None


def trial_facts(trial_dir: Path) -> dict[str, str] | None:
    """A trial directory's facts; None without a readable ``params.json``."""
    try:
        cfg = records.read_trial_config(Path(trial_dir))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return facts(cfg, read_record(trial_dir))


def export_record(trial_dir: Path) -> dict:
    """What an AlpacaEval export keeps of the trial it came from (``provenance.json`` beside its outputs)."""
    cfg = records.read_trial_config(Path(trial_dir))
    return {"trial_dir": str(trial_dir), "config": cfg, "provenance": read_record(trial_dir)}


@dataclass(frozen=True)
class Difference:
    rank: int
    category: str
    key: str
    values: tuple[tuple[str, ...], ...]  # per group of trials, the distinct values (sorted)


def differences(groups: list[list[dict[str, str]]], categories: set[str] | None = None) -> list[Difference]:
    """Keys whose values differ between the groups (each a list of trials' facts), most telling first."""
    keys = sorted({k for g in groups for f in g for k in f})
    out = []
    for key in keys:
        rank, cat = category(key)
        if categories is not None and cat not in categories:
            continue
        values = tuple(tuple(sorted({f.get(key, NOT_RECORDED) for f in g})) for g in groups)
        if len(set(values)) > 1:
            out.append(Difference(rank, cat, key, values))
    return sorted(out, key=lambda d: (d.rank, d.key))


def shown(values: tuple[str, ...], limit: int = 4) -> str:
    more = f", ... ({len(values)} values)" if len(values) > limit else ""
    return ", ".join(values[:limit]) + more


# --- the report's environment section ------------------------------------------------------------

ENV_COLUMNS = {"python": "env.python", **{p: f"env.packages.{p}" for p in NUMERIC_PACKAGES + ("ray",)},
               "CUDA": "env.cuda", "GPUs": "env.gpus", "CPU": "env.cpu", "ablate": "env.ablate.commit"}  # fmt: skip


def _trial_facts(df: pd.DataFrame) -> dict[str, dict[str, str]]:
    out = {}
    for d in df.get("trial_dir", pd.Series(dtype=object)).dropna():
        f = trial_facts(Path(d))
        if f is not None:
            out[str(d)] = f
    return out


def environment_table(df: pd.DataFrame, known: dict[str, dict[str, str]]):
    """One row per distinct environment: its sweeps, trials and versions."""
    from analysis.tables import Table

    rows: dict[tuple, dict] = {}
    for _, t in df[df["trial_dir"].astype(str).isin(known)].iterrows():
        f = known[str(t["trial_dir"])]
        env = {col: "none" if f.get(key) == "null" else f.get(key, "") for col, key in ENV_COLUMNS.items()}
        if f.get("env.ablate.dirty") == "true":
            env["ablate"] += " (edited)"
        env["ablate"] = env["ablate"][:10] + env["ablate"][40:] if len(env["ablate"]) >= 40 else env["ablate"]
        row = rows.setdefault(tuple(env.items()), {"sweeps": set(), "trials": 0, **env})
        row["sweeps"].add(str(t["sweep"]))
        row["trials"] += 1
    if not rows:
        return None
    frame = pd.DataFrame([{**r, "sweeps": ", ".join(sorted(r["sweeps"]))} for r in rows.values()])
    frame = frame.loc[:, [c for c in frame.columns if c in ("sweeps", "trials") or frame[c].astype(bool).any()]]
    return Table("environment", "Environment", "What the trials ran with (their provenance.json): one row per "
                 "distinct environment. `python -m analysis.diff A B` lists every input two runs differ in.",
                 frame.astype(str), frame)  # fmt: skip


def _note(what: str, diffs: list[Difference], names: list[str]) -> str:
    parts = [f"{d.category} `{d.key.split('.', 1)[-1]}` (" + "; ".join(
        f"{n}: {shown(v)}" for n, v in zip(names, d.values, strict=True)) + ")" for d in diffs[:6]]  # fmt: skip
    more = f", and {len(diffs) - 6} more" if len(diffs) > 6 else ""
    return f"{what}: " + ", ".join(parts) + more + ". `python -m analysis.diff` lists them all."


def section(df: pd.DataFrame, best: pd.DataFrame | None = None) -> tuple[object | None, list[str]]:
    """The environment table and the warnings: a sweep whose trials mix environments or inputs (e.g.
    resumed after a package upgrade), and arms of the method comparison that ran under different
    environments, data, model revisions or effective batch sizes."""
    if df.empty or "trial_dir" not in df.columns:
        return None, []
    known = _trial_facts(df)
    recorded = {d: f for d, f in known.items() if any(k.startswith("env.") for k in f)}
    notes = []
    if known and not recorded:
        return None, ["No trial recorded its provenance (they ran before ablate recorded it); the report "
                      "cannot tell whether they ran under the same environment."]  # fmt: skip
    checked = INPUT_CATEGORIES | {"effective batch"}
    for sweep, g in df.groupby("sweep"):
        diffs = _sweep_differences(g, recorded)
        if diffs:
            notes.append(_sweep_note(str(sweep), diffs))
    if best is not None and not best.empty and "config_key" in df.columns:
        arms = {str(b["label"]): [recorded[str(d)] for d in df.loc[df["config_key"] == b["config_key"], "trial_dir"]
                                  if str(d) in recorded] for _, b in best.iterrows()}  # fmt: skip
        arms = {k: v for k, v in arms.items() if v}
        if len(arms) > 1:
            diffs = [d for d in differences(list(arms.values()), checked | {"configuration"})
                     if d.category in checked or d.key in ("effective_batch", "world")]  # fmt: skip
            if diffs:
                notes.append(_note("The arms of the method comparison ran under different inputs", diffs, list(arms)))
    return environment_table(df, recorded), notes


def _sweep_differences(g: pd.DataFrame, recorded: dict[str, dict[str, str]]) -> list[Difference]:
    """A sweep's mix: environments across all its trials, and any input across the seeds of one setting
    (a grid's own values, e.g. a task grid's data, are not a mix)."""
    trials = [recorded[str(d)] for d in g["trial_dir"] if str(d) in recorded]
    found = {d.key: d for d in differences([[f] for f in trials], {"environment"})}
    keys = g["config_key"] if "config_key" in g.columns else g["trial_dir"]
    for _, setting in g.groupby(keys.astype(str)):
        seeds = [[recorded[str(d)]] for d in setting["trial_dir"] if str(d) in recorded]
        found.update({d.key: d for d in differences(seeds, INPUT_CATEGORIES)})
    return sorted(found.values(), key=lambda d: (d.rank, d.key))


def _sweep_note(sweep: str, diffs: list[Difference]) -> str:
    parts = [f"{d.category} `{d.key.split('.', 1)[-1]}`: {shown(tuple(sorted({v for vs in d.values for v in vs})))}"
             for d in diffs[:6]]  # fmt: skip
    more = f", and {len(diffs) - 6} more" if len(diffs) > 6 else ""
    return (f"Sweep {sweep}'s trials ran under different inputs (e.g. resumed after a package upgrade), so its "
            f"comparisons may mix them: " + "; ".join(parts) + more + ". `python -m analysis.diff` lists them.")
