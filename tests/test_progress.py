"""Progress of the long steps before and between trials (ablate/progress.py): plain lines with an
estimate of the time left when stdout is not a terminal, a rich bar when it is, and the real steps
that use it (SFT training, baseline generations, tokenizing, precomputing reference log-probs)."""

from __future__ import annotations

import io
import re

from rich.console import Console

from ablate import progress
from ablate.trial import startpoint, worker_cache
from ablate.trial.runner import run_trial
from tests.conftest import make_trial

LINE = re.compile(
    r"^(?P<what>.+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+) \(\d+%\), \d\d:\d\d elapsed, about \d\d:\d\d left$"
)


class Clock:
    """A clock the test advances itself: the lines' timing is exact, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_every_ten_seconds_with_the_time_left():
    clock, lines = Clock(), []
    shown = progress.Progress(
        "tokenizing the training pairs", 100, "pairs", log=lines.append, clock=clock, tty=False
    )
    for _ in range(10):
        clock.now += 3.0  # a chunk of 10 pairs every 3 s: a line at 12 s and 24 s
        shown.advance(10)
    shown.close()
    assert lines == [
        "tokenizing the training pairs: 40/100 pairs (40%), 00:12 elapsed, about 00:18 left",
        "tokenizing the training pairs: 80/100 pairs (80%), 00:24 elapsed, about 00:06 left",
        "tokenizing the training pairs: done, 100 pairs in 00:30",
    ]


def test_a_step_shorter_than_the_interval_prints_nothing():
    clock, lines = Clock(), []
    with progress.Progress("precomputing", 8, "pairs", log=lines.append, clock=clock, tty=False) as shown:
        for _ in range(8):
            clock.now += 1.0
            shown.advance()
    assert lines == []


def test_the_bar_on_a_terminal_shows_what_runs_and_how_far(monkeypatch):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    monkeypatch.setattr("rich.progress.get_console", lambda: console)
    with progress.Progress("training the SFT start point", 20, "steps", tty=True) as shown:
        for _ in range(20):
            shown.advance()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "training the SFT start point" in text and "20/20 steps" in text and "left" in text


def test_loops_are_silent_outside_a_named_step_and_shown_inside_one(monkeypatch, capsys):
    monkeypatch.setattr(progress, "EVERY_S", 0.0)  # a line at every advance
    assert isinstance(progress.loop(10), progress._Silent)
    with progress.label("precomputing reference log-probs"):
        shown = progress.loop(10, "pairs")
        shown.advance(4)
        shown.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("precomputing reference log-probs: 4/10 pairs (40%)")


def test_the_long_steps_report_progress(tmp_path, small_spec, start, monkeypatch, capsys):
    """SFT training and its baseline generations (a fresh tiny start point), then a DPO trial with a
    fresh cache: tokenizing its data and precomputing its reference log-probs."""
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    # A fresh worker: earlier tests in this process may hold the tokenized data in memory.
    monkeypatch.setattr(worker_cache, "_tokenized", {})
    data = small_spec.data.model_dump()
    data["task"] = {**data["task"], "n_sft": 64}
    sft = {**small_spec.sft.model_dump(), "epochs": 2, "batch_size": 32}
    startpoint.train_sft(tmp_path / "sft", small_spec.model.model_dump(), data, sft, log=lambda *_: None)
    startpoint.baseline_generations(tmp_path / "sft", data, small_spec.evaluation.model_dump())
    run_trial(make_trial(small_spec, start, "dpo", cache_dir=str(tmp_path / "cache")), lambda _: None)
    lines = capsys.readouterr().out.splitlines()
    seen = {}
    for line in lines:
        if m := LINE.match(line):
            seen.setdefault(m["what"], []).append((int(m["done"]), int(m["total"]), m["unit"]))
    # 64 demonstrations, batches of 32, 2 epochs: 4 steps.
    assert seen["training the SFT start point"][-1] == (4, 4, "steps")
    assert seen["SFT baseline generations on 16 held-out prompts"][-1] == (16, 16, "prompts")
    assert seen["tokenizing the training pairs"][-1] == (128, 128, "pairs")
    assert seen["tokenizing the held-out pairs"][-1] == (32, 32, "pairs")
    assert seen["precomputing reference log-probs of the train split (128 pairs)"][-1] == (128, 128, "pairs")
    assert seen["precomputing reference log-probs of the eval split (32 pairs)"][-1] == (32, 32, "pairs")
    # Held-out evaluation of the trial runs the same loops, outside a named step: no line.
    assert not any(line.startswith("evaluat") for line in lines)
