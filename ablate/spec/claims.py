"""The sweep file's own claims (``claims:``), tested in the report next to the paper's findings
(ablate.verdicts.sweep_claims, ablate.verdicts.claim_tests) and checked here, before anything launches: every
arm names a method label of the sweep (optionally with ``key=value`` hyperparameters that pick its settings,
e.g. ``SimPO gamma=0``), the metric is one the trials report, a margin is not negative.

    claims:
      - {better: SimPO, than: DPO, metric: oracle_win_rate}
      - {same: SimPO, as: "SimPO gamma=0", metric: reward_accuracy, margin: 0.02}
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from ablate.spec.base import Strict


class Claim(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    better: str | None = Field(None, description="Arm A, claimed better than `than` on `metric`.")
    worse: str | None = Field(None, description="Arm A, claimed worse than `than` on `metric`.")
    same: str | None = Field(None, description="Arm A, claimed the same as `as` within `margin`.")
    than: str | None = None
    as_: str | None = Field(None, alias="as")
    metric: str
    margin: float | None = Field(None, ge=0, description="Equivalence margin (default: per metric, 0.01 for rates).")

    @model_validator(mode="after")
    def _one_kind(self) -> Claim:
        kinds = [k for k in ("better", "worse", "same") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError("give exactly one of better / worse / same")
        if kinds[0] == "same" and not self.as_:
            raise ValueError("`same: A` needs `as: B`")
        if kinds[0] != "same" and not self.than:
            raise ValueError(f"`{kinds[0]}: A` needs `than: B`")
        return self

    @property
    def arms(self) -> tuple[str, str]:
        return (self.better or self.worse or self.same or ""), (self.than or self.as_ or "")


def split_arm(name: str) -> tuple[str, dict[str, str]]:
    """``"SimPO w/o LN gamma=0,beta=2"`` → (``"SimPO w/o LN"``, {gamma: "0", beta: "2"}): the trailing
    words with ``=`` pick settings, the rest is the label."""
    words = name.split()
    picks: dict[str, str] = {}
    while words and "=" in words[-1]:
        for part in words.pop().split(","):
            key, _, value = part.partition("=")
            picks[key.strip()] = value.strip()
    return " ".join(words), picks
