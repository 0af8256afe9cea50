"""Writers: each table as Markdown, CSV and LaTeX (booktabs); the report as ``report.md`` and as a
self-contained ``report.html`` (figures embedded as base64 PNG, links to the SVG/CSV/TeX files)."""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.plots import Figure
from analysis.tables import Table

# The report's sections: (title, table names, figure names or name prefixes ending in "-").
SECTIONS = [
    ("The paper's findings", ["findings"], []),
    ("Length bias of the labels", ["length_bias"], []),
    ("Main comparison", ["main"], []),
    ("On- vs off-policy data", ["on_policy", "on_policy_data"], []),
    ("Tuning path", ["tuning_path"], []),
    ("Judges", ["judges"], ["lc-length"]),
    ("Ablation", ["ablation"], []),
    ("Hyperparameter sensitivity", ["sensitivity", "importance"], ["gamma", "sensitivity-"]),
    ("Length and likelihood", ["length"], ["length-logp"]),
    ("Reward and likelihood", ["agreement"], ["contingency", "agreement"]),
    ("Efficiency", ["efficiency"], ["efficiency"]),
    ("Environment", ["environment"], []),
    ("Training curves", [], ["curves"]),
    ("All settings", ["settings"], []),
]


@dataclass
class ReportDoc:
    name: str
    sweeps: list[str]
    counts: pd.DataFrame  # trials per sweep and status
    problems: pd.DataFrame  # trials that did not finish
    rule: str  # the best-setting selection rule
    tables: list[Table]
    figures: list[Figure]
    notes: list[str] = field(default_factory=list)


NUMBER = re.compile(r"^([-+]?\d[\d,]*(\.\d+)?( ± \S+| \[.*\])?|–)$")


def numeric_column(values) -> bool:
    """Whether a column of cells holds numbers (``0.5``, ``0.5 ± 0.1``, ``0.5 [0.4, 0.6]``, ``–``)."""
    cells = [str(v) for v in values if str(v) not in ("", "nan")]
    return bool(cells) and all(NUMBER.match(c) for c in cells)


def to_markdown(frame: pd.DataFrame) -> str:
    """A pipe table: numbers right-aligned, text left-aligned."""
    if frame.empty:
        return "_(none)_"
    align = ["right" if numeric_column(frame[c]) else "left" for c in frame.columns]
    return frame.to_markdown(index=False, disable_numparse=True, colalign=align)


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "γ": r"$\gamma$",
    "β": r"$\beta$", "ρ": r"$\rho$", "τ": r"$\tau$", "λ": r"$\lambda$", "α": r"$\alpha$", "δ": r"$\delta$",
    "ℓ": r"$\ell$", "–": "--", "×": r"$\times$", "≥": r"$\geq$",
}  # fmt: skip


def latex_escape(text) -> str:
    """Text to LaTeX: specials escaped, Greek and symbols in math mode, `code` in typewriter."""
    out = "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    return re.sub(r"`([^`]+)`", r"\\texttt{\1}", out)


def html_text(text) -> str:
    """Text to HTML: escaped, `code` in <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(text)))


def to_latex(table: Table) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    frame = table.display
    align = "".join("r" if numeric_column(frame[c]) else "l" for c in frame.columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(table.title)}. {latex_escape(table.caption)}}}",
        rf"\label{{tab:{table.name}}}",
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in frame.columns) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def _md_notes(table: Table) -> list[str]:
    return [f"> {n}" for n in table.notes] + ([""] if table.notes else [])


def write_table(table: Table, out: Path) -> None:
    notes = "".join(f"\n{line}" for line in _md_notes(table))
    (out / f"{table.name}.md").write_text(
        f"**{table.title}.** {table.caption}\n\n{to_markdown(table.display)}\n{notes}"
    )
    table.data.to_csv(out / f"{table.name}.csv", index=False)
    (out / f"{table.name}.tex").write_text(to_latex(table))


def _figures_of(doc: ReportDoc, names: list[str]) -> list[Figure]:
    return [
        f
        for f in doc.figures
        if any(f.name == n or (n.endswith("-") and f.name.startswith(n)) for n in names)
    ]


def _tables_of(doc: ReportDoc, names: list[str]) -> list[Table]:
    by_name = {t.name: t for t in doc.tables}
    return [by_name[n] for n in names if n in by_name]


def _status_line(counts: pd.DataFrame) -> str:
    total = counts.drop(columns=["sweep"]).sum()
    parts = [f"{int(total[c])} {c}" for c in counts.columns if c not in ("sweep", "total") and total[c]]
    return f"{int(total['total'])} trials: " + ", ".join(parts) + "."


def markdown_report(doc: ReportDoc) -> str:
    lines = [f"# Report: {doc.name}", "", f"Sweeps: {', '.join(doc.sweeps)}. {_status_line(doc.counts)}", ""]
    lines += [to_markdown(doc.counts), "", f"**Best setting.** {doc.rule}", ""]
    lines += [f"> Note: {n}" for n in doc.notes] + ([""] if doc.notes else [])
    for title, table_names, fig_names in SECTIONS:
        tables, figs = _tables_of(doc, table_names), _figures_of(doc, fig_names)
        if not tables and not figs:
            continue
        lines += [f"## {title}", ""]
        for t in tables:
            lines += [f"**{t.title}.** {t.caption} ([CSV]({t.name}.csv), [LaTeX]({t.name}.tex))", "",
                      to_markdown(t.display), ""]  # fmt: skip
            lines += _md_notes(t)
        for f in figs:
            lines += [f"![{f.title}]({f.png.name})", "", f"*{f.title}.* {f.caption}", ""]
    lines += ["## Trials that did not finish", ""]
    if doc.problems.empty:
        lines += ["Every trial finished.", ""]
    else:
        lines += [
            f"{len(doc.problems)} trials did not finish; they are left out of the tables above "
            "(a row per trial; the message is Ray's error line, the divergence or the stop reason).",
            "",
            to_markdown(doc.problems),
            "",
        ]
    lines += ["All trials, with every reported metric: [trials.csv](trials.csv).", ""]
    return "\n".join(lines)


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1300px; margin: 24px auto;
       padding: 0 20px; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 8px 0 18px; font-size: 0.9em; }
th, td { padding: 4px 10px; text-align: left; border-bottom: 1px solid #e5e5e5; white-space: nowrap; }
th.num, td.num { text-align: right; }
th { border-bottom: 2px solid #333; background: #fafafa; white-space: normal; max-width: 150px; vertical-align: bottom; }
.scroll { overflow-x: auto; }
table.problems td { white-space: normal; max-width: 700px; }
/* The findings table's point is its verdict, the last column: the long "measured" intervals and the
   claims wrap so that the verdict stays on screen at 1300 px instead of behind a sideways scroll. */
table.tbl-findings td.col-claim, table.tbl-findings td.col-measured, table.tbl-findings td.col-to-decide,
table.tbl-findings td.col-95-ci, table.tbl-findings td.col-metric, table.tbl-findings td.col-p-holm { white-space: normal; }
table.tbl-findings td.col-claim { min-width: 12em; }
table.tbl-findings td.col-measured { min-width: 12em; overflow-wrap: anywhere; }
table.tbl-findings td.col-metric { overflow-wrap: anywhere; }
table.tbl-findings td.col-to-decide { min-width: 9em; }
caption { caption-side: top; text-align: left; font-size: 0.95em; padding: 4px 0; max-width: 1200px; }
figure { margin: 10px 0 26px; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; max-width: 1100px; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 12px; }
.rule { background: #eef5ff; border-left: 4px solid #3b7ddd; padding: 6px 12px; }
.links { font-size: 0.85em; color: #666; }
"""


def column_class(name) -> str:
    """The CSS class of a table column's cells, e.g. ``col-measured``, so the style can target one column."""
    return "col-" + (re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-") or "x")


def _html_table(frame: pd.DataFrame, caption: str = "", cls: str = "") -> str:
    if frame.empty:
        return "<p><em>(none)</em></p>"
    num = [f' class="{"num " if numeric_column(frame[c]) else ""}{column_class(c)}"' for c in frame.columns]
    head = "".join(f"<th{a}>{html.escape(str(c))}</th>" for c, a in zip(frame.columns, num, strict=True))
    body = "".join(
        "<tr>"
        + "".join(f"<td{a}>{html.escape(_cell(v))}</td>" for v, a in zip(row, num, strict=True))
        + "</tr>"
        for row in frame.itertuples(index=False)
    )
    cap = f"<caption>{caption}</caption>" if caption else ""
    return f'<div class="scroll"><table class="{cls}">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _cell(v) -> str:
    if isinstance(v, float) and math.isnan(v):
        return ""
    return str(v)


def _img(fig: Figure) -> str:
    data = base64.b64encode(fig.png.read_bytes()).decode()
    links = f' <span class="links">(<a href="{fig.svg.name}">SVG</a>)</span>' if fig.svg else ""
    return (
        f'<figure id="fig-{fig.name}"><img src="data:image/png;base64,{data}" alt="{html.escape(fig.title)}">'
        f"<figcaption><strong>{html.escape(fig.title)}.</strong> {html_text(fig.caption)}{links}</figcaption></figure>"
    )


def html_report(doc: ReportDoc) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Report: {esc(doc.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>Report: {esc(doc.name)}</h1>",
        f"<p>Sweeps: {esc(', '.join(doc.sweeps))}. {esc(_status_line(doc.counts))}</p>",
        _html_table(doc.counts, cls="counts"),
        f'<p class="rule"><strong>Best setting.</strong> {html_text(doc.rule)}</p>',
    ]
    parts += [f'<p class="note">{html_text(n)}</p>' for n in doc.notes]
    toc = []
    body = []
    for title, table_names, fig_names in SECTIONS:
        tables, figs = _tables_of(doc, table_names), _figures_of(doc, fig_names)
        if not tables and not figs:
            continue
        anchor = title.lower().replace(" ", "-")
        toc.append(f'<a href="#{anchor}">{esc(title)}</a>')
        body.append(f'<h2 id="{anchor}">{esc(title)}</h2>')
        for t in tables:
            cap = (
                f"<strong>{esc(t.title)}.</strong> {html_text(t.caption)} "
                f'<span class="links">(<a href="{t.name}.csv">CSV</a>, <a href="{t.name}.tex">LaTeX</a>, '
                f'<a href="{t.name}.md">Markdown</a>)</span>'
            )
            body.append(_html_table(t.display, cap, cls=f"tbl-{t.name}"))
            body += [f'<p class="note">{html_text(n)}</p>' for n in t.notes]
        body += [_img(f) for f in figs]
    toc.append('<a href="#trials-that-did-not-finish">Trials that did not finish</a>')
    parts.append("<p>" + " · ".join(toc) + "</p>")
    parts += body
    parts.append('<h2 id="trials-that-did-not-finish">Trials that did not finish</h2>')
    if doc.problems.empty:
        parts.append("<p>Every trial finished.</p>")
    else:
        parts.append(
            f"<p>{len(doc.problems)} trials did not finish; they are left out of the tables above.</p>"
            + _html_table(doc.problems, cls="problems")
        )
    parts.append(
        '<p class="links">All trials, with every reported metric: <a href="trials.csv">trials.csv</a>; '
        'this report in Markdown: <a href="report.md">report.md</a>.</p>'
    )
    parts.append("</body></html>")
    return "\n".join(parts)
