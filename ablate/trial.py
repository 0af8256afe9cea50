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

import torch

from ablate import data as data_mod
from ablate import losses, models
from ablate.evaluate import PairLogps, generate, generation_metrics, pair_logps, preference_metrics
from ablate.startpoint import cache_key
from ablate.train import Diverged, TrainSettings, sequence_logps, train

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
    """Tokenized train and held-out pairs, and the held-out rows (for prompts and the oracle)."""
    d = cfg["data"]
    train_rows, eval_rows = data_mod.load_splits(d)

    def tok(rows):
        return data_mod.tokenize_pairs(
            tokenizer, rows, d["max_length"], d["max_prompt_length"], d["chat_template"]
        )

    return tok(train_rows), tok(eval_rows), eval_rows


def reference_cache_path(cfg: dict, start: str, name: str) -> Path:
    """Where the reference log-probs of a data split are cached (shared with multi-worker trials)."""
    key = cache_key({"start": start, "data": cfg["data"], "split": name})
    return Path(cfg["cache_dir"]).expanduser() / "reference" / f"{key}.pt"


def precomputed_reference(cfg: dict, start: str, pairs: list, name: str, device, pad_id: int) -> PairLogps:
    """Reference log-probs of a data split, computed once and cached on disk for the sweep's other trials."""
    path = reference_cache_path(cfg, start, name)
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        return PairLogps(**saved)
    ref = models.load_model(start, device, trainable=False)
    out = pair_logps(ref, pairs, cfg["evaluation"]["batch_size"], pad_id, device)
    del ref
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(vars(out), tmp)
    os.replace(tmp, path)  # atomic: a concurrent trial reads either nothing or the whole file
    return out


def run_trial(cfg: dict, report: Report) -> dict:
    """Train and evaluate one policy; report training metrics every ``log_every`` steps and the final ones."""
    t_start = time.perf_counter()
    device = models.pick_device()
    torch.set_num_threads(max(1, int(cfg.get("resources", {}).get("cpus", 1))))
    reset_peak_memory(device)
    seed_everything(cfg["seed"])
    start = cfg["start"]["path"]
    m = cfg["model"]
    dtype = models.pick_dtype(m["dtype"], device)
    tokenizer = models.load_tokenizer(start, m["trust_remote_code"])
    policy = models.load_model(
        start, device, dtype, m["trust_remote_code"], True, m["gradient_checkpointing"]
    )
    train_pairs, eval_pairs, eval_rows = tokenized_splits(cfg, tokenizer)
    pad = tokenizer.pad_token_id
    method, hp, tr = cfg["method"], cfg["hparams"], cfg["training"]

    t_train = time.perf_counter()
    ref_model = ref_train = None
    if cfg["reference"] == "online":
        ref_model = models.load_model(start, device, dtype, m["trust_remote_code"], trainable=False)
    elif cfg["reference"] == "precomputed":
        ref_train = precomputed_reference(cfg, start, train_pairs, "train", device, pad)

    lengths = [p.length for p in train_pairs]

    def make_batches(epoch: int) -> list[dict]:
        out = []
        for idx in data_mod.batch_indices(
            lengths, tr["batch_size"], cfg["seed"] * 1000 + epoch, tr["group_by_length"]
        ):
            batch = {
                k: v.to(device) for k, v in data_mod.collate_pairs([train_pairs[i] for i in idx], pad).items()
            }
            batch["index"] = torch.tensor(idx, device=device)
            out.append(batch)
        return out

    def loss_fn(batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logps, lens = sequence_logps(policy, batch)
        b = logps.shape[0] // 2
        ref_w = ref_l = None
        if ref_model is not None:
            with torch.no_grad():
                ref_logps, _ = sequence_logps(ref_model, batch)
            ref_w, ref_l = ref_logps[:b], ref_logps[b:]
        elif ref_train is not None:
            ref_w, ref_l = (
                ref_train.chosen[batch["index"].cpu()].to(device),
                ref_train.rejected[batch["index"].cpu()].to(device),
            )
        per_pair, r_w, r_l = losses.preference_loss(
            method, logps[:b], logps[b:], lens[:b], lens[b:], ref_w, ref_l, **hp
        )
        loss = per_pair.mean()
        return loss, {"train_loss": loss.item(), "train_reward_accuracy": (r_w > r_l).float().mean().item()}

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
        result = train(policy, make_batches, loss_fn, settings, on_log)
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
