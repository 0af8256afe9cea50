"""The sweep file, by job: ``schema`` (pydantic models), ``load`` (YAML -> a validated spec, with
``errors`` that name file, field and fix), ``checks`` (what the schema alone cannot check) and
``expand`` (trial configs and the search plan). Knows nothing of Ray.

The names other modules use are re-exported here: ``from ablate import spec; spec.load_sweep(...)``.
"""

from ablate.spec.checks import scheduler_metric
from ablate.spec.errors import SpecError
from ablate.spec.expand import (
    SearchEntry,
    expand,
    sampled_seed,
    sampled_trial,
    search_order,
    search_plan,
    setting_key,
)
from ablate.spec.load import load_sweep
from ablate.spec.schema import DISPLAY, MethodEntry, Space, SweepSpec, json_schema

__all__ = [
    "DISPLAY",
    "MethodEntry",
    "SearchEntry",
    "Space",
    "SpecError",
    "SweepSpec",
    "expand",
    "json_schema",
    "load_sweep",
    "sampled_seed",
    "sampled_trial",
    "scheduler_metric",
    "search_order",
    "search_plan",
    "setting_key",
]
