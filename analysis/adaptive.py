"""The verdicts an adaptive-seed sweep looks at after each round (``ablate.adaptive``): the report's
claims (the paper's findings where they apply, and the sweep file's ``claims:``), computed as the
findings table does (analysis.findings, analysis.claims) and corrected together at the look's level."""

from __future__ import annotations

from ablate import sequential as S
from ablate.adaptive import Decider
from analysis import claims as user
from analysis import fetch
from analysis import findings as F
from analysis import verdicts as V
from analysis.load import config_key, find_sweeps, load_trials


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
