"""One trial end to end: load the start point, train one policy with one objective, evaluate it.

Ray-free: ``run_trial(config, report)`` takes a plain trial config (see ``ablate.spec.expand``)
and a ``report(metrics)`` callback; ``ablate.tune`` passes Ray Tune's."""

from __future__ import annotations

import json
import os
import random
import resource
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import torch

from ablate import models, preference, shared_prompt, warm
from ablate.evaluate import PairLogps, generate, generation_metrics, pair_logps, preference_metrics
from ablate.startpoint import cache_key
from ablate.train import Diverged, TrainSettings, train

Report = Callable[[dict], None]


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


def tokenized_splits(cfg: dict, tokenizer) -> tuple[list, list, list[dict]]:
    """Tokenized train and held-out pairs, and the held-out rows (for prompts and the oracle);
    tokenized once per data set and tokenizer, then reused from disk and the worker's memory."""
    return warm.tokenized_splits(cfg, tokenizer)


def precomputed_reference(cfg: dict, start: str, pairs: list, name: str, device, pad_id: int) -> PairLogps:
    """Reference log-probs of a data split, computed once and cached on disk for the sweep's other trials."""
    key = cache_key({"start": start, "data": cfg["data"], "split": name})
    path = Path(cfg["cache_dir"]).expanduser() / "reference" / f"{key}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        return PairLogps(**saved)
    ref = warm.load_model(start, device, trainable=False)
    out = pair_logps(ref, pairs, cfg["evaluation"]["batch_size"], pad_id, device)
    del ref
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(vars(out), tmp)
    os.replace(tmp, path)  # atomic: a concurrent trial reads either nothing or the whole file
    return out


def run_trial(cfg: dict, report: Report) -> dict:
    """Train and evaluate one policy; report training metrics every ``log_every`` steps and the final ones."""
    t_start, started_at = time.perf_counter(), time.time()
    device = models.pick_device()
    torch.set_num_threads(max(1, int(cfg.get("resources", {}).get("cpus", 1))))
    reset_peak_memory(device)
    seed_everything(cfg["seed"])
    start = cfg["start"]["path"]
    m = cfg["model"]
    dtype = models.pick_dtype(m["dtype"], device)
    tokenizer = models.load_tokenizer(start, m["trust_remote_code"])
    policy = warm.load_model(start, device, dtype, m["trust_remote_code"], True, m["gradient_checkpointing"])
    train_pairs, eval_pairs, eval_rows = tokenized_splits(cfg, tokenizer)
    pad = tokenizer.pad_token_id
    method, hp, tr = cfg["method"], cfg["hparams"], cfg["training"]

    t_train = time.perf_counter()
    ref_model = ref_train = None
    if cfg["reference"] == "online":
        ref_model = warm.load_model(start, device, dtype, m["trust_remote_code"], trainable=False)
    elif cfg["reference"] == "precomputed":
        ref_train = precomputed_reference(cfg, start, train_pairs, "train", device, pad)

    make_batches = preference.batch_maker(
        train_pairs, pad, tr["batch_size"], cfg["seed"], tr["group_by_length"], device,
        share_prompt=shared_prompt.usable(policy, train_pairs),
    )  # fmt: skip
    loss_fn = preference.loss_function(policy, method, hp, ref_model, ref_train)
    first_step: list[float] = []

    def on_step(_step: int) -> None:
        if not first_step:  # start-up cost of the trial: entry to the end of its first step
            first_step.append(time.perf_counter())

    last: dict[str, float] = {}

    def on_log(step: int, logged: dict, _state: dict) -> None:
        last.update(logged)
        report({"step": step, **logged})

    settings = TrainSettings(
        learning_rate=tr["learning_rate"], epochs=tr["epochs"], grad_accum=tr["grad_accum"],
        warmup_ratio=tr["warmup_ratio"], weight_decay=tr["weight_decay"], max_grad_norm=tr["max_grad_norm"],
        log_every=tr["log_every"],
    )  # fmt: skip
    status = "finished"
    try:
        result = train(policy, make_batches, loss_fn, settings, on_log, on_step=on_step)
        steps, tokens = result.steps, result.tokens
    except Diverged as e:
        status, steps, tokens = f"diverged: {e}", -1, 0
    runtime = time.perf_counter() - t_train

    metrics: dict = {
        "status": status,
        "train_loss": last.get("train_loss", float("nan")),
        "runtime_s": runtime,
    }
    if status == "finished":
        metrics.update(
            evaluate_policy(cfg, policy, ref_model, tokenizer, eval_pairs, eval_rows, start, device)
        )
        metrics["steps"] = steps
        metrics["tokens_per_s"] = tokens / max(runtime, 1e-9)
    metrics["peak_memory_mb"] = peak_memory_mb(device)
    metrics["trial_s"] = time.perf_counter() - t_start
    if first_step:
        metrics["first_step_s"] = first_step[0] - t_start
        metrics["first_step_at"] = started_at + metrics["first_step_s"]  # Unix time, as Ray's clocks
    metrics["process_id"] = os.getpid()  # with process_started_at: a fresh worker or a reused one
    metrics["process_started_at"] = psutil.Process().create_time()
    report(metrics)
    return metrics


def evaluate_policy(
    cfg, policy, ref_model, tokenizer, eval_pairs, eval_rows, start, device
) -> dict[str, float]:
    ev = cfg["evaluation"]
    pad = tokenizer.pad_token_id
    pol = pair_logps(policy, eval_pairs, ev["batch_size"], pad, device)
    ref = None
    if ref_model is not None:
        ref = pair_logps(ref_model, eval_pairs, ev["batch_size"], pad, device)
    elif cfg["reference"] == "precomputed":
        ref = precomputed_reference(cfg, start, eval_pairs, "eval", device, pad)
    metrics = preference_metrics(cfg["method"], cfg["hparams"], pol, ref)
    if ev["generate"]:
        n = ev["num_prompts"]
        prompts = [p.prompt_ids for p in eval_pairs[:n]]
        texts, counts = generate(policy, tokenizer, prompts, ev["max_new_tokens"], ev["batch_size"], device)
        baseline = cfg["start"]["baseline"]
        baseline = json.loads(Path(baseline).read_text()) if baseline else None
        metrics.update(generation_metrics([r["prompt"] for r in eval_rows[:n]], texts, counts, baseline))
    return metrics
