"""``python -m analysis.diff A B``: every input two runs differ in, most likely to move the numbers first.

A and B are each a trial directory, a sweep directory (every trial of it), or an AlpacaEval export
(``python -m analysis.report --export alpaca_eval``: its folder, ``alpaca_eval/`` or one method's folder).
Their inputs are the trial configs and ``provenance.json`` records (``analysis.provenance``): data rows,
model revision and weights, chat template, tokenizer, configuration, judges, evaluation, then the
environment. A line per input that differs: ``category  key: A's values | B's values`` (a sweep's
values are those of all its trials). Prints nothing and exits 0 when they match; exits 1 when they
differ, 2 when a path is not a result."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ablate.readout.loader import is_sweep_dir, load_sweep
from analysis.provenance import differences, facts, shown, trial_facts

EXIT_DIFFERENT, EXIT_BAD_INPUT = 1, 2


def _export_facts(folder: Path) -> list[dict[str, str]]:
    """The trials an AlpacaEval export's method folders came from (their ``provenance.json``)."""
    out = []
    # The export's folder, its alpaca_eval/ or one method's folder: nothing deeper (a parent folder is no result).
    found = [folder / "provenance.json", *folder.glob("*/provenance.json"), *folder.glob("alpaca_eval/*/provenance.json")]
    for f in sorted(set(found)):
        if not (f.is_file() and (f.parent / "model_outputs.json").is_file()):
            continue
        try:
            record = json.loads(f.read_text())
            out.append(facts(record["config"], record.get("provenance")))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def trials_of(path: Path) -> list[dict[str, str]]:
    """The facts of every trial ``path`` holds; empty when it holds no result."""
    if (path / "params.json").is_file():
        one = trial_facts(path)
        return [one] if one is not None else []
    if is_sweep_dir(path):
        dirs = [Path(r["trial_dir"]) for r in load_sweep(path)]
        return [f for d in dirs if (f := trial_facts(d)) is not None]
    return _export_facts(path) if path.is_dir() else []


def lines(a: list[dict[str, str]], b: list[dict[str, str]]) -> list[str]:
    out = []
    for d in differences([a, b]):
        out.append(f"{d.category:<20} {d.key}: {shown(d.values[0])} | {shown(d.values[1])}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.diff", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("a", help="trial directory, sweep directory or AlpacaEval export")
    p.add_argument("b", help="trial directory, sweep directory or AlpacaEval export")
    args = p.parse_args(argv)
    sides = []
    for arg in (args.a, args.b):
        found = trials_of(Path(arg))
        if not found:
            print(f"error: {arg} is not a result: give a trial directory (with params.json), a sweep directory "
                  "(results/<sweep>, its trial directories) or an AlpacaEval export (the folder written by "
                  "`python -m analysis.report --export alpaca_eval`, with <method>/model_outputs.json and "
                  "provenance.json), e.g. `python -m analysis.diff results/gamma results/gamma-rerun`.",
                  file=sys.stderr)  # fmt: skip
            return EXIT_BAD_INPUT
        sides.append(found)
    out = lines(*sides)
    for line in out:
        print(line)
    return EXIT_DIFFERENT if out else 0


if __name__ == "__main__":
    sys.exit(main())
