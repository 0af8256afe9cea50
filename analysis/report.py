"""``python -m analysis.report [SWEEP_DIR ...] [--out DIR]``: tables and figures of finished sweeps.

With no argument, every sweep under ``results/``. Writes ``<out>/<name>/report.md``, ``table.csv``
and PNG figures, where ``name`` is the sweep's name (or ``combined`` for several sweeps)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis import fetch, plots, tables
from analysis.load import find_sweeps, load_trials

EXIT_BAD_INPUT = 2


def write_report(df, name: str, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = tables.setting_summary(df)
    table = tables.format_mean_std(summary)
    table.to_csv(out_dir / "table.csv", index=False)
    summary.to_csv(out_dir / "table_raw.csv")
    lines = [f"# Report: {name}", ""]
    counts = df["status"].value_counts().to_dict()
    lines.append("Trials: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + f" (of {len(df)}).")
    lines += [
        "",
        "Mean ± std over seeds; n = number of seeds that finished.",
        "",
        table.to_markdown(index=False),
        "",
    ]
    problems = df[df["status"] != "finished"]
    if not problems.empty:
        lines += ["## Trials that did not finish", ""]
        for _, r in problems.iterrows():
            lines.append(f"- {r.get('trial')}: {r['status']} — {r.get('error', '')}")
        lines.append("")
    for fig in (plots.gamma_plot(df, out_dir), plots.cost_plot(df, out_dir)):
        if fig is not None:
            lines += [f"![{fig.stem}]({fig.name})", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__)
    p.add_argument("sweeps", nargs="*", default=["results"], help="sweep directories or folders of them")
    p.add_argument("--out", default="reports", help="output folder (default: reports/)")
    args = p.parse_args(argv)
    try:  # results in object storage (s3://...) are read from there
        args.sweeps = [str(fetch.localize(s)) for s in args.sweeps]
    except fetch.FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sweep_dirs = find_sweeps(args.sweeps)
    if not sweep_dirs:
        print(f"error: no sweep results found under {', '.join(args.sweeps)}. Run `python -m ablate.run SWEEP.yaml` first "
              "or pass the sweep directory (results/<name>).", file=sys.stderr)  # fmt: skip
        return EXIT_BAD_INPUT
    df = load_trials(sweep_dirs)
    if df.empty or not (df["status"] == "finished").any():
        print(
            f"error: no finished trial in {', '.join(map(str, sweep_dirs))}; nothing to report.",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    name = sweep_dirs[0].name if len(sweep_dirs) == 1 else "combined"
    path = write_report(df, name, Path(args.out) / name)
    print(f"Report written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
