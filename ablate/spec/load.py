"""Reading a sweep file: YAML (safe loader only) -> a validated, checked ``SweepSpec``."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from ablate.spec import claims, stages
from ablate.spec.checks import check_semantics
from ablate.spec.errors import SpecError, format_validation
from ablate.spec.schema import SweepSpec


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; every problem raises ``SpecError`` with file, field and fix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(
            f"{path}: cannot read the sweep file ({e}). Pass the path of a YAML sweep file."
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(
            f"{path}: not valid YAML ({str(e).splitlines()[0]}). Fix the syntax at the line shown."
        ) from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a sweep file is a YAML mapping with at least `name` and `methods`.")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(format_validation(path, e)) from None
    spec = check_semantics(path, spec)
    claims.check(path, spec)
    return stages.check(path, spec) if spec.stages else spec


