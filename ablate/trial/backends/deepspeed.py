"""Multi-worker trials: one trial trained by N Ray Train workers with DeepSpeed ZeRO (stage 0, 1, 2 or 3).

Ray Train V2 refuses a ``TorchTrainer`` inside ``tune.Tuner``, so the Tune trial is a small
driver (``run_distributed_trial``) that builds and runs a ``TorchTrainer``; every worker runs
``train_worker``, which runs the one trial of ``ablate.trial.runner`` with this module's backend
(``DeepSpeedWorker``: how a step runs, how log-probs and generations are split and gathered), and
rank 0 reports once, at the end: the final metrics, the training history, and the trained policy
as the Ray Train checkpoint.

Data parallelism keeps the single-process trial's batches: each optimizer step sees the same
global micro-batches as a one-worker trial with ``batch_size x workers`` pairs per micro-batch,
split between the workers; every worker's loss is scaled so that the average DeepSpeed takes over
workers equals the mean over the whole micro-batch (also when the last one does not split evenly).
KTO's batch-level reference point is the one exception: it is estimated on each worker's share.
Mid-training checkpoints are not taken: a retried multi-worker trial starts over.

The reference model of DPO-family methods is sharded like the policy under ZeRO-3 (an inference
engine without optimizer) and replicated under stages 0-2; precomputed reference log-probs are
computed that way once, each worker on its share of the pairs, and cached on disk where
single-process trials find them too. SimPO and the other reference-free methods load none.

Evaluation's generations under ZeRO-3 (``DeepSpeedWorker.generate``): where the full weights and the
KV cache fit a device, every worker gathers the weights once, module by module, into a plain copy
(``plain_copy``) and generates its share of the prompts from it with ``ablate.trial.evaluate.generate`` (the
on-policy build's generator), then frees it: ``gathered``. Else the workers generate from the sharded
model in lockstep (``synced_gpus``), which gathers every layer for every new token: ``synced``. The
way taken is logged and recorded as the trial's ``eval_generation`` (benchmark 8, docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch

from ablate import models, records
from ablate.records import write_bytes
from ablate.trial import dsconfig, lora
from ablate.trial.backends import StepperSetup
from ablate.trial.config import TrialConfig, parse
from ablate.trial.evaluate import generate
from ablate.trial.logps import PairLogps, pair_logps
from ablate.trial.runner import Report, SaveArtifact, run_trial
from ablate.trial.train import Diverged, LossFn

DRIVER_CPUS = 0.01  # the Tune trial only waits on the TorchTrainer; its workers reserve their own CPUs/GPUs
GATHERED, SYNCED = "gathered", "synced"  # how a ZeRO-3 trial generates (``eval_generation``)
# The share of a device's free memory (CPU: of the host's available memory per worker on it) that a
# gathered copy and its KV cache may take; the rest is headroom for the generation's temporaries.
GATHER_SHARE = 0.8


# --------------------------------------------------------------------------------------------------
# The Tune side: one trial = one Ray Train run
# --------------------------------------------------------------------------------------------------


def run_distributed_trial(cfg: TrialConfig, report: Report, save_artifact: SaveArtifact | None = None) -> dict:
    """Run one trial on ``resources.workers`` Ray Train workers; report its history and final metrics to Tune.

    ``save_artifact`` receives ``heldout.json`` as from a single-process trial. A retried trial
    starts over (no mid-training checkpoints)."""
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    res = cfg.resources
    use_gpu = res.gpus_per_worker > 0
    per_worker = {"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if use_gpu else {})}
    # The Train run's files (the trained policy included) go inside this trial's directory in storage.
    storage = tune.get_context().get_storage()
    env = {"TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR")
           or str(Path(cfg.cache_dir).expanduser() / "torch_extensions")}  # fmt: skip
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"trial": cfg.model_dump(), "env": env},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=res.workers, use_gpu=use_gpu, resources_per_worker=per_worker
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
    for name, text in metrics.pop("artifacts", {}).items():
        if save_artifact is not None:
            save_artifact(name, text.encode())
    if result.checkpoint is not None:
        metrics["checkpoint_path"] = result.checkpoint.path
    report(metrics)
    return metrics


def train_worker(loop_config: dict) -> None:
    """The function every Ray Train worker runs: the trial of ``ablate.trial.runner`` on this worker's share."""
    import ray
    import ray.train
    import ray.train.torch

    for key, value in loop_config["env"].items():
        os.environ.setdefault(key, value)
    cfg = parse(records.trial_config(loop_config))
    rows: list[dict] = []
    artifacts: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="ablate-policy-") as tmp:
        backend = DeepSpeedWorker(cfg, ray.train.torch.get_device(), Path(tmp))

        def save(name: str, data: bytes) -> None:
            artifacts[name] = data.decode()

        final = run_trial(cfg, rows.append, save_artifact=save, backend=backend)
        metrics: dict = {}
        if backend.is_main:  # rank 0 reports for the trial; the driver replays the history to Tune
            metrics = {**final, "history": rows[:-1], "artifacts": artifacts}
            metrics["node_id"] = ray.get_runtime_context().get_node_id()
        saved = backend.saved if backend.is_main else None
        checkpoint = ray.train.Checkpoint.from_directory(str(saved)) if saved else None
        ray.train.report(metrics, checkpoint=checkpoint)


# --------------------------------------------------------------------------------------------------
# The worker side: DeepSpeed training and sharded evaluation (torch.distributed set up by Ray Train)
# --------------------------------------------------------------------------------------------------


class DeepSpeedWorker:
    """The backend of one worker of a multi-worker trial (``ablate.trial.backends.Backend``)."""

    checkpoints = False
    process_reused = False  # each trial starts its own Ray Train worker processes

    def __init__(self, cfg: TrialConfig, device: torch.device, out_dir: Path) -> None:
        if device.type == "cpu":
            os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before DeepSpeed picks an accelerator
        import deepspeed
        import torch.distributed as dist
        from transformers.integrations import HfDeepSpeedConfig

        # Ray Train has set up the process group (gloo on CPU, NCCL on GPU); DeepSpeed adopts it.
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
        self.device, self.out_dir = device, out_dir
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.is_main = self.rank == 0
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.set_num_threads(max(1, int(cfg.resources.cpus_per_worker)))
        assert cfg.deepspeed is not None, "a multi-worker trial has a deepspeed section (ablate.spec.expand)"
        forced = dsconfig.precision(cfg.deepspeed.user_config)
        self.dtype = models.pick_dtype(forced or cfg.model.dtype, device)
        dtype_name = str(self.dtype).removeprefix("torch.")
        self.ds_config = dsconfig.resolve(cfg.model_dump(), dtype_name, device.type == "cuda")
        self.zero3 = dsconfig.zero_stage(self.ds_config) == 3
        self.save_model = cfg.deepspeed.save_model
        # Kept alive while models load: from_pretrained then builds them already sharded (zero.Init).
        self._hf_ds = HfDeepSpeedConfig(self.ds_config) if self.zero3 else None
        self.engine: Any = None
        self.saved: Path | None = None
        self.lora_setting = (cfg.lora, cfg.start.path)  # a gathered copy of a LoRA policy gets its adapter
        self.eval_generation: str | None = None  # how the policy generated under ZeRO-3 (gathered / synced)

    def compute(self) -> contextlib.AbstractContextManager:
        # DeepSpeed casts the model itself; the context only picks the GPU's attention kernels.
        return models.compute_context(self.device, torch.float32)

    def load_policy(self, cfg: TrialConfig) -> torch.nn.Module:
        m = cfg.model
        policy = models.load_model(cfg.start.path, self.device, self.dtype, m.trust_remote_code, True,
                                   m.gradient_checkpointing)  # fmt: skip
        # LoRA: only the adapter reaches the optimizer (``stepper`` passes the parameters that need a
        # gradient); save_policy then writes the adapter alone.
        return policy if cfg.lora is None else lora.attach(policy, cfg.lora, cfg.start.path)

    def load_reference(self, cfg: TrialConfig) -> torch.nn.Module:
        """The frozen reference: a ZeRO-3 inference engine when the policy is sharded, else a local copy."""
        ref = models.load_model(cfg.start.path, self.device, self.dtype, cfg.model.trust_remote_code, False)
        if not self.zero3:
            return ref
        import deepspeed

        engine, *_ = deepspeed.initialize(model=ref, config=dsconfig.reference_config(self.ds_config))
        engine.eval()
        return engine.module

    def stepper(self, policy: torch.nn.Module, setup: StepperSetup) -> DeepSpeedStepper:
        import deepspeed
        from transformers import get_cosine_schedule_with_warmup

        total = setup.total_steps

        def schedule(opt):  # the same warmup + cosine schedule as ablate.trial.train.AdamWStepper
            return get_cosine_schedule_with_warmup(opt, int(setup.settings.warmup_ratio * total), total)

        self.engine, _, _, scheduler = deepspeed.initialize(
            model=policy,
            model_parameters=[p for p in policy.parameters() if p.requires_grad],
            config=self.ds_config,
            lr_scheduler=None if "scheduler" in self.ds_config else schedule,  # a user's config may bring one
        )
        return DeepSpeedStepper(self, self.engine, scheduler, setup.loss_for(self.engine), setup.collate)

    def pair_logps(self, model, pairs: list, batch_size: int, pad_id: int) -> PairLogps:
        """``logps.pair_logps`` over all ``pairs``, each worker computing an equal share.

        Shares are padded to equal length so every worker runs the same number of forward passes,
        which ZeRO-3's collective parameter gathering requires."""
        per = math.ceil(len(pairs) / self.world)
        mine = pairs[self.rank * per : (self.rank + 1) * per]
        mine = mine + [pairs[-1]] * (per - len(mine))
        out = pair_logps(model, mine, batch_size, pad_id, self.device)
        stacked = torch.stack([out.chosen, out.rejected, out.chosen_len, out.rejected_len])
        full = torch.cat(self._all_gather(stacked), dim=1)[:, : len(pairs)]
        return PairLogps(full[0], full[1], full[2], full[3])

    def generate(self, model, tokenizer, prompts: list, max_new_tokens: int, batch_size: int,
                 sampling: dict | None = None, way: str | None = None):  # fmt: skip
        """Generations of all prompts, split between the workers (equal shares, as ``pair_logps``).
        Under ZeRO-3, ``way`` (default: ``generation_way``'s choice) is ``gathered`` (each worker
        generates from a plain copy of the weights, gathered once) or ``synced`` (from the sharded
        model, the workers forwarding in lockstep)."""
        import torch.distributed as dist

        per = math.ceil(len(prompts) / self.world)
        mine = prompts[self.rank * per : (self.rank + 1) * per]
        n_mine = len(mine)
        mine = mine + [prompts[-1]] * (per - n_mine)
        width = max((len(p) for p in prompts), default=0)
        way = way or (self.generation_way(model, min(batch_size, per), width + max_new_tokens) if self.zero3 else None)
        if way == GATHERED:
            plain = plain_copy(model, self.device, self.lora_setting)
            texts, counts = generate(plain, tokenizer, mine, max_new_tokens, batch_size, self.device, sampling,
                                     synced_gpus=False)  # fmt: skip
            del plain
        else:
            texts, counts = generate(model, tokenizer, mine, max_new_tokens, batch_size, self.device, sampling,
                                     synced_gpus=self.zero3)  # fmt: skip
        if way is not None and self.engine is not None and model is self.engine.module:  # the trained policy
            self.eval_generation = way
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, (texts[:n_mine], counts[:n_mine]))
        return [t for g in gathered for t in g[0]], [c for g in gathered for c in g[1]]

    def generation_way(self, model, batch: int, tokens: int) -> str:
        """``gathered`` where, on every worker, the full weights and the KV cache of ``batch`` sequences
        of ``tokens`` fit ``GATHER_SHARE`` of the free memory of its device, else ``synced`` (collective)."""
        need = gathered_bytes(model, batch, tokens)
        free = self._free_bytes()
        way = GATHERED if self.all_true(need <= GATHER_SHARE * free) else SYNCED
        if self.is_main:
            print(f"ablate: evaluation generates {way} under ZeRO-3 (a plain copy needs {need / 2**30:.2f} GiB per "
                  f"worker; {free / 2**30:.1f} GiB free on rank 0's device)", flush=True)  # fmt: skip
        return way

    def _free_bytes(self) -> float:
        """Free memory of this worker's device; on CPU the host's available memory over its workers on this host."""
        import torch.distributed as dist

        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return free + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        import psutil

        hosts: list[Any] = [None] * self.world
        dist.all_gather_object(hosts, socket.gethostname())
        return psutil.virtual_memory().available / hosts.count(socket.gethostname())

    def reduce(self, values: list[float], op: str = "sum") -> list[float]:
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t.cpu().tolist()

    def all_true(self, flag: bool) -> bool:
        return self.reduce([0.0 if flag else 1.0], "max")[0] == 0.0

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def _all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        import torch.distributed as dist

        t = t.to(self.device)
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t)
        return [o.cpu() for o in out]

    def trial_metrics(self) -> dict:
        import torch.distributed as dist

        ips: list[Any] = [None] * self.world
        dist.all_gather_object(ips, _node_ip())
        return {"workers": self.world, "zero_stage": dsconfig.zero_stage(self.ds_config),
                "global_batch": self.ds_config["train_batch_size"], "worker_node_ips": ",".join(sorted(set(ips)))}  # fmt: skip

    def finish(self, tokenizer) -> dict:
        if self.save_model:
            self.saved = save_policy(self.engine, tokenizer, self.out_dir, self.zero3)
        return {} if self.eval_generation is None else {"eval_generation": self.eval_generation}


class DeepSpeedStepper:
    """One optimizer step of a multi-worker trial over a group of global micro-batches (pair indices).

    This worker trains on its share of each micro-batch, and the boundary of accumulation is set by
    hand so that a short last group is still one step, as in the single-process loop. Statistics are
    this worker's part of the global mean (``average`` sums the parts over the workers)."""

    def __init__(self, backend: DeepSpeedWorker, engine, scheduler, loss_fn: LossFn, collate) -> None:
        self.backend, self.engine, self.scheduler = backend, engine, scheduler
        self.loss_fn, self.collate = loss_fn, collate
        self.model = engine.module

    def step(self, group: list) -> tuple[dict[str, float], int]:
        rank, world = self.backend.rank, self.backend.world
        totals: dict[str, float] = {}
        tokens = 0
        for j, idx in enumerate(group):
            mine = idx[shard(len(idx), rank, world)]
            batch = self.collate(mine)
            with self.backend.compute():
                loss, stats = self.loss_fn(batch)
            if not self.backend.all_true(bool(torch.isfinite(loss))):  # on every worker at once
                raise Diverged("loss became not finite")
            # The all-reduce averages over workers; this weight turns it into the micro-batch mean,
            # and 1/len(group) averages over the accumulated micro-batches, as ablate.trial.train does.
            weight = len(mine) * world / len(idx)
            self.engine.set_gradient_accumulation_boundary(j == len(group) - 1)
            self.engine.backward(loss * weight / len(group), scale_wrt_gas=False)
            self.engine.step()
            share = len(mine) / len(idx) / len(group)
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + v * share
            tokens += int(batch["attention_mask"].sum())
        return totals, tokens

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0] if self.scheduler is not None else float("nan")

    def average(self, window: list[dict[str, float]]) -> dict[str, float]:
        keys = sorted(window[0])
        summed = self.backend.reduce([sum(s[k] for s in window) for k in keys])
        return {k: v / len(window) for k, v in zip(keys, summed, strict=True)}


def shard(n: int, rank: int, world: int) -> slice:
    """This worker's contiguous share of ``n`` items (sizes differ by at most one)."""
    return slice(n * rank // world, n * (rank + 1) // world)


def _node_ip() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # outside Ray (e.g. under torchrun)
        return socket.gethostbyname(socket.gethostname())


def gathered_bytes(model: torch.nn.Module, batch: int, tokens: int) -> float:
    """What a plain copy of a ZeRO-3 model needs to generate: its full weights (each parameter's full
    size, in its dtype) and, for a Llama-style config, the KV cache and last logits of ``batch`` sequences
    of ``tokens`` (``ablate.onpolicy.fit.generator_bytes``)."""
    from ablate.onpolicy.fit import generator_bytes
    from ablate.sweep.memory_plan import ModelShape

    params = {id(p): p for p in model.parameters()}.values()
    weights = sum(int(getattr(p, "ds_numel", p.numel())) * p.element_size() for p in params)
    try:
        cache = generator_bytes(ModelShape.of(model.config.to_dict()), batch, tokens, next(iter(params)).element_size())[1]
    except (AttributeError, KeyError, TypeError):  # not a Llama-style config: the weights alone
        cache = 0.0
    return weights + cache


def plain_copy(model: torch.nn.Module, device: torch.device, lora_setting: tuple = (None, None)) -> torch.nn.Module:
    """A plain (not ZeRO) copy of a ZeRO-3 model on this worker, frozen and in eval mode: the same class
    built on the meta device from its config (with the same adapter, for a LoRA policy), every parameter
    gathered once, module by module, and cloned in its own dtype (tied ones stay tied), buffers
    cloned. Collective: every worker must call it."""
    import deepspeed

    with torch.device("meta"):
        plain = type(model)(copy.deepcopy(model.config))
        if lora.has_adapter(model):
            plain = lora.attach(plain, lora_setting[0], lora_setting[1])
    if getattr(model, "generation_config", None) is not None:  # the checkpoint's defaults (e.g. a repetition penalty)
        plain.generation_config = copy.deepcopy(model.generation_config)
    sources = dict(model.named_modules())
    copies: dict[int, torch.nn.Parameter] = {}
    for name, dst in plain.named_modules():
        src = sources[name]
        new = [p for p in src._parameters.values() if p is not None and id(p) not in copies]
        with deepspeed.zero.GatheredParameters(new, modifier_rank=None):  # read-only: no broadcast back
            for p in new:
                copies[id(p)] = torch.nn.Parameter(p.data.detach().to(device, copy=True), requires_grad=False)
        for key, p in src._parameters.items():
            dst._parameters[key] = None if p is None else copies[id(p)]
        for key, b in src._buffers.items():
            dst._buffers[key] = None if b is None else b.detach().to(device, copy=True)
    left = [n for n, t in [*plain.named_parameters(), *plain.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"plain_copy: not in the ZeRO-3 model: {left[:5]}")
    return plain.eval()


def save_policy(engine, tokenizer, out_dir: Path, zero3: bool) -> Path | None:
    """The trained policy as one Hugging Face checkpoint, written by rank 0 (ZeRO-3 shards gathered first)."""
    import torch.distributed as dist

    state = engine._zero3_consolidated_16bit_state_dict() if zero3 else engine.module.state_dict()
    if dist.get_rank() != 0:
        return None
    if lora.has_adapter(engine.module):  # a LoRA policy: the adapter alone, in peft's format
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, data in lora.adapter_files(engine.module, state).items():
            write_bytes(out_dir / name, data)
        return out_dir
    engine.module.save_pretrained(out_dir, state_dict=state)
    tokenizer.save_pretrained(out_dir)
    return out_dir
