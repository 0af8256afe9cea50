"""Multi-worker trials: one trial trained by N Ray Train workers with DeepSpeed ZeRO (stage 0, 1, 2 or 3).

Ray Train V2 refuses a ``TorchTrainer`` inside ``tune.Tuner``, so the Tune trial is a small
driver (``run_distributed_trial``) that builds and runs a ``TorchTrainer``; every worker runs
``train_worker``, which trains and evaluates with the same data, losses and metrics as the
single-process path (``ablate.trial``), and rank 0 reports once, at the end: the final metrics,
the training history, and the trained policy as the Ray Train checkpoint.

Data parallelism keeps the single-process trial's batches: each optimizer step sees the same
global micro-batches as a one-worker trial with ``batch_size x workers`` pairs per micro-batch,
split between the workers; every worker's loss is scaled so that the average DeepSpeed takes over
workers equals the mean over the whole micro-batch (also when the last one does not split evenly).
KTO's batch-level reference point is the one exception: it is estimated on each worker's share.

The reference model of DPO-family methods is sharded like the policy under ZeRO-3 (an inference
engine without optimizer) and replicated under stages 0-2; precomputed reference log-probs are
computed that way once, each worker on its share of the pairs, and cached on disk where
single-process trials find them too. SimPO and the other reference-free methods load none.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ablate import data as data_mod
from ablate import dsconfig, models, preference
from ablate.evaluate import (
    PairLogps,
    generate,
    generation_metrics,
    heldout_records,
    pair_logps,
    preference_metrics,
)
from ablate.train import Diverged
from ablate.trial import (
    HELDOUT_FILE,
    Report,
    SaveArtifact,
    peak_memory_mb,
    reference_cache_path,
    reset_peak_memory,
    seed_everything,
    tokenized_splits,
)

DRIVER_CPUS = 0.01  # the Tune trial only waits on the TorchTrainer; its workers reserve their own CPUs/GPUs


def is_distributed(cfg: dict) -> bool:
    return cfg.get("resources", {}).get("workers", 1) > 1


# --------------------------------------------------------------------------------------------------
# The Tune side: one trial = one Ray Train run
# --------------------------------------------------------------------------------------------------


def run_distributed_trial(cfg: dict, report: Report, save_artifact: SaveArtifact | None = None) -> dict:
    """Run one trial on ``resources.workers`` Ray Train workers; report its history and final metrics to Tune.

    ``save_artifact`` receives ``heldout.json`` as from a single-process trial. A retried trial
    starts over (no mid-training checkpoints)."""
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    res = cfg["resources"]
    use_gpu = res["gpus_per_worker"] > 0
    per_worker = {"CPU": res["cpus_per_worker"], **({"GPU": res["gpus_per_worker"]} if use_gpu else {})}
    # The Train run's files (the trained policy included) go inside this trial's directory in storage.
    storage = tune.get_context().get_storage()
    env = {"TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR")
           or str(Path(cfg["cache_dir"]).expanduser() / "torch_extensions")}  # fmt: skip
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"trial": cfg, "env": env},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=res["workers"], use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        run_config=RunConfig(
            name="train",
            storage_path=storage.trial_fs_path,
            storage_filesystem=storage.storage_filesystem,
            failure_config=FailureConfig(max_failures=0),  # retries are Tune's (max_failures in the sweep)
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    result = trainer.fit()
    metrics = dict(result.metrics or {})
    for row in metrics.pop("history", []):
        report(row)
    heldout = metrics.pop("heldout", None)
    if heldout is not None and save_artifact is not None:
        save_artifact(HELDOUT_FILE, json.dumps(heldout).encode())
    if result.checkpoint is not None:
        metrics["checkpoint_path"] = result.checkpoint.path
    report(metrics)
    return metrics


def train_worker(loop_config: dict) -> None:
    """The function every Ray Train worker runs."""
    import ray
    import ray.train
    import ray.train.torch

    for key, value in loop_config["env"].items():
        os.environ.setdefault(key, value)
    device = ray.train.torch.get_device()
    with tempfile.TemporaryDirectory(prefix="ablate-policy-") as tmp:
        metrics, saved = train_and_evaluate(loop_config["trial"], device, Path(tmp))
        metrics["node_id"] = ray.get_runtime_context().get_node_id()
        checkpoint = ray.train.Checkpoint.from_directory(str(saved)) if saved else None
        ray.train.report(metrics, checkpoint=checkpoint)


# --------------------------------------------------------------------------------------------------
# The worker side: DeepSpeed training and sharded evaluation (torch.distributed already set up)
# --------------------------------------------------------------------------------------------------


def shard(n: int, rank: int, world: int) -> slice:
    """This worker's contiguous share of ``n`` items (sizes differ by at most one)."""
    return slice(n * rank // world, n * (rank + 1) // world)


def _all_gather(t: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    import torch.distributed as dist

    t = t.to(device)
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return [o.cpu() for o in out]


def _all_reduce(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t.cpu().tolist()


def sharded_pair_logps(model, pairs: list, batch_size: int, pad_id: int, device) -> PairLogps:
    """``evaluate.pair_logps`` over all ``pairs``, each worker computing an equal share, gathered on every worker.

    Shares are padded to equal length so every worker runs the same number of forward passes,
    which ZeRO-3's collective parameter gathering requires."""
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    per = math.ceil(len(pairs) / world)
    mine = pairs[rank * per : (rank + 1) * per]
    mine = mine + [pairs[-1]] * (per - len(mine))
    out = pair_logps(model, mine, batch_size, pad_id, device)
    stacked = torch.stack([out.chosen, out.rejected, out.chosen_len, out.rejected_len])
    full = torch.cat(_all_gather(stacked, device), dim=1)[:, : len(pairs)]
    return PairLogps(full[0], full[1], full[2], full[3])


def sharded_generate(
    model, tokenizer, prompts: list, max_new_tokens: int, batch_size: int, device, synced: bool
):
    """Greedy generations of all prompts, split between the workers (equal shares), gathered on every worker."""
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    per = math.ceil(len(prompts) / world)
    mine = prompts[rank * per : (rank + 1) * per]
    n_mine = len(mine)
    mine = mine + [prompts[-1]] * (per - n_mine)
    texts, counts = generate(model, tokenizer, mine, max_new_tokens, batch_size, device, synced_gpus=synced)
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (texts[:n_mine], counts[:n_mine]))
    return [t for g in gathered for t in g[0]], [c for g in gathered for c in g[1]]


def load_reference(start: str, dtype, m: dict, device, ds_config: dict):
    """The frozen reference: a ZeRO-3 inference engine when the policy is sharded, else a local copy."""
    ref = models.load_model(start, device, dtype, m["trust_remote_code"], trainable=False)
    if dsconfig.zero_stage(ds_config) < 3:
        return ref
    import deepspeed

    engine, *_ = deepspeed.initialize(model=ref, config=dsconfig.reference_config(ds_config))
    engine.eval()
    return engine.module


def reference_logps(cfg, start, pairs, split, dtype, device, ds_config, pad) -> PairLogps:
    """Precomputed reference log-probs of a split: from the shared cache, or computed sharded and cached by rank 0."""
    import torch.distributed as dist

    path = reference_cache_path(cfg, start, split, dtype)
    if not path.is_file():
        ref = load_reference(start, dtype, cfg["model"], device, ds_config)
        out = sharded_pair_logps(ref, pairs, cfg["evaluation"]["batch_size"], pad, device)
        del ref
        if dist.get_rank() == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save(vars(out), tmp)
            os.replace(tmp, path)  # atomic, as in ablate.trial
        dist.barrier()
        return out
    return PairLogps(**torch.load(path, weights_only=True))


def train_and_evaluate(cfg: dict, device: torch.device, out_dir: Path) -> tuple[dict, Path | None]:
    """Train and evaluate one policy on this worker's share; rank 0's return value holds the trial's metrics."""
    if device.type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before DeepSpeed picks an accelerator
    import deepspeed
    import torch.distributed as dist
    from transformers import get_cosine_schedule_with_warmup
    from transformers.integrations import HfDeepSpeedConfig

    t_start = time.perf_counter()
    # Ray Train has set up the process group (gloo on CPU, NCCL on GPU); DeepSpeed adopts it.
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.set_num_threads(max(1, int(cfg["resources"]["cpus_per_worker"])))
    reset_peak_memory(device)
    seed_everything(cfg["seed"])
    start, m, tr = cfg["start"]["path"], cfg["model"], cfg["training"]
    method, hp = cfg["method"], cfg["hparams"]
    forced = dsconfig.precision(cfg["deepspeed"].get("user_config"))
    dtype = models.pick_dtype(forced or m["dtype"], device)
    ds_config = dsconfig.resolve(cfg, str(dtype).removeprefix("torch."), device.type == "cuda")
    zero3 = dsconfig.zero_stage(ds_config) == 3
    # Kept alive while models load: from_pretrained then builds them already sharded (zero.Init).
    hf_ds = HfDeepSpeedConfig(ds_config) if zero3 else None

    tokenizer = models.load_tokenizer(start, m["trust_remote_code"])
    pad = tokenizer.pad_token_id
    counts = dict.fromkeys(data_mod.SKIP_COUNTS, 0)
    train_pairs, eval_pairs, eval_rows = tokenized_splits(cfg, tokenizer, counts)

    t_train = time.perf_counter()
    ref_model = ref_train = None
    if cfg["reference"] == "online":
        ref_model = load_reference(start, dtype, m, device, ds_config)
    elif cfg["reference"] == "precomputed":
        ref_train = reference_logps(cfg, start, train_pairs, "train", dtype, device, ds_config, pad)

    policy = models.load_model(
        start, device, dtype, m["trust_remote_code"], True, m["gradient_checkpointing"]
    )
    # Global micro-batches exactly as a one-worker trial would draw them with batch_size x workers pairs.
    lengths = [p.length for p in train_pairs]
    global_batch = tr["batch_size"] * world

    def epoch_groups(epoch: int) -> list[list[list[int]]]:
        batches = data_mod.batch_indices(
            lengths, global_batch, cfg["seed"] * 1000 + epoch, tr["group_by_length"]
        )
        batches = [b for b in batches if len(b) >= world]  # every worker needs at least one pair
        return [batches[i : i + tr["grad_accum"]] for i in range(0, len(batches), tr["grad_accum"])]

    per_epoch = len(epoch_groups(0))
    total = per_epoch * tr["epochs"]
    if "scheduler" in ds_config:
        scheduler_fn = None  # the user's DeepSpeed config brings its own
    else:

        def scheduler_fn(opt):  # noqa: E306 - the same warmup + cosine schedule as ablate.train
            return get_cosine_schedule_with_warmup(opt, int(tr["warmup_ratio"] * total), total)

    engine, _, _, scheduler = deepspeed.initialize(
        model=policy,
        model_parameters=[p for p in policy.parameters() if p.requires_grad],
        config=ds_config,
        lr_scheduler=scheduler_fn,
    )

    preference_loss_fn = preference.loss_function(engine, method, hp, ref_model, ref_train)

    def loss_fn(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        # The single-process trial's loss (ablate.preference), with this worker's batch accuracy;
        # DeepSpeed casts the model itself, the context only picks the GPU's attention kernels.
        with models.compute_context(device, torch.float32):
            loss, stats = preference_loss_fn(batch)
        return loss, torch.tensor(stats["train_reward_accuracy"])

    status, steps, tokens, history = train_steps(
        engine, scheduler, loss_fn, epoch_groups, tr["epochs"], total, tr["log_every"], train_pairs, pad, device
    )  # fmt: skip
    runtime = time.perf_counter() - t_train

    metrics: dict = {
        "status": status,
        "train_loss": history[-1]["train_loss"] if history else float("nan"),
        "runtime_s": runtime,
        "workers": world,
        "zero_stage": dsconfig.zero_stage(ds_config),
        "global_batch": ds_config["train_batch_size"],
        "history": history,
        **counts,
    }
    saved = None
    if status != "finished":
        metrics["diverged_at_step"] = steps + 1
    else:
        records: dict = {}
        with models.compute_context(device, torch.float32):
            metrics.update(evaluate(
                cfg, engine.module, ref_model, tokenizer, eval_pairs, eval_rows, dtype, device, ds_config, records
            ))  # fmt: skip
        metrics["heldout"] = records  # written to heldout.json by the trial's driver
        metrics["tokens_per_s"] = _all_reduce([tokens], device)[0] / max(runtime, 1e-9)
        if cfg["deepspeed"]["save_model"]:
            saved = save_policy(engine, tokenizer, out_dir, zero3)
    metrics["steps"] = steps
    metrics["peak_memory_mb"] = _all_reduce([peak_memory_mb(device)], device, "max")[0]  # the busiest worker
    ips: list[Any] = [None] * world
    dist.all_gather_object(ips, _node_ip())
    metrics["worker_node_ips"] = ",".join(sorted(set(ips)))
    metrics["trial_s"] = time.perf_counter() - t_start
    del hf_ds
    return (metrics, saved) if rank == 0 else ({}, None)


def train_steps(engine, scheduler, loss_fn, epoch_groups, epochs, total, log_every, pairs, pad, device):
    """The optimizer steps of all epochs; ``(status, steps, tokens, history)``, as ``ablate.train`` logs them.

    ``epoch_groups(epoch)`` gives each step's global micro-batches (pair indices); this worker
    trains on its share of each, and the boundary of accumulation is set by hand so that a short
    last group is still one step, as in the single-process loop."""
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    history: list[dict] = []
    window: list[list[float]] = []  # per step: the global mean loss and accuracy, this worker's part
    step = tokens = 0
    try:
        for epoch in range(epochs):
            for group in epoch_groups(epoch):
                step += 1
                sums = [0.0, 0.0]
                for j, idx in enumerate(group):
                    mine = idx[shard(len(idx), rank, world)]
                    batch = {
                        k: v.to(device)
                        for k, v in data_mod.collate_pairs([pairs[i] for i in mine], pad).items()
                    }
                    batch["index"] = torch.tensor(mine, device=device)
                    loss, acc = loss_fn(batch)
                    if _all_reduce([0.0 if torch.isfinite(loss) else 1.0], device, "max")[0]:
                        e = Diverged("loss became not finite")  # on every worker at once
                        e.step = step
                        raise e
                    # The all-reduce averages over workers; this weight turns it into the micro-batch mean,
                    # and 1/len(group) averages over the accumulated micro-batches, as ablate.train does.
                    weight = len(mine) * world / len(idx)
                    engine.set_gradient_accumulation_boundary(j == len(group) - 1)
                    engine.backward(loss * weight / len(group), scale_wrt_gas=False)
                    engine.step()
                    share = len(mine) / len(idx) / len(group)
                    sums[0] += loss.item() * share
                    sums[1] += acc.item() * share
                    tokens += int(batch["attention_mask"].sum())
                window.append(sums)
                if step % log_every == 0 or step == total:
                    summed = _all_reduce([sum(s[0] for s in window), sum(s[1] for s in window)], device)
                    history.append({
                        "step": step,
                        "train_loss": summed[0] / len(window),
                        "train_reward_accuracy": summed[1] / len(window),
                        "lr": scheduler.get_last_lr()[0] if scheduler is not None else float("nan"),
                    })  # fmt: skip
                    window = []
    except Diverged as e:
        # As a single-process trial: stop at once, keep the last logged metrics, no evaluation.
        return f"diverged: {e} at step {e.step}", e.step - 1, 0, history
    return "finished", step, tokens, history


def _node_ip() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # outside Ray (e.g. under torchrun)
        return socket.gethostbyname(socket.gethostname())


def evaluate(
    cfg, policy, ref_model, tokenizer, eval_pairs, eval_rows, dtype, device, ds_config, records
) -> dict:
    """The single-process trial's held-out metrics, computed on shares of the held-out set;
    ``records`` receives the per-response data (``heldout_records``)."""
    ev, pad = cfg["evaluation"], tokenizer.pad_token_id
    pol = sharded_pair_logps(policy, eval_pairs, ev["batch_size"], pad, device)
    ref = None
    if ref_model is not None:
        ref = sharded_pair_logps(ref_model, eval_pairs, ev["batch_size"], pad, device)
    elif cfg["reference"] == "precomputed":
        ref = reference_logps(cfg, cfg["start"]["path"], eval_pairs, "eval", dtype, device, ds_config, pad)
    metrics = preference_metrics(cfg["method"], cfg["hparams"], pol, ref)
    generations = None
    if ev["generate"]:
        n = ev["num_prompts"]
        prompts = [p.prompt_ids for p in eval_pairs[:n]]
        synced = dsconfig.zero_stage(ds_config) == 3  # sharded layers: workers must forward in lockstep
        texts, counts = sharded_generate(
            policy, tokenizer, prompts, ev["max_new_tokens"], ev["batch_size"], device, synced
        )
        baseline = cfg["start"]["baseline"]
        baseline = json.loads(Path(baseline).read_text()) if baseline else None
        metrics.update(generation_metrics([r["prompt"] for r in eval_rows[:n]], texts, counts, baseline))
        generations = ([r["prompt"] for r in eval_rows[:n]], texts, counts, baseline)
    records.update(heldout_records(cfg["method"], cfg["hparams"], pol, ref, generations))
    return metrics


def save_policy(engine, tokenizer, out_dir: Path, zero3: bool) -> Path | None:
    """The trained policy as one Hugging Face checkpoint, written by rank 0 (ZeRO-3 shards gathered first)."""
    import torch.distributed as dist

    state = engine._zero3_consolidated_16bit_state_dict() if zero3 else engine.module.state_dict()
    if dist.get_rank() != 0:
        return None
    engine.module.save_pretrained(out_dir, state_dict=state)
    tokenizer.save_pretrained(out_dir)
    return out_dir
