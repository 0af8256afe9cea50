"""Adaptive seeds: the look schedule and the rule that picks which arms get another seed.

One rule, used by the sweep's run loop (``ablate.sweep.adaptive``) and by its replay on finished trials
(``bench/verdicts.py``, benchmark 7):

* **Schedule.** Every setting starts with ``start`` seeds (seeds ``0 .. start-1``); after each round
  (a *look*) the arms of the claims still undecided get one more seed, up to ``max`` seeds. So there
  are at most ``K = max - start + 1`` looks, and the worst case runs every setting at ``max`` seeds.
  One seed per round (not doubling) spends no seed that a claim decided one look earlier did not need.
* **Level of each look.** Each look corrects the report's claims together (Holm with Shaffer's
  constraint, ``ablate.verdicts.claim_tests.adjust``) at ``α / K``. By Bonferroni's inequality over the
  K looks, the chance that any look gives a false verdict is at most K · α/K = α, whatever the
  dependence between looks (they share seeds): a valid, conservative group-sequential bound, the
  constant split of alpha spending (Lan & DeMets 1983, "Discrete sequential boundaries for clinical
  trials", Biometrika 70: 659-663). Tighter boundaries for the same α exploit the correlation of
  the looks: Pocock's constant boundary (Pocock 1977, Biometrika 64: 191-199) or O'Brien & Fleming's
  (1979, Biometrics 35: 549-556), which spends little α early; both need the looks' joint normal
  distribution, which seed-level Welch statistics with few seeds only approximate, so we keep the
  bound that holds without it.
* **Stopping.** A claim decided at a look keeps that verdict (later looks do not reopen it); the
  sweep stops when every claim is decided or no undecided claim's arm is below ``max``.

Pure Python (no pandas): the verdicts a look needs come in as plain values from whoever computed
them (``ablate.sweep.adaptive``'s ``Decider``; the sweep's is ``ablate.verdicts.decider``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

UNDECIDED, MISSING = "undecided", "not measured"  # ablate.verdicts.claim_tests' verdicts that decide nothing


def looks(start: int, most: int) -> int:
    """K: the most looks a sweep of ``start`` to ``most`` seeds per setting takes (one seed per round)."""
    return most - start + 1


def look_alpha(alpha: float, start: int, most: int) -> float:
    """The level of every look: α / K (Bonferroni over the K looks; module doc)."""
    return alpha / looks(start, most)


@dataclass(frozen=True)
class ClaimLook:
    """One claim at one look: its verdict and the settings (keys) of each of its two arms."""

    claim: str
    verdict: str
    arms: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())


def next_round(
    looked: Iterable[ClaimLook], decided: dict[str, str], have: Mapping[str, int], most: int
) -> set[str]:
    """After a look: record each newly decided claim's verdict in ``decided`` (first verdict kept) and
    return the settings that get one more seed: those in an arm of a claim still undecided, below
    ``most`` seeds. A claim not measured (an arm or its metric missing) gets none: seeds cannot
    decide it. Empty: the sweep stops."""
    more: set[str] = set()
    for c in looked:
        if c.verdict not in (UNDECIDED, MISSING):
            decided.setdefault(c.claim, c.verdict)
        elif c.verdict == UNDECIDED and c.claim not in decided:
            more |= c.arms[0] | c.arms[1]
    return {k for k in more if have.get(k, 0) < most}
