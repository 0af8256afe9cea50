"""Benchmark 1: ablate's trial trainer against TRL's trainers on the same model, data and settings.

The same tiny Llama (4 layers, hidden 128, in memory, float32), the same 256 synthetic pairs
(``bench/pairs.py``), batch 8, max length 128, one epoch, one thread, CPU. Compared: ablate SimPO
vs TRL ``CPOTrainer(loss_type="simpo", cpo_alpha=0)``; ablate DPO vs TRL ``DPOTrainer`` with an
online reference, and with precomputed reference log-probs on both sides. No evaluation on
either side; both train every pair once and process the same tokens (checked after each run).

Each measurement runs in a fresh process. Figures: end-to-end pairs/s of the process's first
training run (from raw text rows to the end of training: data set construction, tokenization,
reference precomputation and trainer set-up, with whatever they import lazily; the user's top-level
imports and the model's construction come before the clock starts), the same for a second run in
the same, now warm, process, and steady-state pairs/s (median interval between step ends after 3
warm-up steps of the warm run, so batch collation, the step itself and logging all count). Each is
taken by wall-clock and by CPU time. Repetitions interleave ablate and TRL and the medians are
compared, so load from other processes hits both sides alike.

    python -m bench.trainer_vs_trl [--quick] [--reps N]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys

import torch

from bench import pairs
from bench.machine import flops_per_epoch, matmul_gflops, quiet
from bench.timing import StepClock, now, since, steady_step_s

SETTINGS = {
    "n_pairs": 256,
    "batch_size": 8,
    "max_length": 128,
    "max_prompt_length": 64,  # no prompt is cut: prompts have at most 25 tokens with the BOS
    "learning_rate": 1e-4,
    "warmup_ratio": 0.1,
    "max_grad_norm": 1.0,
    "log_every": 10,
    "seed": 0,
    "beta": 2.0,  # SimPO
    "gamma": 1.0,  # SimPO
    "dpo_beta": 0.1,
}
METHODS = {"SimPO": "simpo", "DPO (online ref)": "dpo", "DPO (precomputed ref)": "dpo-precomputed"}


def ablate_side(method: str, rows: list[dict], policy, ref_model, tokenizer, s: dict) -> dict:
    """The trial's own training path (``ablate.trial.runner``): tokenize, precompute the reference if
    asked, build the batches and loss of ``ablate.trial.preference``, run ``ablate.trial.train.train``."""
    from ablate.data import shared_prompt
    from ablate.data import tokens as data_mod
    from ablate.trial import preference
    from ablate.trial.logps import pair_logps
    from ablate.trial.train import AdamWStepper, Hooks, TrainSettings, total_steps, train

    t0 = now()
    tokenized = data_mod.tokenize_pairs(tokenizer, rows, s["max_length"], s["max_prompt_length"])
    pad = tokenizer.pad_token_id
    ref_logps = None
    if method == "dpo-precomputed":
        ref_logps = pair_logps(ref_model, tokenized, 64, pad, "cpu")
    objective, hparams = (
        ("simpo", {"beta": s["beta"], "gamma": s["gamma"]})
        if method == "simpo"
        else ("dpo", {"beta": s["dpo_beta"]})
    )
    loss_fn = preference.loss_function(
        policy, objective, hparams, ref_model if method == "dpo" else None, ref_logps
    )
    share = shared_prompt.usable(policy, tokenized)

    def batches_of(epoch: int) -> list[list[int]]:
        return preference.batch_order(tokenized, s["batch_size"], s["seed"], epoch)

    settings = TrainSettings(
        learning_rate=s["learning_rate"], warmup_ratio=s["warmup_ratio"], max_grad_norm=s["max_grad_norm"],
        log_every=s["log_every"],
    )  # fmt: skip
    collate = preference.collator(tokenized, pad, "cpu", share)
    stepper = AdamWStepper(policy, loss_fn, settings, total_steps(batches_of, settings), collate)
    clock = StepClock()
    result = train(stepper, batches_of, settings, Hooks(after_step=clock.tick))
    e2e = since(t0)
    shapes = [(len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)) for p in tokenized]
    return {
        "shapes": shapes,
        "shared_prompt": share,
        "e2e_s": e2e[0],
        "e2e_cpu_s": e2e[1],
        "step_s": clock.durations(0),
        "step_cpu_s": clock.durations(1),
        "steps": result.steps,
        "tokens": sum(2 * p + c + r for p, c, r in shapes),  # as the usual layout counts them
    }


def trl_side(method: str, rows: list[dict], policy, ref_model, tokenizer, s: dict) -> dict:
    from bench.trl_side import run_trl

    return run_trl(method, rows, policy, ref_model, tokenizer, s)


SIDES = {"ablate": ablate_side, "TRL": trl_side}


def one_process(side: str, method: str, n_pairs: int) -> dict:
    """What one fresh process measures: a cold run (the first training in the process, as a user's
    script does it) and then the same run again, warm (as in a reused sweep worker)."""
    torch.set_num_threads(1)
    quiet()
    s = {**SETTINGS, "n_pairs": n_pairs}
    if side == "TRL":  # the user's imports, before the clock starts
        import datasets  # noqa: F401
        import trl  # noqa: F401
        import trl.experimental.cpo  # noqa: F401
    else:
        import ablate.trial.evaluate  # noqa: F401
        import ablate.trial.preference  # noqa: F401
    tokenizer = pairs.build_tokenizer()
    base = pairs.build_model(tokenizer)
    rows = pairs.make_pairs(n_pairs, seed=s["seed"])
    out = {}
    for when in ("cold", "warm"):
        policy, ref = copy.deepcopy(base), copy.deepcopy(base).eval().requires_grad_(False)
        out[when] = SIDES[side](method, rows, policy, ref, tokenizer, s)
    if side == "ablate":  # the arithmetic of the bound, and the arithmetic ablate does
        shapes, shared = out["cold"]["shapes"], out["cold"]["shared_prompt"]
        out["flops"] = flops_per_epoch(base.config, shapes, method)
        out["flops_done"] = flops_per_epoch(base.config, shapes, method, shared)
    return out


def _spawn(side: str, method: str, n_pairs: int) -> dict:
    cmd = [sys.executable, "-m", "bench.trainer_vs_trl", "--one", side, method, "--pairs", str(n_pairs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT) :])


RESULT = "RESULT "


def _medians(outs: list[dict], n: int, batch: int) -> dict:
    fig = {"steps": outs[0]["cold"]["steps"], "tokens": outs[0]["cold"]["tokens"]}
    for suffix in ("", "_cpu"):
        fig["e2e_pairs_s" + suffix] = n / statistics.median(o["cold"]["e2e" + suffix + "_s"] for o in outs)
        fig["warm_e2e_pairs_s" + suffix] = n / statistics.median(
            o["warm"]["e2e" + suffix + "_s"] for o in outs
        )
        step = statistics.median(steady_step_s(o["warm"]["step" + suffix + "_s"]) for o in outs)
        fig["steady_pairs_s" + suffix] = batch / step
    return fig


def run(quick: bool = False, reps: int | None = None, log=print) -> dict:
    """Every measurement in its own fresh process; repetitions interleave the sides and methods."""
    n = 48 if quick else SETTINGS["n_pairs"]
    reps = reps or (1 if quick else 3)
    load_before = os.getloadavg()[0]
    runs: dict[tuple[str, str], list[dict]] = {}
    for rep in range(reps):
        for name, method in METHODS.items():
            for side in list(SIDES) if rep % 2 == 0 else list(reversed(SIDES)):
                runs.setdefault((name, side), []).append(_spawn(side, method, n))
    load_after = os.getloadavg()[0]
    torch.set_num_threads(1)
    gflops = matmul_gflops()

    table = {}
    for name in METHODS:
        row = {side: _medians(runs[(name, side)], n, SETTINGS["batch_size"]) for side in SIDES}
        done = {
            (o[w]["steps"], o[w]["tokens"])
            for side in SIDES
            for o in runs[(name, side)]
            for w in ("cold", "warm")
        }
        if len(done) != 1:
            raise AssertionError(f"{name}: the two sides did not train the same steps and tokens: {done}")
        for key in list(row["ablate"]):
            if key.endswith(("pairs_s", "pairs_s_cpu")):
                row[key.replace("pairs_s", "ratio")] = row["ablate"][key] / row["TRL"][key]
        flops = runs[(name, "ablate")][0]["flops"]
        row["gflop_per_epoch"] = flops / 1e9
        row["gflop_done"] = runs[(name, "ablate")][0]["flops_done"] / 1e9
        row["ablate_gflops_cpu"] = row["gflop_done"] * row["ablate"]["steady_pairs_s_cpu"] / n
        for i, suffix in enumerate(("", "_cpu")):
            row["bound_pairs_s" + suffix] = n / (flops / (gflops[i] * 1e9))
            row["bound_fraction" + suffix] = (
                row["ablate"]["steady_pairs_s" + suffix] / row["bound_pairs_s" + suffix]
            )
        table[name] = row

    log(
        f"Benchmark 1: ablate vs TRL, {n} pairs, batch {SETTINGS['batch_size']}, one epoch, 1 thread, float32 CPU; "
        f"median of {reps} fresh process(es) per cell, interleaved; load average {load_before:.1f} -> "
        f"{load_after:.1f} on {os.cpu_count()} cores"
    )
    log(
        f"  one-thread float32 matmul (best of several 1024^3 products): {gflops[0]:.0f} GFLOP/s by wall-clock, "
        f"{gflops[1]:.0f} GFLOP/s by CPU time"
    )
    for suffix, title in (
        ("", "wall-clock"),
        ("_cpu", "CPU time (insensitive to the load of other processes)"),
    ):
        log(f"  pairs/s by {title}:")
        log(f"  {'':<22}{'end-to-end (cold)':>27}{'steady state':>27}{'e2e (warm process)':>27}{'bound':>7}")
        log(f"  {'':<22}" + f"{'ablate':>9}{'TRL':>9}{'ratio':>9}" * 3 + f"{'frac':>7}")
        for name, r in table.items():
            a, t = r["ablate"], r["TRL"]
            cells = ""
            for fig in ("e2e", "steady", "warm_e2e"):
                k = f"{fig}_pairs_s{suffix}"
                cells += f"{a[k]:>9.1f}{t[k]:>9.1f}{r[f'{fig}_ratio{suffix}']:>8.2f}x"
            log(f"  {name:<22}{cells}{r['bound_fraction' + suffix]:>7.0%}")
    log(
        "  bound = one epoch's model arithmetic (no padding, LM head on every token: "
        + ", ".join(f"{k} {v['gflop_per_epoch']:.0f} GFLOP" for k, v in table.items())
        + ") at the matmul rate above: "
        + ", ".join(f"{v['bound_pairs_s_cpu']:.0f}" for v in table.values())
        + " pairs/s by CPU time; frac = ablate's steady state / bound"
    )
    log(
        "  ablate computes each prompt once (ablate/data/shared_prompt.py): "
        + ", ".join(f"{k} {v['gflop_done']:.0f} GFLOP" for k, v in table.items())
        + " per epoch, so its steady state does "
        + ", ".join(f"{v['ablate_gflops_cpu']:.0f}" for v in table.values())
        + f" GFLOP/s of model arithmetic (CPU time), {min(v['ablate_gflops_cpu'] for v in table.values()) / gflops[1]:.0%}"
        f"-{max(v['ablate_gflops_cpu'] for v in table.values()) / gflops[1]:.0%} of the matmul rate"
    )
    return {"pairs": n, "reps": reps, "matmul_gflops": gflops, "table": table}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.trainer_vs_trl", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="48 pairs, one repetition (a smoke run)")
    p.add_argument("--reps", type=int, help="interleaved repetitions (default 3)")
    p.add_argument("--one", nargs=2, metavar=("SIDE", "METHOD"), help=argparse.SUPPRESS)
    p.add_argument("--pairs", type=int, default=SETTINGS["n_pairs"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(RESULT + json.dumps(one_process(*args.one, args.pairs)), flush=True)
        return 0
    run(args.quick, args.reps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
