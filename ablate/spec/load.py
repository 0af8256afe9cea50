"""Reading a sweep file: YAML (safe loader only) -> a validated, checked ``SweepSpec``."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from ablate.spec import stages
from ablate.spec.checks import check_claims, check_semantics
from ablate.spec.errors import SpecError, format_validation
from ablate.spec.schema import SweepSpec


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping, where PyYAML keeps the last one
    silently (two `name:` lines: which sweep did the user mean?)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool):
                continue  # an unhashable key: the schema refuses it
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKey(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep)


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key: object, first: int, second: int) -> None:
        super().__init__(key, first, second)
        self.key, self.first, self.second = key, first, second


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
        loader = UniqueKeyLoader(text)  # a SafeLoader: Python tags are refused
        try:
            raw = loader.get_single_data()
        finally:
            loader.dispose()
    except DuplicateKey as e:
        raise SpecError(
            f"{path}: the key {e.key!r} is written twice in one mapping, on lines {e.first} and {e.second}; "
            "YAML would keep only the second silently. Keep one of them."
        ) from None
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
    check_claims(path, spec)
    return stages.check(path, spec) if spec.stages else spec


