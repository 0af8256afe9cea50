"""Sweep-file errors: one paragraph that names the file, the field path, what is wrong and the fix."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ablate.spec.schema import Space, SweepSpec


class SpecError(ValueError):
    """An invalid sweep file. ``str()`` is the one-paragraph message shown to the user."""


def _field_path(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) if loc else "(top level)"


VALUE_HELP = (
    "a number, true/false, a string, or a search space: {grid: [..]}, {choice: [..]}, "
    "{uniform: [low, high]}, {loguniform: [low, high]} or {randint: [low, high]}"
)
_SCALAR_TAGS = ("float", "int", "bool", "str")


def _union_member(loc: tuple) -> tuple[tuple, str | None]:
    """Pydantic reports a failed union (a hyperparameter is a number, bool, string or search space) once
    per member, tagged in the path; return the path without the tag, and the member's name."""
    for i, part in enumerate(loc):
        if isinstance(part, str) and (part in _SCALAR_TAGS or "[" in part):
            return loc[:i] + loc[i + 1 :], ("Space" if "Space" in part else part)
    return loc, None


def format_validation(
    path: Path, err: ValidationError, prefix: tuple = (), keys_at: tuple | None = None
) -> str:
    """One paragraph: every error's field path (``prefix`` + pydantic's), what is wrong and what to write.
    ``keys_at``: where in the sweep file the validated model sits, for the did-you-mean of unknown keys."""
    lines = []
    for e in err.errors():
        loc, member = _union_member(tuple(e["loc"]))
        if member in _SCALAR_TAGS:
            continue  # "not a number", "not a string", ...: the search-space member's error says more
        where = _field_path(prefix + loc)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            allowed = (
                list(Space.model_fields)
                if member == "Space"
                else _allowed_keys((prefix if keys_at is None else keys_at) + loc[:-1])
            )
            hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            msg = (
                "unknown key"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
                + f" Allowed here: {', '.join(allowed)}"
            )
        elif e["type"] == "missing":
            msg = "this field is required"
        elif member == "Space" and e["type"] == "model_type":
            msg = f"expected {VALUE_HELP}"
        line = f"{where}: {msg}"
        if line not in lines:
            lines.append(line)
    return f"{path}: invalid sweep file. " + "; ".join(lines) + ". See `python -m ablate.run --schema`."


def _allowed_keys(loc: tuple) -> list[str]:
    model: Any = SweepSpec
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {f.alias or n: f for n, f in model.model_fields.items()}  # a stage's `from` is an alias
        if part not in fields:
            return []
        annotation = fields[part].annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args, *(getattr(a, "__args__", ()) for a in args)]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return [f.alias or n for n, f in model.model_fields.items()]
