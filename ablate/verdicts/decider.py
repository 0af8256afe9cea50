"""The verdicts an adaptive-seed sweep looks at after each round (``ablate.sweep.adaptive``): the report's
claims (the paper's findings where they apply, and the sweep file's ``claims:``), computed as the
findings table does (ablate.verdicts.paper_claims, ablate.verdicts.sweep_claims) and corrected together
at the look's level. ``ablate.sweep.cli`` hands ``DECIDER`` to the loop."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ablate import records
from ablate.readout import fetch
from ablate.readout.loader import config_key, find_sweeps, load_trials
from ablate.sweep import sequential as S
from ablate.sweep.adaptive import Decider
from ablate.verdicts import claim_tests as V
from ablate.verdicts import paper_claims as F
from ablate.verdicts import sweep_claims as user


def as_look(t: V.Test) -> S.ClaimLook:
    """A claim's verdict and the settings of its arms, as the adaptive rule takes them."""
    arms = (frozenset(), frozenset()) if t.arms is None else tuple(frozenset(a["config_key"]) for a in t.arms)
    return S.ClaimLook(t.claim, t.verdict, arms)


def look(root: str, metric: str, claims: list[dict], alpha: float) -> list[S.ClaimLook]:
    """Every claim on the trials finished under ``root`` (all rounds), corrected together at ``alpha``."""
    dirs = find_sweeps([fetch.localize(root)])
    df = load_trials(dirs) if dirs else None
    if df is None or df.empty:
        return []
    tests = F.paper_tests(df, metric) if F.applies(df) else []
    if claims:
        tests += user.tests(df, claims, metric)
    V.adjust(tests, alpha)
    return [as_look(t) for t in tests]


DECIDER = Decider(look=look, key=config_key)


def look_alpha(df: pd.DataFrame) -> tuple[float, str]:
    """The level the report's verdicts are tested at, and a caption note: an adaptive-seed sweep's
    trials (its ``rounds.json`` beside their round folders) at the look level α/K, the level the
    sweep's looks decided at (the report repeats its last look), so the family-wise error over all
    K looks stays at α (ablate.sweep.sequential); other trials at ``V.ALPHA``."""
    for d in df.get("trial_dir", pd.Series(dtype=object)).dropna().unique():
        record = Path(str(d)).parent.parent / records.ROUNDS_FILE
        try:
            data = json.loads(record.read_text())
            alpha, k = float(data["look_alpha"]), int(data["looks"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        return alpha, (f" Adaptive seeds ({record.parent.name}): verdicts at each look's level α/{k} = {alpha:.3g}, "
                       f"the level of the sweep's looks: its {k} looks together keep the family-wise error at {100 * k * alpha:.0f} %.")  # fmt: skip
    return V.ALPHA, ""
