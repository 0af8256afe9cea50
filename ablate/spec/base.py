"""The base of every sweep-file model (strict, frozen) and the value a sweep can search: ``Space``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class Strict(BaseModel):
    # Frozen: a validated spec is a value; changes go through ``model_copy(update=...)``.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Space(Strict):
    """A search space for one value: exactly one of the keys."""

    grid: list[Any] | None = None
    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Space:
        given = [
            k for k in ("grid", "choice", "uniform", "loguniform", "randint") if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError("a search space has exactly one of grid, choice, uniform, loguniform, randint")
        values = getattr(self, given[0])
        if given[0] in ("grid", "choice") and not values:
            raise ValueError(f"{given[0]} is empty; list at least one value")
        if given[0] in ("uniform", "loguniform", "randint") and not values[0] < values[1]:
            raise ValueError(f"{given[0]} needs [low, high] with low < high, got {list(values)}")
        if given[0] == "loguniform" and values[0] <= 0:
            raise ValueError("loguniform needs low > 0")
        return self

    @property
    def kind(self) -> str:
        return next(
            k for k in ("grid", "choice", "uniform", "loguniform", "randint") if getattr(self, k) is not None
        )

    @property
    def values(self) -> Any:
        return getattr(self, self.kind)


Value = float | int | bool | str | Space
