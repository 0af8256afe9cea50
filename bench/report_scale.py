"""``python -m bench.report_scale [--sizes 100,1000,10000] [--prompts 128] [--src results/gamma]``: how
``python -m analysis.report`` grows with the sweep.

It builds N trial directories from a real sweep's finished trials (``make demo``'s gamma sweep by
default): each copy keeps its source's config with the seed renumbered, its result records and its
held-out file, whose judged generations are widened to ``--prompts`` prompts (prompt j reuses real
prompt j mod 128) and resampled per copy (each prompt's answer and judgment from the source trial, or
with probability 0.3 from another real trial on the same prompt), so that the copies differ as seeds do
and the final record's win rate is recomputed from them. Then it runs the report on each size in a fresh
process, printing wall time, CPU time, the peak resident memory of the report's process tree and the
fitted growth exponents (slope of log cost on log N). Built sweeps are kept under ``--work`` and reused.

Goals (issue 29): 10,000 trials × 128 prompts in ≤ 5 min and ≤ 4 GB; 1,000 × 805 in ≤ 2 min; exponent
≤ 1.1."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

DEFAULT_SRC = "results/gamma"
GEN_KEYS = ("length", "prompt", "text", "baseline_length", "baseline_chars", "oracle_reward", "sft_oracle_reward")
DONOR_SHARE = 0.3  # a copy's prompts answered as another real trial answered them


def _real_trials(src: Path) -> list[dict]:
    trials = []
    for d in sorted(p for p in src.iterdir() if (p / "params.json").is_file() and (p / "heldout.json").is_file()):
        lines = (d / "result.json").read_text().splitlines()
        if not lines or '"status": "finished"' not in lines[-1]:
            continue
        trials.append({
            "dir": d, "params": json.loads((d / "params.json").read_text()), "head": lines[:-1],
            "final": json.loads(lines[-1]), "heldout": json.loads((d / "heldout.json").read_text()),
        })  # fmt: skip
    if not trials:
        raise SystemExit(f"error: no finished trial with a heldout.json under {src}; run `make demo` first.")
    return trials


def _widened(trials: list[dict], k: int, copy: int, prompts: int, rng: np.random.Generator) -> dict:
    """Trial k's held-out record over ``prompts`` prompts, resampled for this copy (see the module doc)."""
    gen0 = trials[k]["heldout"]["generations"]
    real = len(gen0["text"])
    source = np.arange(prompts) % real
    donor = np.where(rng.random(prompts) < DONOR_SHARE, rng.integers(0, len(trials), prompts), k)
    if copy == 0:
        donor[:real] = k  # the first copy of each trial is the real trial on its real prompts
    gens = [t["heldout"]["generations"] for t in trials]
    gen = dict(gen0)
    for key in GEN_KEYS:
        if key in gen0:
            gen[key] = [gens[d][key][s] for d, s in zip(donor, source, strict=True)]
    gen["prompt"] = [f"{p} #{j // real}" if j >= real else p for j, p in enumerate(gen["prompt"])]
    gen["judges"] = {
        judge: {part: [gens[d]["judges"][judge][part][s] for d, s in zip(donor, source, strict=True)]
                for part in ("scores", "baseline_scores")}
        for judge in gen0["judges"]
    }  # fmt: skip
    return {**trials[k]["heldout"], "generations": gen}


def build_sweep(src: Path, dst: Path, n: int, prompts: int) -> Path:
    """``dst`` holding ``n`` trial directories made from ``src``'s real trials (kept if already built)."""
    marker = dst / ".built"
    if marker.is_file() and marker.read_text() == f"{n} {prompts} {src.resolve()}":
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    trials = _real_trials(src)
    seeds = 1 + max(int(t["params"]["trial"]["seed"]) for t in trials)
    rng = np.random.default_rng(0)
    for i in range(n):
        k, copy = i % len(trials), i // len(trials)
        t = trials[k]
        cfg = json.loads(json.dumps(t["params"]))
        cfg["trial"]["seed"] = int(cfg["trial"]["seed"]) + copy * seeds
        d = dst / f"{i:05d}-{t['dir'].name}"
        d.mkdir()
        (d / "params.json").write_text(json.dumps(cfg))
        heldout = _widened(trials, k, copy, prompts, rng)
        oracle = heldout["generations"]["judges"].get("builtin:oracle")
        final = dict(t["final"])
        if oracle:
            a, b = np.asarray(oracle["scores"], float), np.asarray(oracle["baseline_scores"], float)
            final["oracle_win_rate"] = float(np.mean(np.where(a > b, 1.0, np.where(a < b, 0.0, 0.5))))
        (d / "heldout.json").write_text(json.dumps(heldout))
        (d / "result.json").write_text("\n".join([*t["head"], json.dumps(final)]) + "\n")
        for name in ("progress.csv", "final.json"):
            if (t["dir"] / name).is_file():
                shutil.copyfile(t["dir"] / name, d / name)
    marker.write_text(f"{n} {prompts} {src.resolve()}")
    return dst


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
    except psutil.Error:
        return 0


def run_report(sweep: Path, out: Path, extra: list[str] | None = None) -> dict:
    """Wall, CPU (children) and peak tree RSS of one ``python -m analysis.report`` in a fresh process."""
    cmd = [sys.executable, "-m", "analysis.report", str(sweep), "--out", str(out), *(extra or [])]
    cpu0 = os.times()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def watch() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - t0
    watcher.join()
    cpu1 = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"error: the report failed on {sweep} (exit {proc.returncode}):\n{output[-3000:]}")
    cpu = (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system)
    html = out / sweep.name / "report.html"
    return {"wall_s": wall, "cpu_s": cpu, "peak_gb": peak[0] / 1e9, "html_mb": html.stat().st_size / 1e6}


def exponent(sizes: list[int], values: list[float]) -> float:
    """Slope of log(value) on log(size): 1 is linear growth."""
    if len(sizes) < 2:
        return math.nan
    return float(np.polyfit(np.log(sizes), np.log(np.maximum(values, 1e-9)), 1)[0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100,1000,10000", help="comma-separated trial counts")
    p.add_argument("--prompts", type=int, default=128, help="prompts per trial (AlpacaEval: 805)")
    p.add_argument("--src", default=DEFAULT_SRC, help="a real sweep whose finished trials are copied")
    p.add_argument("--work", default=".cache/bench_report_scale", help="where the built sweeps and reports go")
    p.add_argument("--quick", action="store_true", help="sizes 32,128: a smoke run")
    args = p.parse_args(argv)
    sizes = [32, 128] if args.quick else [int(s) for s in args.sizes.split(",")]
    work = Path(args.work)
    rows = []
    print(f"{'trials':>7} {'prompts':>7} {'build s':>8} {'wall s':>8} {'cpu s':>8} {'peak GB':>8} {'html MB':>8}")
    for n in sizes:
        t0 = time.perf_counter()
        sweep = build_sweep(Path(args.src), work / f"n{n}-p{args.prompts}" / "scale", n, args.prompts)
        built = time.perf_counter() - t0
        r = run_report(sweep, work / f"n{n}-p{args.prompts}" / "reports")
        rows.append(r)
        print(f"{n:>7} {args.prompts:>7} {built:>8.1f} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} "
              f"{r['peak_gb']:>8.2f} {r['html_mb']:>8.2f}", flush=True)  # fmt: skip
    for key, label in (("wall_s", "wall"), ("cpu_s", "CPU"), ("peak_gb", "peak memory")):
        print(f"growth exponent in trials, {label}: {exponent(sizes, [r[key] for r in rows]):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
