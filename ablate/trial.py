"""One trial end to end: load the start point, train one policy with one objective, evaluate it.

Ray-free: ``run_trial(config, report)`` takes a plain trial config (see ``ablate.spec.expand``)
and a ``report(metrics)`` callback; ``ablate.tune`` passes Ray Tune's, and a checkpoint callback
and the state to resume from (``ablate.checkpoint``)."""

from __future__ import annotations

import functools
import json
import math
import os
import random
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import torch

from ablate import checkpoint as ckpt_mod
from ablate import data as data_mod
from ablate import faults, models, preference, shared_prompt, warm
from ablate.evaluate import (
    PairLogps,
    generate,
    generation_metrics,
    heldout_records,
    pair_logps,
    preference_metrics,
)
from ablate.startpoint import cache_key
from ablate.train import Diverged, TrainSettings, train

Report = Callable[[dict], None]
ReportCheckpoint = Callable[[dict, str], None]  # (metrics, checkpoint directory)
SaveArtifact = Callable[[str, bytes], None]  # (file name, content) -> a file in the trial's directory
HELDOUT_FILE = "heldout.json"  # per-response held-out data, read by analysis/ for its figures


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def reset_peak_memory(device: torch.device) -> None:
    """Start this trial's peak from now, not from an earlier trial in a reused worker process."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the process's peak resident set size (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tokenized_splits(cfg: dict, tokenizer, counts: dict | None = None) -> tuple[list, list, list[dict]]:
    """Tokenized train and held-out pairs, and the held-out rows (for prompts and the oracle);
    tokenized once per data set and tokenizer, then reused from disk and the worker's memory.
    ``counts`` (if given) receives the skipped and truncated pairs (``ablate.data.SKIP_COUNTS``)."""
    train, held_out, rows, seen = warm.tokenized_splits(cfg, tokenizer)
    if counts is not None:
        counts.update(seen)
    return train, held_out, rows


def reference_cache_path(cfg: dict, start: str, name: str, dtype: torch.dtype) -> Path:
    """Where the reference log-probs of a data split are cached (shared with multi-worker trials);
    ``dtype``, the one they were computed in, is part of the key (bf16 numbers differ from float32)."""
    key = cache_key({"start": start, "data": cfg["data"], "split": name, "dtype": str(dtype)})
    return Path(cfg["cache_dir"]).expanduser() / "reference" / f"{key}.pt"


def precomputed_reference(
    cfg: dict, start: str, pairs: list, name: str, device, pad_id: int, dtype: torch.dtype = torch.float32
) -> PairLogps:
    """Reference log-probs of a data split, computed once and cached on disk for the sweep's other trials."""
    path = reference_cache_path(cfg, start, name, dtype)
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        return PairLogps(**saved)
    ref = warm.load_model(start, device, dtype, cfg["model"]["trust_remote_code"], trainable=False)
    out = pair_logps(ref, pairs, cfg["evaluation"]["batch_size"], pad_id, device)
    del ref
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(vars(out), tmp)
    os.replace(tmp, path)  # atomic: a concurrent trial reads either nothing or the whole file
    return out


def run_trial(
    cfg: dict,
    report: Report,
    save_artifact: SaveArtifact | None = None,
    report_checkpoint: ReportCheckpoint | None = None,
    resume: dict | None = None,
) -> dict:
    """Train and evaluate one policy; report training metrics every ``log_every`` steps and the final ones.

    ``save_artifact``, when given, receives ``heldout.json`` (per-response held-out data) before the
    final report. With ``report_checkpoint``, every ``training.checkpoint_every`` steps the metrics
    are reported through it together with a checkpoint directory (``ablate.checkpoint``); ``resume``
    is such a checkpoint's state, from which training continues. A loss that becomes NaN or infinite
    ends the trial at once with status ``diverged: ...`` and its last finite training metrics."""
    t_start, started_at = time.perf_counter(), time.time()
    device = models.pick_device()
    torch.set_num_threads(max(1, int(cfg.get("resources", {}).get("cpus", 1))))
    reset_peak_memory(device)
    seed_everything(cfg["seed"])
    start = cfg["start"]["path"]
    m = cfg["model"]
    # ``dtype`` is what the forward passes compute in; the policy's weights stay in ``master_dtype``
    # (float32 under bf16/fp16, mixed precision), frozen reference models are stored in ``dtype``.
    dtype = models.pick_dtype(m["dtype"], device)
    amp = functools.partial(models.compute_context, device, dtype)
    tokenizer = models.load_tokenizer(start, m["trust_remote_code"])
    policy = warm.load_model(
        start, device, models.master_dtype(dtype), m["trust_remote_code"], True, m["gradient_checkpointing"]
    )
    counts = dict.fromkeys(data_mod.SKIP_COUNTS, 0)
    train_pairs, eval_pairs, eval_rows = tokenized_splits(cfg, tokenizer, counts)
    pad = tokenizer.pad_token_id
    method, hp, tr = cfg["method"], cfg["hparams"], cfg["training"]

    t_train = time.perf_counter()
    ref_model = ref_train = None
    if cfg["reference"] == "online":
        ref_model = warm.load_model(start, device, dtype, m["trust_remote_code"], trainable=False)
    elif cfg["reference"] == "precomputed":
        ref_train = precomputed_reference(cfg, start, train_pairs, "train", device, pad, dtype)

    make_batches = preference.batch_maker(
        train_pairs, pad, tr["batch_size"], cfg["seed"], tr["group_by_length"], device,
        share_prompt=shared_prompt.usable(policy, train_pairs),
    )  # fmt: skip
    preference_loss_fn = preference.loss_function(policy, method, hp, ref_model, ref_train)

    def loss_fn(batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        loss, stats = preference_loss_fn(batch)
        if poison:  # an injected nan/inf fault (ablate.faults)
            loss = loss + poison.pop()
        return loss, stats

    first_step: list[float] = []

    def on_step(_step: int) -> None:
        if not first_step:  # start-up cost of the trial: entry to the end of its first step
            first_step.append(time.perf_counter())

    last: dict[str, float] = {}
    start_step, prior_runtime, optimizer_state = 0, 0.0, None
    if resume is not None:
        policy.load_state_dict(resume["model"])
        start_step, prior_runtime = resume["step"], resume["runtime_s"]
        optimizer_state = {"optimizer": resume["optimizer"], "scheduler": resume["scheduler"]}
        last.update(resume["last_metrics"])
        ckpt_mod.restore_rng(resume)
    checkpoint_every = tr.get("checkpoint_every", 0) if report_checkpoint is not None else 0
    every = cfg["evaluation"].get("every_steps")
    next_eval = [every]
    # The last step is evaluated in full right after training; a periodic evaluation there would only
    # give an early-stopping scheduler the chance to stop a trial that is already done.
    last_step = math.ceil(math.ceil(len(train_pairs) / tr["batch_size"]) / tr["grad_accum"]) * tr["epochs"]

    def on_log(step: int, logged: dict, state: dict) -> None:
        last.update(logged)
        held_out = {}
        if every and next_eval[0] <= step < last_step:  # periodic held-out metrics, for early stopping
            next_eval[0] = (step // every + 1) * every
            with amp():
                held_out = held_out_preference(cfg, policy, ref_model, eval_pairs, start, device, pad, dtype)
        row = {"step": step, **logged, **held_out}
        if checkpoint_every and step % checkpoint_every == 0:
            elapsed = prior_runtime + time.perf_counter() - t_train
            with tempfile.TemporaryDirectory(prefix="ablate-checkpoint-") as d:
                ckpt_mod.save(d, policy, state, step, last, elapsed)
                report_checkpoint(row, d)  # Ray copies it into storage before returning
        else:
            report(row)

    injected = faults.for_trial(cfg["index"], start_step)
    poison: list[float] = []

    def before_step(step: int) -> None:
        kind = injected.get(step)
        if kind in ("nan", "inf"):
            poison.append(float(kind))
        elif kind:
            faults.fire(kind, step)

    settings = TrainSettings(
        learning_rate=tr["learning_rate"], epochs=tr["epochs"], grad_accum=tr["grad_accum"],
        warmup_ratio=tr["warmup_ratio"], weight_decay=tr["weight_decay"], max_grad_norm=tr["max_grad_norm"],
        log_every=tr["log_every"], checkpoint_every=checkpoint_every,
    )  # fmt: skip
    status, extra = "finished", {}
    try:
        result = train(
            policy,
            make_batches,
            loss_fn,
            settings,
            on_log,
            start_step,
            optimizer_state,
            before_step,
            on_step,
            compute_dtype=dtype,
        )
        steps, tokens = result.steps, result.tokens
    except Diverged as e:
        # Stop at once: no evaluation of a model whose next step was not finite; keep the last
        # finite training metrics (those logged, updated by the finite steps since the last log).
        last.update(e.metrics or {})
        status, steps, tokens = f"diverged: {e} at step {e.step}", (e.step or 1) - 1, 0
        extra = {"diverged_at_step": e.step, "train_reward_accuracy": last.get("train_reward_accuracy")}
    runtime = time.perf_counter() - t_train

    metrics: dict = {
        "status": status,
        "train_loss": last.get("train_loss", float("nan")),
        "runtime_s": prior_runtime + runtime,
        **extra,
        **counts,
    }
    if start_step:
        metrics["resumed_from_step"] = start_step
    if status == "finished":
        records: dict = {}
        with amp():
            metrics.update(
                evaluate_policy(
                    cfg, policy, ref_model, tokenizer, eval_pairs, eval_rows, start, device, records, dtype
                )
            )
        if save_artifact is not None:
            save_artifact(HELDOUT_FILE, json.dumps(records).encode())
        metrics["tokens_per_s"] = tokens / max(runtime, 1e-9)  # of this attempt
    metrics["steps"] = steps
    metrics["peak_memory_mb"] = peak_memory_mb(device)
    metrics["trial_s"] = time.perf_counter() - t_start
    if first_step:
        metrics["first_step_s"] = first_step[0] - t_start
        metrics["first_step_at"] = started_at + metrics["first_step_s"]  # Unix time, as Ray's clocks
    metrics["process_id"] = os.getpid()  # with process_started_at: a fresh worker or a reused one
    metrics["process_started_at"] = psutil.Process().create_time()
    report(metrics)
    return metrics


def held_out_preference(
    cfg, policy, ref_model, eval_pairs, start, device, pad, dtype=torch.float32
) -> dict[str, float]:
    """Reward accuracy and margin on the held-out pairs, without generation: cheap enough to report
    during training (``evaluation.every_steps``) for an early-stopping scheduler."""
    pol = pair_logps(policy, eval_pairs, cfg["evaluation"]["batch_size"], pad, device)
    ref = None
    if ref_model is not None:
        ref = pair_logps(ref_model, eval_pairs, cfg["evaluation"]["batch_size"], pad, device)
    elif cfg["reference"] == "precomputed":
        ref = precomputed_reference(cfg, start, eval_pairs, "eval", device, pad, dtype)
    m = preference_metrics(cfg["method"], cfg["hparams"], pol, ref)
    return {"reward_accuracy": m["reward_accuracy"], "reward_margin": m["reward_margin"]}


def evaluate_policy(
    cfg,
    policy,
    ref_model,
    tokenizer,
    eval_pairs,
    eval_rows,
    start,
    device,
    records: dict | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, float]:
    """Held-out metrics; ``records``, when given, is filled with the per-response data (``heldout_records``)."""
    ev = cfg["evaluation"]
    pad = tokenizer.pad_token_id
    pol = pair_logps(policy, eval_pairs, ev["batch_size"], pad, device)
    ref = None
    if ref_model is not None:
        ref = pair_logps(ref_model, eval_pairs, ev["batch_size"], pad, device)
    elif cfg["reference"] == "precomputed":
        ref = precomputed_reference(cfg, start, eval_pairs, "eval", device, pad, dtype)
    metrics = preference_metrics(cfg["method"], cfg["hparams"], pol, ref)
    generations = None
    if ev["generate"]:
        n = ev["num_prompts"]
        prompts = [p.prompt_ids for p in eval_pairs[:n]]
        texts, counts = generate(policy, tokenizer, prompts, ev["max_new_tokens"], ev["batch_size"], device)
        baseline = cfg["start"]["baseline"]
        baseline = json.loads(Path(baseline).read_text()) if baseline else None
        metrics.update(generation_metrics([r["prompt"] for r in eval_rows[:n]], texts, counts, baseline))
        generations = ([r["prompt"] for r in eval_rows[:n]], texts, counts, baseline)
    if records is not None:
        records.update(heldout_records(cfg["method"], cfg["hparams"], pol, ref, generations))
    return metrics
