"""The report reads Ray Tune's internal experiment state (``experiment_state-*.json``: the status of
trials that never wrote a folder, and retries) in one function, ``ablate.readout.loader.experiment_state``.
These tests pin what it reads against the file as Ray's own code writes it (a real ``Trial``'s
``get_json_state`` under ``TuneController``'s ``trial_data`` key and file name), so a Ray upgrade that
changes the format fails here, not in a report; and that nothing else that reads a sweep's results
(``analysis/``, ``ablate/readout/``) reads it."""

from __future__ import annotations

import json
import re

from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment.trial import Trial

from ablate.readout.loader import RAY_STATE, experiment_state, is_sweep_dir
from ablate.records import TRIAL_KEY
from tests.conftest import REPO

LOADER = "ablate/readout/loader.py"


def ray_trial(trial_id: str, logdir: str | None, status: str, failures: int = 0) -> Trial:
    trial = Trial("__fake", config={TRIAL_KEY: {"seed": 3, "method": "simpo"}}, trial_id=trial_id, stub=True)
    trial.relative_logdir = logdir
    trial.status = status
    trial.run_metadata.num_failures = failures
    return trial


def write_state(sweep_dir, trials: list[Trial], stamp: str = "2026-01-01_00-00-00") -> None:
    """The file as ``TuneController.save_to_dir`` writes it: its name template, ``trial_data``."""
    name = TuneController.CKPT_FILE_TMPL.format(stamp)
    data = {"trial_data": [list(t.get_json_state()) for t in trials], "runner_data": {}, "stats": {}}
    (sweep_dir / name).write_text(json.dumps(data))


def test_what_the_report_reads_of_rays_experiment_state(tmp_path):
    write_state(tmp_path, [ray_trial("a1", "000-simpo-s3-a1", "TERMINATED"),
                           ray_trial("b2", None, "PENDING"), ray_trial("c3", "002-simpo-s3-c3", "ERROR", 2)])  # fmt: skip
    state = experiment_state(tmp_path)
    assert state == {
        "000-simpo-s3-a1": {"status": "TERMINATED", "num_failures": 0, "config": {"seed": 3, "method": "simpo"}},
        "b2": {"status": "PENDING", "num_failures": 0, "config": {"seed": 3, "method": "simpo"}},  # no folder yet
        "002-simpo-s3-c3": {"status": "ERROR", "num_failures": 2, "config": {"seed": 3, "method": "simpo"}},
    }
    assert is_sweep_dir(tmp_path)  # pending trials only: a sweep all the same


def test_the_state_file_name_is_rays():
    assert re.fullmatch(RAY_STATE.replace("*", ".*"), TuneController.CKPT_FILE_TMPL.format("2026-01-01_00-00-00"))


def test_only_experiment_state_reads_rays_files():
    readers = []
    for path in sorted(p for folder in ("analysis", "ablate/readout") for p in (REPO / folder).rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"trial_data|experiment_state-|RAY_STATE", line):
                readers.append(f"{path.relative_to(REPO)}:{number}")
    load = (REPO / LOADER).read_text(encoding="utf-8")
    body = load[load.index("def experiment_state("):]
    body = body[: body.index("\ndef ", 1)]
    inside = {f"{LOADER}:{load[: load.index(body)].count(chr(10)) + 1 + i}"
              for i, line in enumerate(body.splitlines()) if re.search(r"trial_data|experiment_state-|RAY_STATE", line)}  # fmt: skip
    others = [r for r in readers if r not in inside and not r.startswith(f"{LOADER}:")]
    # fetch copies the files (by RAY_STATE) for a report of a sweep behind a URI; it does not read them.
    assert others == [r for r in others if r.startswith("ablate/readout/fetch.py:")], others
    outside_fn = [r for r in readers if r.startswith(f"{LOADER}:") and r not in inside]
    assert all(_is_doc_or_constant(load, r) for r in outside_fn), outside_fn


def _is_doc_or_constant(text: str, where: str) -> bool:
    line = text.splitlines()[int(where.rsplit(":", 1)[1]) - 1]
    return line.startswith("RAY_STATE =") or "``experiment_state-*.json``" in line
