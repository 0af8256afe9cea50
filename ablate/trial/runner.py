"""One trial, written once: load -> reference -> train -> evaluate -> final record.

``run_trial(config, report)`` takes a trial config (the plain dict of ``ablate.spec.expand``, or a
``TrialConfig``) and a ``report(metrics)`` callback, and runs on a backend (``ablate.trial.backends``): one
process by default, or, in a multi-worker trial, on every Ray Train worker at once. Ray-free:
``ablate.sweep.tune`` passes Ray Tune's report, a checkpoint callback and the state to resume from.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ablate import faults, models, records
from ablate.data import shared_prompt
from ablate.provenance import write as write_provenance
from ablate.trial import checkpoint as ckpt_mod
from ablate.trial import config as trial_config
from ablate.trial import evaluate, preference, reference, worker_cache
from ablate.trial.backends import Backend, StepperSetup
from ablate.trial.backends.single import SingleProcess
from ablate.trial.config import TrialConfig
from ablate.trial.memory_probe import MemoryProbe
from ablate.trial.train import Diverged, Hooks, Stepper, TrainSettings, total_steps, train

Report = Callable[[dict], None]
ReportCheckpoint = Callable[[dict, str], None]  # (metrics, checkpoint directory)
SaveArtifact = Callable[[str, bytes], None]  # (file name, content) -> a file in the trial's directory
HELDOUT_FILE = records.HELDOUT_FILE  # per-response held-out data, read by analysis/ for its figures


def run_trial(
    cfg: dict | TrialConfig,
    report: Report,
    save_artifact: SaveArtifact | None = None,
    report_checkpoint: ReportCheckpoint | None = None,
    resume: dict | None = None,
    backend: Backend | None = None,
) -> dict:
    """Train and evaluate one policy; report training metrics every ``log_every`` steps and the final ones.

    ``save_artifact``, when given, receives ``heldout.json`` (per-response held-out data) before the
    final report. With ``report_checkpoint`` (and a backend that supports it), every
    ``training.checkpoint_every`` steps the metrics are reported through it with a checkpoint
    directory (``ablate.trial.checkpoint``); ``resume`` is such a checkpoint's state, from which training
    continues. A loss that becomes NaN or infinite ends the trial at once with status
    ``diverged: ...`` and its last finite training metrics."""
    cfg = trial_config.parse(cfg)
    clock = Clock()
    backend = backend or SingleProcess(cfg, save_artifact)
    if save_artifact is not None and backend.is_main:  # what made its numbers (ablate.provenance)
        write_provenance(cfg, backend.world, save_artifact)
    memory = MemoryProbe.start(backend.device)
    metrics = train_and_evaluate(cfg, backend, clock, Reporter(report, report_checkpoint), save_artifact, resume)
    # The trial's objects are gone now. In a reused worker, what the process still holds that it did
    # not hold at the start (caches the trial filled, modules it imported, kernels it set up) is the
    # worker's from now on, not this trial's working memory (ablate.trial.memory_probe).
    end = memory.settled_mb() if backend.process_reused else None
    # The busiest worker's: the process's peak, the trial's own growth, and the CPU time of this
    # attempt's training (unlike wall time, it does not stretch with the machine's other load).
    metrics["peak_memory_mb"], metrics["peak_memory_growth_mb"], metrics["runtime_cpu_s"] = backend.reduce(
        [memory.peak_mb(), memory.growth_mb(end), metrics["runtime_cpu_s"]], "max"
    )
    metrics.update(clock.metrics(), **backend.trial_metrics())
    report(metrics)
    return metrics


def train_and_evaluate(
    cfg: TrialConfig, backend: Backend, clock: Clock, reporter: Reporter, save_artifact: SaveArtifact | None,
    resume: dict | None,
) -> dict:  # fmt: skip
    """The trial's phases (load, reference, train, evaluate) and its final metrics but memory."""
    seed_everything(cfg.seed)
    tokenizer = models.load_tokenizer(cfg.start.path, cfg.model.trust_remote_code)
    policy = backend.load_policy(cfg)
    params = models.parameter_counts(policy)  # trainable: the adapter of a LoRA policy
    splits = worker_cache.tokenized_splits(cfg, tokenizer)
    start = evaluate.before_training(cfg, backend, policy, tokenizer, splits) if resume is None else None
    clock.start_training()
    ref = reference.prepare(cfg, backend, splits.train, tokenizer.pad_token_id)
    prior = Prior.of(resume, policy, cfg.lora is not None)
    run = train_policy(cfg, backend, policy, ref, splits, tokenizer.pad_token_id, reporter, prior, clock)

    metrics = {"status": run.status, "train_loss": run.last.get("train_loss", float("nan")),
               "runtime_s": prior.runtime_s + run.runtime_s, "runtime_cpu_s": clock.training_cpu_s(),
               **run.extra, **splits.counts, **params}  # fmt: skip
    if prior.step:
        metrics["resumed_from_step"] = prior.step
    if run.status == "finished":
        with backend.compute():
            held_out, records = evaluate.evaluate_policy(
                cfg, backend, run.model, ref.held_out(splits.held_out, run.model), tokenizer, splits, start
            )
        metrics.update(held_out)
        if save_artifact is not None and backend.is_main:
            save_artifact(HELDOUT_FILE, json.dumps(records).encode())
        metrics["tokens_per_s"] = backend.reduce([run.tokens])[0] / max(run.runtime_s, 1e-9)  # of this attempt
        metrics.update(backend.finish(tokenizer))
    metrics["steps"] = run.steps
    return metrics


@dataclass
class Clock:
    """A trial's times: entry, the start of training (reference included) and the end of its first step."""

    start: float = field(default_factory=time.perf_counter)
    started_at: float = field(default_factory=time.time)  # Unix time, as Ray's clocks
    train_start: float = 0.0
    train_start_cpu: float = 0.0
    first_step: float | None = None

    def start_training(self) -> None:
        self.train_start, self.train_start_cpu = time.perf_counter(), time.process_time()

    def after_step(self, _step: int) -> None:
        if self.first_step is None:  # start-up cost of the trial: entry to the end of its first step
            self.first_step = time.perf_counter()

    def training_s(self) -> float:
        return time.perf_counter() - self.train_start

    def training_cpu_s(self) -> float:
        """The process's CPU time since training started (all its threads)."""
        return time.process_time() - self.train_start_cpu

    def metrics(self) -> dict[str, float]:
        # started_at orders the trials of a sweep by when they started (the report's order check).
        out = {"trial_s": time.perf_counter() - self.start, "started_at": self.started_at}
        if self.first_step is not None:
            out["first_step_s"] = self.first_step - self.start
            out["first_step_at"] = self.started_at + out["first_step_s"]
        return out


@dataclass
class Prior:
    """What an earlier attempt of the trial left in its checkpoint (nothing for a fresh start)."""

    step: int = 0
    runtime_s: float = 0.0
    train_state: dict | None = None
    last_metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, state: dict | None, policy: torch.nn.Module, adapter_only: bool = False) -> Prior:
        """Restore the policy (``adapter_only``: a LoRA policy's adapter), the RNG and the optimizer state
        from a checkpoint's ``state``."""
        if state is None:
            return cls()
        ckpt_mod.restore_model(policy, state["model"], adapter_only)
        ckpt_mod.restore_rng(state)
        train_state = {"optimizer": state["optimizer"], "scheduler": state["scheduler"]}
        return cls(state["step"], state["runtime_s"], train_state, dict(state["last_metrics"]))


@dataclass
class TrainRun:
    status: str
    steps: int
    tokens: int
    runtime_s: float
    last: dict[str, float]  # the last training metrics
    model: torch.nn.Module  # the trained policy, as the backend holds it for evaluation
    extra: dict = field(default_factory=dict)


@dataclass
class Reporter:
    """Where the training rows go: ``report``, or with a checkpoint ``report_checkpoint``."""

    report: Report
    report_checkpoint: ReportCheckpoint | None = None


def train_policy(
    cfg: TrialConfig, backend: Backend, policy: torch.nn.Module, ref: reference.Reference,
    splits: worker_cache.Splits, pad: int, reporter: Reporter, prior: Prior, clock: Clock,
) -> TrainRun:  # fmt: skip
    """The training phase: the trial's batches, loss and step hooks, then ``ablate.trial.train.train``."""
    tr = cfg.training
    checkpoints = reporter.report_checkpoint is not None and backend.checkpoints
    settings = TrainSettings(
        learning_rate=tr.learning_rate, epochs=tr.epochs, grad_accum=tr.grad_accum, warmup_ratio=tr.warmup_ratio,
        weight_decay=tr.weight_decay, max_grad_norm=tr.max_grad_norm, log_every=tr.log_every,
        checkpoint_every=tr.checkpoint_every if checkpoints else 0,
    )  # fmt: skip

    def batches_of(epoch: int) -> list[list[int]]:  # global micro-batches, split between the workers
        w = backend.world
        return preference.batch_order(splits.train, tr.batch_size * w, cfg.seed, epoch, tr.group_by_length, w)

    faulty = FaultHook(cfg.index, prior.step, cfg.stage)

    def loss_for(model: torch.nn.Module):
        ref_model, ref_context = ref.online(model)
        loss_fn = preference.loss_function(model, cfg.method, cfg.hparams, ref_model, ref.train, ref_context)
        return faulty.poisoned(loss_fn)

    collate = preference.collator(splits.train, pad, backend.device, shared_prompt.usable(policy, splits.train))
    total = total_steps(batches_of, settings)
    stepper = backend.stepper(policy, StepperSetup(loss_for, settings, total, collate, prior.train_state))
    logger = StepLogger(cfg, backend, stepper, ref, splits, pad, reporter, prior, clock, total, settings.checkpoint_every)
    hooks = Hooks(before_step=faulty.before_step, after_step=clock.after_step, on_log=logger.on_log)
    try:
        result = train(stepper, batches_of, settings, hooks, prior.step)
    except Diverged as e:
        # Stop at once: no evaluation of a model whose next step was not finite; keep the last
        # finite training metrics (those logged, updated by the finite steps since the last log).
        logger.last.update(e.metrics or {})
        extra = {"diverged_at_step": e.step, "train_reward_accuracy": logger.last.get("train_reward_accuracy")}
        return TrainRun(f"diverged: {e} at step {e.step}", (e.step or 1) - 1, 0, clock.training_s(),
                        logger.last, stepper.model, extra)  # fmt: skip
    return TrainRun("finished", result.steps, result.tokens, clock.training_s(), logger.last, stepper.model)


class FaultHook:
    """The ``ABLATE_FAULT`` testing hook (``ablate.faults``) of this attempt of the trial."""

    def __init__(self, index: int, start_step: int, stage: str | None = None) -> None:
        self.index = index
        self.injected = faults.for_trial(index, start_step, stage=stage)
        self.poison: list[float] = []

    def before_step(self, step: int) -> None:
        kind = self.injected.get(step)
        if kind in ("nan", "inf"):
            self.poison.append(float(kind))
        elif kind:
            faults.fire(kind, step, self.index)

    def poisoned(self, loss_fn):
        def loss_with_fault(batch: dict):
            loss, stats = loss_fn(batch)
            if self.poison:  # an injected nan/inf fault
                loss = loss + self.poison.pop()
            return loss, stats

        return loss_with_fault


class StepLogger:
    """What a trial does at each logging step: keep the last metrics, add held-out metrics every
    ``evaluation.every_steps`` (for an early-stopping scheduler), and report the row, with a
    checkpoint every ``training.checkpoint_every`` steps."""

    def __init__(
        self, cfg: TrialConfig, backend: Backend, stepper: Stepper, ref: reference.Reference,
        splits: worker_cache.Splits, pad: int, reporter: Reporter, prior: Prior, clock: Clock, total: int,
        checkpoint_every: int,
    ) -> None:  # fmt: skip
        self.cfg, self.backend, self.stepper, self.ref = cfg, backend, stepper, ref
        self.splits, self.pad, self.reporter, self.prior, self.clock = splits, pad, reporter, prior, clock
        self.last: dict[str, float] = dict(prior.last_metrics)
        self.every = cfg.evaluation.every_steps
        self.next_eval = self.every
        # The last step is evaluated in full right after training; a periodic evaluation there would
        # only give an early-stopping scheduler the chance to stop a trial that is already done.
        self.last_step = total
        self.checkpoint_every = checkpoint_every  # 0 without a checkpoint callback or backend support

    def on_log(self, step: int, logged: dict[str, float]) -> None:
        self.last.update(logged)
        row = {"step": step, **logged}
        if self.every and self.next_eval <= step < self.last_step:
            self.next_eval = (step // self.every + 1) * self.every
            with self.backend.compute():
                ref_logps = self.ref.held_out(self.splits.held_out, self.stepper.model)
                row.update(evaluate.held_out_preference(
                    self.cfg, self.backend, self.stepper.model, ref_logps, self.splits.held_out, self.pad
                ))  # fmt: skip
        if self.checkpoint_every and step % self.checkpoint_every == 0 and self.reporter.report_checkpoint:
            elapsed = self.prior.runtime_s + self.clock.training_s()
            with tempfile.TemporaryDirectory(prefix="ablate-checkpoint-") as d:
                ckpt_mod.save(d, self.stepper.model, self.stepper.state(), step, self.last, elapsed,
                              adapter_only=self.cfg.lora is not None)  # fmt: skip
                self.reporter.report_checkpoint(row, d)  # Ray copies it into storage before returning
        else:
            self.reporter.report(row)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
