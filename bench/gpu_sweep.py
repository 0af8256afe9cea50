"""Ray on a GPU (``bench/on_gpu.sh``): benchmark 2's GPU-scale model and data (``bench/gpu_scale.py``)
as a Ray Tune sweep file, one Ray Train + DeepSpeed ZeRO-3 trial on one GPU, and the trials' model
FLOPs utilisation.

    python -m bench.gpu_sweep build --out DIR [--quick] [--cpu]   model dir, .jsonl, sweep.yaml, zero3.yaml, flops.json
    python -m ablate.run DIR/sweep.yaml                           SimPO and DPO, 2 seeds each, one GPU per trial
    python -m ablate.run DIR/zero3.yaml                           one SimPO trial: 1 Ray Train worker, ZeRO-3
    python -m bench.gpu_sweep mfu DIR [--json FILE]               each trial's final metrics and MFU

``--cpu`` (with ``--quick``) builds sweeps that run on this machine's CPUs: a smoke run of the
whole path without a GPU. The ZeRO-3 trial has one worker because the machine has one GPU: a
``deepspeed`` section makes it a DeepSpeed trial (Ray Train, NCCL, DeepSpeed's bf16 mode) even so.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
from pathlib import Path
from typing import Any

import yaml

from ablate import records
from ablate.data import sources as datasource
from bench import gpu_scale

SWEEP = "gpu-simpo-dpo"
ZERO3 = "gpu-zero3"
H200_BF16_PEAK = 790e12  # dense bf16 FLOP/s: an 8192^3 matrix product measured 769-798 TFLOP/s there
METHODS = [
    {"method": "simpo", "hparams": {"beta": 2.0, "gamma": 1.0}},
    # An online reference: its forward pass costs the same on every step and every trial, so its
    # FLOPs are counted simply (a precomputed one is computed by the first DPO trial only).
    {"method": "dpo", "reference": "online", "hparams": {"beta": 0.1}},
]


def build(out: Path, quick: bool, cpu: bool = False) -> Path:
    """Model dir, data file, ``sweep.yaml`` and ``flops.json`` under ``out``; returns the sweep file."""
    out = out.resolve()
    sweep = gpu_scale.sweep(out, quick, METHODS)
    sweep["name"] = SWEEP
    sweep["storage"] = str(out / "results")
    sweep["seeds"] = [0, 1]
    sweep["model"]["dtype"] = "float32" if cpu else "bfloat16"
    # No mid-trial checkpoints: one of a ~1B model with its AdamW state is ~11 GB to write and copy.
    sweep["training"]["checkpoint_every"] = 0
    # One GPU per trial, so trials run one after another on the one GPU (max_concurrent says so too).
    sweep["resources"] = {"cpus": 1} if cpu else {"cpus": 4, "gpus": 1}
    sweep["max_concurrent"] = 1
    path = out / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    zero3 = {**sweep, "name": ZERO3, "methods": METHODS[:1], "seeds": [0], "deepspeed": {"stage": 3},
             "resources": {"workers": 1, "cpus_per_worker": sweep["resources"]["cpus"],
                           "gpus_per_worker": sweep["resources"].get("gpus", 0)}}  # fmt: skip
    (out / "zero3.yaml").write_text(yaml.safe_dump(zero3, sort_keys=False))
    (out / "flops.json").write_text(json.dumps(flop_terms(sweep), indent=1))
    return path


def flop_terms(sweep: dict) -> dict[str, Any]:
    """What a trial's model FLOPs per training token are made of, from the model's config and the
    training pairs' token counts (``mfu`` multiplies them by the trials' tokens/s).

    ``params``: the parameters that multiply every token, i.e. all trainable ones less the input
    embedding (a table lookup). Attention's score and value products add 12·L·d·c per token for a
    forward and backward pass (4·L·d·c forward), c being the number of positions a token attends to
    (itself included); ``context_*`` are c averaged over the tokens a trial computes, for the two
    layouts: one row per pair (``ablate.data.shared_prompt``: the prompt once), which trials use, and two
    rows (prompt + chosen, prompt + rejected), which models without 4-D masks fall back to."""
    from transformers import AutoConfig

    from ablate import models
    from ablate import spec as spec_mod
    from ablate.data import tokens as data_mod

    path = sweep["model"]["name_or_path"]
    config = AutoConfig.from_pretrained(path)
    d, layers, ffn, vocab = (
        config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    )  # fmt: skip
    kv = d // config.num_attention_heads * config.num_key_value_heads
    per_layer = d * (2 * d + 2 * kv) + 3 * d * ffn + 2 * d  # q, o, k, v; gate, up, down; two norms
    params = layers * per_layer + d + (0 if config.tie_word_embeddings else vocab * d)  # + norm, LM head
    spec = spec_mod.SweepSpec.model_validate(sweep)
    train, _ = datasource.load_splits(spec.data.model_dump())
    tokenizer = models.load_tokenizer(path)
    pairs = data_mod.tokenize_pairs(tokenizer, train, spec.data.max_length, spec.data.max_prompt_length)
    shared = two_rows = tokens_shared = tokens_two = 0
    for p in pairs:
        n_p, n_c, n_r = len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)
        shared += tri(n_p) + n_c * n_p + tri(n_c) + n_r * n_p + tri(n_r)
        tokens_shared += n_p + n_c + n_r
        two_rows += tri(n_p + n_c) + tri(n_p + n_r)
        tokens_two += 2 * n_p + n_c + n_r
    return {
        "params": params,
        "layers": layers,
        "hidden_size": d,
        "context_one_row": shared / tokens_shared,
        "context_two_rows": two_rows / tokens_two,
        "train_pairs": len(pairs),
    }


def tri(n: int) -> int:
    """Positions attended to by the n tokens of a causal sequence: 1 + 2 + ... + n."""
    return n * (n + 1) // 2


def flops_per_token(terms: dict, online_reference: bool) -> tuple[float, float]:
    """(6N, all model FLOPs) per training token: policy forward and backward with attention, plus an
    online reference's forward pass. Both backends compute a pair as one row (the prompt once)."""
    n, ld = terms["params"], terms["layers"] * terms["hidden_size"]
    c = terms["context_one_row"]
    full = 6 * n + 12 * ld * c
    if online_reference:
        full += 2 * n + 4 * ld * c
    return 6 * n, full


def trial_rows(out: Path) -> list[dict]:
    """Every finished trial under ``out/results``: its config's label, method, seed, workers and final metrics."""
    rows = []
    for final in sorted(glob.glob(str(out / "results" / "*" / "*" / "final.json"))):
        trial_dir = Path(final).parent
        cfg = records.read_trial_config(trial_dir)
        rows.append({
            "sweep": trial_dir.parent.name,
            "label": cfg["label"],
            "seed": cfg["seed"],
            "online_reference": cfg.get("reference") == "online",
            "workers": cfg["resources"].get("workers", 1),
            "zero3": bool(cfg.get("deepspeed")),
            "final": json.loads(Path(final).read_text()),
        })  # fmt: skip
    return rows


def mfu(out: Path, peak: float = H200_BF16_PEAK) -> list[dict]:
    """Each trial's achieved model FLOP/s over ``peak`` during its training (``runtime_s``, from the
    first step's data to the last step, tokens without padding)."""
    terms = json.loads((out / "flops.json").read_text())
    rows = trial_rows(out)
    print(
        f"Model FLOPs utilisation of the training steps (N = {terms['params'] / 1e9:.3f}B parameters per "
        f"token, {terms['layers']} layers x {terms['hidden_size']}; peak {peak / 1e12:.0f} TFLOP/s bf16):"
    )
    print(
        f"  {'trial':<30}{'steps':>6}{'train s':>9}{'tokens/s':>10}{'MFU 6N':>8}{'MFU all':>9}{'peak GB':>9}"
    )
    for r in rows:
        f = r["final"]
        six_n, full = flops_per_token(terms, r["online_reference"])
        tps = f.get("tokens_per_s") or 0.0
        r["mfu_6n"], r["mfu_all"] = tps * six_n / peak, tps * full / peak
        r["flops_per_token"] = {"6N": six_n, "all": full}
        name = f"{r['label']} s{r['seed']}" + (f" ({r['workers']} worker)" if r["zero3"] else "")
        print(
            f"  {name:<30}{f.get('steps', 0):>6}{f.get('runtime_s', 0):>9.1f}{tps:>10,.0f}"
            f"{r['mfu_6n']:>8.1%}{r['mfu_all']:>9.1%}{f.get('peak_memory_mb', 0) / 1024:>9.1f}"
        )
    if rows:
        print(f"  median MFU (6N): {statistics.median(r['mfu_6n'] for r in rows):.1%}")
    print(
        "  MFU 6N: 6 x N x tokens/s; MFU all: adds attention (12·L·d·c per token, c the mean attended "
        "positions) and an online reference's forward pass (2N + 4·L·d·c). Training time (runtime_s) "
        "includes loading the online reference, and for the ZeRO-3 trial loading the policy and "
        "DeepSpeed's set-up: lower bounds on the steps' own rates."
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_sweep", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="model dir, data file, sweep.yaml and flops.json")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--quick", action="store_true", help="a small model and short pairs (a smoke run)")
    b.add_argument("--cpu", action="store_true", help="trials on CPUs (float32), for a run without a GPU")
    m = sub.add_parser("mfu", help="each finished trial's final metrics and model FLOPs utilisation")
    m.add_argument("dir", type=Path)
    m.add_argument("--json", type=Path, help="write the trials' final metrics and MFU here")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.cmd == "build":
        path = build(args.out, args.quick, args.cpu)
        terms = json.loads((path.parent / "flops.json").read_text())
        print(f"{path}: {gpu_scale.describe(args.quick)}; N = {terms['params'] / 1e9:.3f}B, mean attended "
              f"positions {terms['context_one_row']:.0f} (one row per pair) / {terms['context_two_rows']:.0f} (two)")  # fmt: skip
        return 0
    rows = mfu(args.dir.resolve())
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
