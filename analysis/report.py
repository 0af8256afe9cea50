"""``python -m analysis.report [SWEEP_DIR ...] [--out DIR] [--metric M] [--mode max|min] [--spread std|ci95]
[--export alpaca_eval] [--judgments ANNOTATIONS.json]``

Turns finished sweeps into the paper's tables and figures. With no argument, every sweep under
``results/``. Several sweeps merge into one report: methods, settings and seeds are matched by
their trial configs, not by directory names. Writes ``<out>/<name>/`` (``name``: the sweep's name,
``combined`` for several, or ``--name``): ``report.md``, ``report.html`` (self-contained), each table
as ``.md``/``.csv``/``.tex``, each figure as ``.png`` (and ``.svg``) and ``trials.csv``. Exit 2 when there is nothing to report (no sweep, or no finished trial)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ablate.readout import fetch
from ablate.readout import summary as seeds
from ablate.readout.loader import duplicates_note, find_sweeps, load_trials
from analysis import judged, onpolicy, plots, staged, stats, tables, writers
from analysis import provenance as provenance_mod

EXIT_BAD_INPUT = 2
DEFAULT_METRIC = "reward_accuracy"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("sweeps", nargs="*", default=["results"], help="sweep directories or folders of them")
    p.add_argument("--out", default="reports", help="parent folder of the report folder (default: reports/)")
    p.add_argument("--name", help="report folder name (default: the sweep's name, or 'combined')")
    p.add_argument("--metric", help="metric that selects each method's best setting "
                   f"(default: the sweep file's `metric`, else {DEFAULT_METRIC})")  # fmt: skip
    p.add_argument("--mode", choices=["max", "min"], help="whether higher or lower --metric is better "
                   "(default: the sweep file's `mode` for its own metric, else min for costs/losses, max otherwise)")  # fmt: skip
    p.add_argument("--spread", choices=["std", "ci95"], default="std",
                   help="uncertainty shown after each mean: sample std (default) or 95%% t-interval")  # fmt: skip
    p.add_argument("--log-to-tracking", action="store_true",
                   help="also log the report's files to the sweep's MLflow parent run / W&B group (its `tracking:`)")  # fmt: skip
    p.add_argument("--export", choices=["alpaca_eval"], help="also write each method's generations (best "
                   "setting) and the start point's in AlpacaEval's format, under <out>/<name>/alpaca_eval/")  # fmt: skip
    p.add_argument("--judgments", action="append", default=[], metavar="PATH",
                   help="AlpacaEval's annotations.json of an exported report: shown as one more judge")  # fmt: skip
    p.add_argument("--watch", action="store_true", help="follow a running sweep: re-render as trials finish, "
                   "reading only what is new, until the sweep ends (or Ctrl-C); see analysis/watch.py")  # fmt: skip
    p.add_argument("--interval", type=float, default=10.0, help="--watch: seconds between looks (default 10)")
    return p.parse_args(argv)


def _recorded(df, column: str) -> str | None:
    """The value most trials recorded (the sweep file's metric/mode), if any."""
    if column not in df.columns:
        return None
    values = df[column].dropna()
    return str(values.mode().iloc[0]) if not values.empty else None


def choose_metric(df, metric: str | None, mode: str | None) -> tuple[str, str, list[str]]:
    """The selection metric and mode (see ``--metric``/``--mode``), and notes about the choice."""
    notes = []
    recorded = _recorded(df, "sweep_metric")
    if recorded and "sweep_metric" in df and df["sweep_metric"].dropna().nunique() > 1:
        notes.append(
            f"The sweeps record different metrics ({', '.join(sorted(df['sweep_metric'].dropna().unique()))}); "
            f"using `{metric or recorded}`."
        )
    chosen = metric or recorded or DEFAULT_METRIC
    source = "--metric" if metric else "the sweep file's `metric`" if recorded else "the default"
    if mode is None and chosen == recorded:
        mode = _recorded(df, "sweep_mode")
    notes.append(f"Selection metric `{chosen}` comes from {source}; mode: {seeds.direction(chosen, mode)}.")
    return chosen, seeds.direction(chosen, mode), notes


def write_report(df, name: str, out_dir: Path, metric: str, mode: str, spread: str = "std",
                 notes: list[str] | None = None, judged_cache: dict | None = None) -> Path:  # fmt: skip
    """Aggregate ``df`` (from ``load_trials``) and write every file of the report; returns report.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    df, judge_notes = judged.add_sweep_lc(df, judged_cache)
    notes = list(notes or []) + judge_notes
    analysed, stage_notes = staged.final_stage(df)  # a staged sweep: its final stage; else every trial
    results = stats.analyze(analysed, metric, mode)
    table_list = tables.build_tables(results, spread, analysed, metric)
    table_list += [t for t in [staged.tuning_path_table(df, spread)] if t is not None]
    table_list += onpolicy.tables(analysed, metric, mode)  # a sweep with data.on_policy
    environment, env_notes = provenance_mod.section(analysed, results.best)  # what the trials ran with
    table_list += [environment] if environment is not None else []
    for t in table_list:
        writers.write_table(t, out_dir)
    figures = plots.build_figures(results, out_dir, spread)
    df.drop(columns=["history"], errors="ignore").to_csv(out_dir / "trials.csv", index=False)
    empty = sorted(set(df["sweep"]) - set(seeds.finished(df)["sweep"]))
    all_notes = list(notes or []) + stage_notes + results.notes + env_notes
    if empty:
        all_notes.append(f"No trial of sweep(s) {', '.join(empty)} finished; they add nothing to the tables.")
    direction = "highest" if mode == "max" else "lowest"
    doc = writers.ReportDoc(
        name=name,
        sweeps=sorted(set(df["sweep"])),
        counts=tables.status_counts(df),
        problems=tables.problem_trials(df),
        rule=stats.SELECTION_RULE.format(metric=metric, direction=direction),
        tables=table_list,
        figures=figures,
        notes=all_notes,
    )
    (out_dir / "report.md").write_text(writers.markdown_report(doc))
    (out_dir / "report.html").write_text(writers.html_report(doc))
    return out_dir / "report.md"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.watch:
        from analysis import watch

        return watch.follow(args)
    try:  # results in object storage (s3://...) are read from there
        args.sweeps = [str(fetch.localize(s)) for s in args.sweeps]
    except fetch.FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sweep_dirs = find_sweeps(args.sweeps)
    if not sweep_dirs:
        print(f"error: no sweep results found under {', '.join(args.sweeps)}. Run `python -m ablate.run SWEEP.yaml` "
              "first, or pass a sweep directory (results/<name>, a folder of trial directories).",
              file=sys.stderr)  # fmt: skip
        return EXIT_BAD_INPUT
    return report_from(args, sweep_dirs, load_trials(sweep_dirs))


def report_from(args: argparse.Namespace, sweep_dirs: list[Path], df, judged_cache: dict | None = None) -> int:
    """The report of the loaded trials ``df`` of ``sweep_dirs`` as ``args`` ask; 0, or 2 on bad input."""
    finished = seeds.finished(df) if not df.empty else df
    if finished.empty:
        counts = df["status"].value_counts().to_dict() if not df.empty else {}
        seen = ", ".join(f"{v} {k}" for k, v in counts.items()) or "no trials"
        print(f"error: no finished trial in {', '.join(map(str, sweep_dirs))} ({seen}); nothing to report. "
              "Check the trials' error.txt, or finish the sweep with `python -m ablate.run SWEEP.yaml --resume`.",
              file=sys.stderr)  # fmt: skip
        return EXIT_BAD_INPUT
    analysed = staged.final_stage(df)[0]  # what the tables are drawn from
    metric, mode, notes = choose_metric(analysed, args.metric, args.mode)
    done = seeds.finished(analysed)
    available = sorted(c for c in seeds.metric_columns(done) if done[c].notna().any())
    if metric not in available:
        print(f"error: --metric {metric}: no finished trial reported it. Choose one of: {', '.join(available)}.",
              file=sys.stderr)  # fmt: skip
        return EXIT_BAD_INPUT
    if note := duplicates_note(df):
        print(f"warning: {note}", file=sys.stderr)
    for sweep in sorted(set(df["sweep"]) - set(finished["sweep"])):
        print(f"warning: no trial of sweep {sweep} finished; it adds nothing to the tables.", file=sys.stderr)
    name = args.name or (sweep_dirs[0].name if len(sweep_dirs) == 1 else "combined")
    if args.judgments or args.export:
        from analysis import alpaca

        best = stats.best_settings(seeds.seed_summary(analysed), metric, mode)  # a staged sweep: its final stage
        for judgments in args.judgments:
            try:
                df, more = alpaca.add_judgments(df, best, Path(judgments))
            except (OSError, ValueError, KeyError) as e:
                print(f"error: --judgments {judgments}: not an AlpacaEval annotations file ({type(e).__name__}: {e}). "
                      "Give the annotations.json that alpaca_eval wrote for the exported outputs.", file=sys.stderr)  # fmt: skip
                return EXIT_BAD_INPUT
            notes += more
        if args.export:
            files = alpaca.export(best, df, Path(args.out) / name)
            print(f"AlpacaEval files: {len(files)} written under {Path(args.out) / name / 'alpaca_eval'}")
    path = write_report(df, name, Path(args.out) / name, metric, mode, args.spread, notes, judged_cache)
    problems = int((df["status"] != "finished").sum())
    print(f"Report written: {path} and {path.with_suffix('.html')} "
          f"({len(finished)} finished trials, {problems} not finished; best setting by {metric}, {mode})")  # fmt: skip
    if args.log_to_tracking:
        return log_to_tracking(sweep_dirs, path.parent)
    return 0


def log_to_tracking(sweep_dirs: list[Path], report_dir: Path) -> int:
    """``--log-to-tracking``: the report's files next to the sweeps' runs (``ablate.tracking.report``)."""
    from ablate.tracking.report import TrackingError, log_report

    try:
        for line in log_report(sweep_dirs, report_dir):
            print(f"Report logged to {line}")
    except TrackingError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
