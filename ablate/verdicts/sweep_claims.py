"""The sweep file's own claims (``claims:``, checked at load by ablate.spec.claims) as tests for the
report's findings table: each arm is a method label's best setting (by the report's selection
rule, ``ablate.best``), or, with ``key=value`` words after the label, its best setting among those that set them."""

from __future__ import annotations

import pandas as pd

from ablate import records
from ablate.best import best_rows
from ablate.readout.summary import direction
from ablate.spec.claims import split_arm
from ablate.verdicts import claim_tests as V
from ablate.verdicts import paper_claims as F


def recorded(df: pd.DataFrame) -> list[dict]:
    """The claims recorded in the trials' configs (every trial of a sweep carries them)."""
    for d in df.get("trial_dir", pd.Series(dtype=object)).dropna():
        try:
            claims = records.read_trial_config(str(d)).get("claims")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        return list(claims or [])
    return []


def _matches(column: pd.Series, value: str) -> pd.Series:
    low = value.lower()
    if low in ("true", "false"):
        return column.map(lambda v: str(v).lower() == low)
    try:
        return pd.to_numeric(column, errors="coerce") == float(value)
    except ValueError:
        return column.astype(str) == value


def arm(done: pd.DataFrame, name: str, metric: str, mode: str | None = None) -> pd.DataFrame:
    """The trials of arm ``name`` (module doc); empty when no finished trial matches."""
    label, picks = split_arm(name)
    rows = F._label(done, label)
    for key, value in picks.items():
        col = next((c for c in (f"hp_{key}", f"tr_{key}") if c in rows), None)
        rows = rows[_matches(rows[col], value)] if col else rows.iloc[0:0]
    return best_rows(rows, metric, direction(metric, mode)) if metric in rows else rows


def tests(df: pd.DataFrame, claims: list[dict], metric: str, cache: dict | None = None,
          mode: str | None = None) -> list[V.Test]:  # fmt: skip
    """One test per claim; a ``better``/``worse`` claim is read in the metric's direction (lower
    runtime is better)."""
    done = df[df["status"] == "finished"]
    out = []
    for i, c in enumerate(claims):
        kind = next(k for k in ("better", "worse", "same") if c.get(k))
        a_name, b_name = c[kind], c.get("than") or c.get("as")
        col = c["metric"]
        higher = direction(col) == "max"
        expect = "=" if kind == "same" else ">" if (kind == "better") == higher else "<"
        text = f"{a_name} {'is the same as' if kind == 'same' else kind + ' than'} {b_name} on {col}"
        a, b = arm(done, a_name, metric, mode), arm(done, b_name, metric, mode)
        out.append(F.test(f"claim {i + 1}", text, a, b, col, expect, (a_name, b_name), cache, c.get("margin")))
    return out
