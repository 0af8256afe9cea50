"""Benchmark 8: ablate's batched generation (``ablate.trial.evaluate.generate``: length-sorted, left-padded
batches with the KV cache; what the on-policy build and evaluation run) against one prompt at a time
through ``model.generate``, on the same model (the built-in SFT start point of ``sweeps/on_policy.yaml``),
the same prompts and the same sampling settings (temperature 0.8, top_p 0.95, 32 new tokens), in one
process, interleaved; tokens/s of each and their ratio (goal: >= 3x on 2 CPU cores). Then the on-policy
build's size in that sweep, its time at the measured rate (plus the judge's), and, given a finished run
of the sweep (``--sweep results/on_policy``), the build's recorded time against the trials' time.

8b: evaluation's generations under ZeRO-3 on 2 CPU worker processes (gloo, real DeepSpeed), both ways
side by side: from a plain copy gathered once (``gathered``) and from the sharded model in lockstep
(``synced``, ``generate(synced_gpus=True)``); tokens/s of each, their ratio, whether the answers agree
(greedy), and from the measured per-step cost of ``synced`` an estimate of the paper's evaluation
(805 prompts, up to 4,096 new tokens, Llama-3-8B on 8 GPUs; assumptions at ``PAPER``).

    python -m bench.generation [--quick] [--prompts N] [--sweep DIR] [--zero3-only]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
from pathlib import Path

import torch
import yaml

from ablate import records
from bench.timing import now, since

REPO = Path(__file__).resolve().parents[1]


def setup(quick: bool):
    from ablate import spec as spec_mod
    from ablate.onpolicy import build as onpolicy
    from ablate.trial import startpoint

    sweep = yaml.safe_load((REPO / "sweeps" / "on_policy.yaml").read_text())
    if quick:
        sweep["data"]["task"] = {**sweep["data"]["task"], "n_train": 256, "n_eval": 64, "n_sft": 1000}
        sweep["sft"] = {"epochs": 2}
    spec = spec_mod.SweepSpec.model_validate(sweep)
    start = startpoint.prepare_sweep(spec, log=lambda *_: None)
    trial = next(t for t in spec_mod.expand(spec) if t["data"].get("on_policy"))
    job = onpolicy.Job.of_trial({**trial, "start": start})
    return job, onpolicy.Sampler(job, log=lambda *_: None), onpolicy.prompts_of(job)


def one_at_a_time(sampler, ids: list[list[int]], new_tokens: int, g) -> int:
    """Plain ``model.generate`` on each prompt alone (no padding, KV cache on, as its default); tokens made."""
    eos, made = sampler.tokenizer.eos_token_id, 0
    for p in ids:
        out = sampler.model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                     max_new_tokens=new_tokens, do_sample=True, temperature=g.temperature,
                                     top_p=g.top_p, top_k=0, pad_token_id=sampler.tokenizer.pad_token_id)  # fmt: skip
        row = out[0, len(p) :].tolist()
        made += next((k for k, t in enumerate(row) if t == eos), len(row))
    return made


def measure(sampler, prompts: list, reps: int) -> dict:
    from ablate.trial.evaluate import generate

    job = sampler.job
    g, new_tokens = job.cfg.generation, job.new_tokens
    ids = sampler.prompt_ids(prompts)
    sampling = {"temperature": g.temperature, "top_p": g.top_p}
    rates: dict[str, list[float]] = {"batched": [], "one at a time": [], "batched cpu": [], "one at a time cpu": []}
    texts: list[str] = []
    for rep in range(reps):
        torch.manual_seed(rep)
        t = now()
        texts, counts = generate(sampler.model, sampler.tokenizer, ids, new_tokens, job.cfg.batch_size, "cpu", sampling)
        wall, cpu = since(t)
        rates["batched"].append(sum(counts) / wall)
        rates["batched cpu"].append(sum(counts) / cpu)
        torch.manual_seed(rep)
        t = now()
        made = one_at_a_time(sampler, ids, new_tokens, g)
        wall, cpu = since(t)
        rates["one at a time"].append(made / wall)
        rates["one at a time cpu"].append(made / cpu)
    t = now()
    from ablate.judging.generations import prompt_text

    sampler.judge.score([prompt_text(p) for p in prompts], texts)
    judge_s_per_answer = since(t)[0] / len(prompts)
    return {k: sorted(v)[len(v) // 2] for k, v in rates.items()} | {"judge_s_per_answer": judge_s_per_answer,
                                                                    "mean_tokens": sum(counts) / len(counts)}  # fmt: skip


def sweep_share(sweep_dir: Path) -> str:
    """The recorded build time of a finished run against its trials' summed wall time (``trial_s``)."""
    build, trial_s = None, 0.0
    for params in sweep_dir.glob("*/params.json"):
        split = records.trial_config(json.loads(params.read_text())).get("data_split") or {}
        build = (split.get("on_policy") or {}).get("build_seconds", build)
        results = [json.loads(line) for line in (params.parent / "result.json").read_text().splitlines() if line.strip()]
        trial_s += next((r.get("trial_s", 0.0) for r in reversed(results) if "status" in r), 0.0)
    if build is None:
        return f"  {sweep_dir}: no recorded on-policy build"
    return (f"  {sweep_dir}: build {build:.0f} s, trials {trial_s:.0f} s (summed): the build is "
            f"{build / (build + trial_s):.0%} of the sweep's compute")  # fmt: skip


def run(quick: bool = False, n_prompts: int = 128, sweep: str | None = None, zero3: bool = True) -> dict:
    print("Benchmark 8: batched generation vs one prompt at a time (sweeps/on_policy.yaml's start point)", flush=True)
    job, sampler, prompts = setup(quick)
    n = min(32 if quick else n_prompts, len(prompts))
    r = measure(sampler, prompts[:n], 1 if quick else 3)
    ratio, cpu_ratio = r["batched"] / r["one at a time"], r["batched cpu"] / r["one at a time cpu"]
    print(f"  {n} prompts, {job.new_tokens} new tokens, batch {job.cfg.batch_size}, {torch.get_num_threads()} threads: "
          f"batched {r['batched']:.0f} tokens/s, one at a time {r['one at a time']:.0f} tokens/s: "
          f"{ratio:.1f}x (goal >= 3x); per CPU second: {cpu_ratio:.1f}x")  # fmt: skip
    answers = len(prompts) * job.cfg.samples
    gen_s = answers * r["mean_tokens"] / r["batched"]
    judge_s = answers * r["judge_s_per_answer"]
    print(f"  the sweep's build: {len(prompts)} prompts x {job.cfg.samples} samples = {answers} answers of "
          f"{r['mean_tokens']:.1f} tokens on average: about {gen_s:.0f} s generating + {judge_s:.0f} s judging "
          f"(one at a time: {answers * r['mean_tokens'] / r['one at a time']:.0f} s generating)")  # fmt: skip
    if sweep:
        print(sweep_share(Path(sweep)))
    return {**r, "ratio": ratio, **({"zero3": run_zero3(quick)} if zero3 else {})}


# --------------------------------------------------------------------------------------------------
# Evaluation under ZeRO-3: a plain copy gathered once vs the sharded model in lockstep (synced_gpus)
# --------------------------------------------------------------------------------------------------

WAYS = ("synced", "gathered")


def zero3_trial(start: dict, workers: int = 2, lora: dict | None = None, tiny: dict | None = None) -> dict:
    """A multi-worker ZeRO-3 trial's config on the built-in task (CPU, float32), starting from ``start``."""
    from ablate import spec as spec_mod

    sweep = {"name": "zero3-generation", "methods": [{"method": "simpo", **({"lora": lora} if lora else {})}],
             "model": {"tiny": tiny or {}}, "resources": {"workers": workers, "cpus_per_worker": 1},
             "deepspeed": {"stage": 3}}  # fmt: skip
    trial = spec_mod.expand(spec_mod.SweepSpec.model_validate(sweep))[0]
    return {**trial, "start": start}


def zero3_generations(trial: dict, prompts: list[list[int]], new_tokens: int, batch: int, reps: int = 1,
                      lora_noise: float = 0.0) -> dict:  # fmt: skip
    """Run ``trial``'s workers as processes (gloo, DeepSpeed's CPU accelerator, one thread each), load its
    start point as a ZeRO-3 model (the LoRA policy with its adapter's B drawn from N(0, lora_noise), or the
    reference), and generate ``prompts`` greedily both ways, alternating, ``reps`` times. Returns rank 0's
    record: the way ``generation_way`` picks (``auto``; ``auto_no_room`` with no memory to spare), per way the texts, counts, wall and CPU seconds per rep,
    and the seconds of one gather of a plain copy."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="ablate-zero3-gen-") as tmp:
        args = (trial, prompts, new_tokens, batch, reps, lora_noise, port, tmp)
        mp.start_processes(_zero3_worker, args, nprocs=trial["resources"]["workers"], start_method="spawn")
        return json.loads((Path(tmp) / "rank0.json").read_text())


def _zero3_worker(rank: int, trial: dict, prompts, new_tokens, batch, reps, lora_noise, port, tmp) -> None:
    world = trial["resources"]["workers"]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), DS_ACCELERATOR="cpu")  # fmt: skip
    import torch.distributed as dist

    from ablate import models
    from ablate.trial import dsconfig
    from ablate.trial.backends.deepspeed import DeepSpeedWorker, plain_copy
    from ablate.trial.config import parse

    dist.init_process_group("gloo", rank=rank, world_size=world)
    cfg = parse(trial)
    backend = DeepSpeedWorker(cfg, torch.device("cpu"), Path(tmp) / f"out{rank}")
    tokenizer = models.load_tokenizer(cfg.start.path)
    if cfg.lora is not None:
        import deepspeed

        policy = backend.load_policy(cfg)
        torch.manual_seed(0)  # the same adapter on every worker
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p.data, std=lora_noise)
        model = deepspeed.initialize(model=policy, config=dsconfig.reference_config(backend.ds_config))[0].module
    else:
        model = backend.load_reference(cfg)
    from ablate.trial.backends import deepspeed as ds_mod

    tokens = max(map(len, prompts)) + new_tokens
    out: dict = {"auto": backend.generation_way(model, batch, tokens)}
    share, ds_mod.GATHER_SHARE = ds_mod.GATHER_SHARE, 0.0  # no memory to spare: the fallback
    out["auto_no_room"] = backend.generation_way(model, batch, tokens)
    ds_mod.GATHER_SHARE = share
    for rep in range(reps):
        for way in WAYS if rep % 2 == 0 else WAYS[::-1]:
            dist.barrier()
            t = now()
            texts, counts = backend.generate(model, tokenizer, prompts, new_tokens, batch, None, way=way)
            dist.barrier()
            wall, cpu = since(t)
            rec = out.setdefault(way, {"wall": [], "cpu": []})
            rec.update(texts=texts, counts=counts)
            rec["wall"].append(wall)
            rec["cpu"].append(cpu)
    dist.barrier()
    t = now()
    del_me = plain_copy(model, backend.device, backend.lora_setting)
    out["gather_s"] = since(t)[0]
    del del_me
    if rank == 0:
        (Path(tmp) / "rank0.json").write_text(json.dumps(out))
    dist.barrier()
    dist.destroy_process_group()


# The paper's evaluation (sweeps/paper/llama3-8b-base.yaml): AlpacaEval's 805 prompts, up to 4,096 new
# tokens, evaluation batches of 8, on 8 workers (one H100/H200 each) under ZeRO-3, Llama-3-8B in bf16.
PAPER = {"prompts": 805, "new_tokens": 4096, "batch": 8, "workers": 8, "bytes": 2}
# Assumed, not measured here: a decode step of Llama-3-8B at batch 8 through Hugging Face `generate` on one
# such GPU (eager PyTorch, KV cache; the weights' 16 GB read from HBM take ~5 ms of it), and the bandwidth
# at which a worker receives ZeRO-3's parameter all-gathers over NVLink (NCCL all-gather bus bandwidth).
GPU_STEP_S = 0.025
GATHER_GBPS = 200.0


def paper_estimate(overhead_gathers: float) -> dict:
    """The paper's evaluation time both ways, every answer at the full 4,096 tokens (an upper bound: under
    ``synced`` every worker steps until the longest answer of all workers' batches ends). ``synced``: each
    decode step also receives ``overhead_gathers`` full gathers of the model (measured on CPU: ~1, the
    model's layers one after another); ``gathered``: one gather, then plain decode steps."""
    from ablate.sweep.memory_plan import KNOWN_CONFIGS, ModelShape

    P, w = ModelShape.of(KNOWN_CONFIGS["meta-llama/Meta-Llama-3-8B"]).params, PAPER["workers"]
    gather_s = P * PAPER["bytes"] * (w - 1) / w / (GATHER_GBPS * 1e9)
    per_worker = -(-PAPER["prompts"] // w)
    steps = -(-per_worker // PAPER["batch"]) * PAPER["new_tokens"]
    synced = steps * (GPU_STEP_S + overhead_gathers * gather_s)
    gathered = gather_s + steps * GPU_STEP_S
    return {"params": P, "gather_s": gather_s, "steps": steps, "synced_h": synced / 3600,
            "gathered_h": gathered / 3600, "ratio": synced / gathered}  # fmt: skip


def run_zero3(quick: bool = False) -> dict:
    """Evaluation's two ways under ZeRO-3 on 2 CPU workers (a random-weight built-in Llama, greedy, all
    answers at the token budget), side by side in one run; then the paper setting's estimate."""
    from ablate import models

    tiny = {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2} if quick else {
        "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "max_position_embeddings": 256}
    n, new_tokens, batch, reps = (8, 16, 4, 1) if quick else (32, 64, 8, 3)
    print(f"Benchmark 8b: evaluation under ZeRO-3, 2 CPU workers: {n} prompts, {new_tokens} new tokens, batch "
          f"{batch}, built-in Llama {tiny}, one thread per worker", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ablate-bench-") as tmp:
        tokenizer = models.build_builtin_tokenizer()
        models.build_builtin_model(models.TinyModelConfig(**tiny), tokenizer, 0).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        gen = torch.Generator().manual_seed(0)
        prompts = [[2, *torch.randint(4, len(tokenizer), (int(k),), generator=gen).tolist()]
                   for k in torch.randint(8, 25, (n,), generator=gen)]  # fmt: skip
        out = zero3_generations(zero3_trial({"path": tmp, "baseline": None}, 2, tiny=tiny), prompts,
                                new_tokens, batch, reps)  # fmt: skip
    r: dict = {"auto": out["auto"], "same": out["synced"]["texts"] == out["gathered"]["texts"]}
    for way in WAYS:
        tokens = sum(out[way]["counts"])
        r[way] = {k: tokens / sorted(out[way][k])[len(out[way][k]) // 2] for k in ("wall", "cpu")}
        r[way]["wall_s"] = sorted(out[way]["wall"])[reps // 2]
    r["ratio"] = r["gathered"]["wall"] / r["synced"]["wall"]
    steps = -(-n // 2 // batch) * new_tokens  # decode steps per worker, both ways
    r["gather_s"] = out["gather_s"]
    r["overhead_gathers"] = (r["synced"]["wall_s"] - r["gathered"]["wall_s"]) / steps / out["gather_s"]
    print(f"  gathered {r['gathered']['wall']:.0f} tokens/s, synced {r['synced']['wall']:.0f} tokens/s (wall): "
          f"{r['ratio']:.1f}x; per CPU second {r['gathered']['cpu'] / r['synced']['cpu']:.1f}x; same answers: "
          f"{r['same']}; picked: {r['auto']}")  # fmt: skip
    print(f"  one gather of the whole model: {out['gather_s'] * 1e3:.0f} ms; synced's extra time per decode step: "
          f"{r['overhead_gathers']:.2f} whole-model gathers")  # fmt: skip
    e = paper_estimate(max(r["overhead_gathers"], 1.0))
    print(f"  paper setting (estimate; {PAPER}, {GPU_STEP_S * 1e3:.0f} ms per decode step, all-gathers at "
          f"{GATHER_GBPS:.0f} GB/s: {e['gather_s'] * 1e3:.0f} ms per whole-model gather): {e['steps']} decode steps "
          f"per worker; synced {e['synced_h']:.1f} h, gathered {e['gathered_h']:.1f} h ({e['ratio']:.1f}x)")  # fmt: skip
    return {**r, "paper": e}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.generation", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small task and 32 prompts, one repetition")
    p.add_argument("--prompts", type=int, default=128, help="prompts generated each way (default 128)")
    p.add_argument("--sweep", help="a finished run of sweeps/on_policy.yaml: the build's share of its time")
    p.add_argument("--zero3-only", action="store_true", help="only evaluation's two ways under ZeRO-3 (8b)")
    args = p.parse_args(argv)
    if args.zero3_only:
        run_zero3(args.quick)
    else:
        run(args.quick, args.prompts, args.sweep)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
