"""The memory plan of a sweep, before launch: each method entry's estimated peak memory per worker, the
trials that fit on one GPU, and the sweep's GPU-hours (printed by ``--dry-run``; checked at launch).

The estimate adds up, per worker (numbers in ``docs/memory.md``, validated on CPU there):

* weights: a full policy's float32 master weights (single process), or the compute dtype's copy
  (DeepSpeed, which keeps float32 masters with the optimizer); a LoRA policy's frozen start point in
  the compute dtype plus its float32 adapter;
* gradients and AdamW state of what is trained (the whole policy or the adapter), split between the
  workers by ZeRO (stage 1: optimizer, 2: + gradients, 3: + weights) or moved to CPU by ``offload``;
* activations kept for the backward pass of one micro-batch at the longest pairs (``batch_size`` pairs
  of 2 x ``max_length`` tokens: the prompt once, both responses), per decoder layer, or with
  gradient checkpointing each layer's input plus one layer's; and the response positions' logits;
* the reference: an online reference model in the compute dtype (a LoRA policy's is its own
  switched-off adapter: nothing); a precomputed one is loaded once, by the sweep's first trial, while
  the policy waits (its own phase);
* evaluation: the held-out batches' forward passes and logits (no gradients).

The peak is the largest of the phases (training, evaluation, reference precomputation). Ray-free;
reads at most a model's ``config.json`` (a local directory or the hub's local cache, never the network).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate import losses, models
from ablate.data import synthetic
from ablate.spec.expand import entry_label, grid_points, lora_values
from ablate.spec.schema import LoraConfig, MethodEntry, SweepSpec, TrainingConfig

GB = 2**30  # as GPU memory is quoted (an "80GB" H100 has 80 GiB)
ADAMW_STATE = 8  # bytes per trained parameter: two float32 moments
# Public configs of the paper's models, so that a dry run needs no download for them.
_LLAMA3_8B = {"vocab_size": 128256, "hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 14336,
              "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": False}  # fmt: skip
_MISTRAL_7B = {**_LLAMA3_8B, "vocab_size": 32000}
KNOWN_CONFIGS = {
    "meta-llama/Meta-Llama-3-8B": _LLAMA3_8B,
    "meta-llama/Meta-Llama-3-8B-Instruct": _LLAMA3_8B,
    "princeton-nlp/Llama-3-Base-8B-SFT": _LLAMA3_8B,
    "mistralai/Mistral-7B-v0.1": _MISTRAL_7B,
    "mistralai/Mistral-7B-Instruct-v0.2": _MISTRAL_7B,
    "alignment-handbook/zephyr-7b-sft-full": _MISTRAL_7B,
}
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# GPU memory per GPU of cloud instance types a cluster.yaml may name (what nvidia-smi reports, rounded).
INSTANCE_GPU_MEMORY_GB = {
    "p5.48xlarge": 80, "p5e.48xlarge": 141, "p5en.48xlarge": 141, "p4de.24xlarge": 80,
    "p4d.24xlarge": 40, "g6e": 48, "g6": 24, "g5": 24, "g4dn": 16,
}  # fmt: skip


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer's sizes (Llama/Mistral layout: attention, gated MLP, two norms)."""

    vocab: int
    hidden: int
    layers: int
    ffn: int
    heads: int
    kv: int  # width of the key (and value) projections: head_dim x key/value heads
    tied: bool

    @classmethod
    def of(cls, config: dict[str, Any]) -> ModelShape:
        config = config.get("text_config") or config
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        return cls(
            vocab=config["vocab_size"], hidden=config["hidden_size"], layers=config["num_hidden_layers"],
            ffn=config["intermediate_size"], heads=heads,
            kv=head_dim * config.get("num_key_value_heads", heads), tied=bool(config.get("tie_word_embeddings")),
        )  # fmt: skip

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of a decoder layer."""
        d, f, kv = self.hidden, self.ffn, self.kv
        return {"q_proj": (d, d), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (d, d),
                "gate_proj": (d, f), "up_proj": (d, f), "down_proj": (f, d)}  # fmt: skip

    @property
    def params(self) -> int:
        d = self.hidden
        per_layer = sum(i * o for i, o in self.linears().values()) + 2 * d  # + the two norms
        return self.vocab * d * (1 if self.tied else 2) + self.layers * per_layer + d

    def lora_params(self, lora: LoraConfig) -> int:
        targets = LINEARS if lora.target_modules == "all-linear" else lora.target_modules
        if isinstance(targets, str):  # a regular expression over module names, as peft takes it
            targets = [n for n in LINEARS if re.search(targets, n)]
        return self.layers * sum(lora.r * (i + o) for n, (i, o) in self.linears().items() if n in targets)


def model_shape(name_or_path: str, tiny: dict) -> ModelShape | None:
    """The start point's shape: the built-in model's, a local directory's or the hub cache's config.json,
    or one of ``KNOWN_CONFIGS``; None when it cannot be known offline."""
    if models.is_builtin(name_or_path):
        cfg = models.TinyModelConfig(**tiny)
        return ModelShape(len(synthetic.VOCAB), cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size,
                          cfg.num_attention_heads, cfg.hidden_size, True)  # fmt: skip
    path = Path(name_or_path).expanduser() / "config.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name_or_path, "config.json")
            path = Path(cached) if isinstance(cached, str) else path
        except Exception:  # not a valid repo id: no cache entry
            pass
    try:
        return ModelShape.of(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError):
        known = KNOWN_CONFIGS.get(name_or_path)
        return ModelShape.of(known) if known else None


@dataclass(frozen=True)
class Setup:
    """What decides a trial's memory besides the model's shape."""

    batch_size: int  # pairs per micro-batch per worker
    max_length: int
    eval_batch_size: int
    compute_bytes: int  # 2 (bf16/fp16) or 4 (float32)
    gradient_checkpointing: bool = False
    lora: LoraConfig | None = None
    reference: str | None = None  # online / precomputed / None
    workers: int = 1
    zero_stage: int | None = None  # None: a single-process trial (no DeepSpeed)
    offload: str = "none"


@dataclass
class Estimate:
    """Bytes per worker by part, the phases' peaks and the overall peak."""

    parts: dict[str, float] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    trainable: int = 0

    @property
    def peak(self) -> float:
        return max(self.phases.values())


def estimate(shape: ModelShape, s: Setup) -> Estimate:
    """The per-worker estimate of one trial setting (see the module docstring)."""
    c, P = s.compute_bytes, shape.params
    deepspeed = s.zero_stage is not None
    stage, w = (s.zero_stage or 0), s.workers
    trained = shape.lora_params(s.lora) if s.lora else P
    # Weights: the frozen start point (LoRA) or the policy; ZeRO-3 splits them between the workers.
    if s.lora is not None:
        weights = c * P + (c if deepspeed else 4) * trained
    else:
        weights = (c if deepspeed else 4) * P
    if stage == 3:
        weights /= w
    if s.offload == "all":
        weights = 0.0
    grads = (c if deepspeed else 4) * trained / (w if stage >= 2 else 1)
    optimizer = ADAMW_STATE * trained
    if deepspeed and (stage > 0 or c < 4):
        optimizer += 4 * trained  # DeepSpeed's float32 master copy
    optimizer /= w if stage >= 1 else 1
    if s.offload in ("optimizer", "all"):
        optimizer = 0.0
    reference = c * P / (w if stage == 3 else 1) if s.reference == "online" and s.lora is None else 0.0
    acts = activations(shape, s)
    # The backward pass frees a layer's activations as it makes that layer's gradients: the two do not
    # peak together (the head's gradient comes first, the embeddings' last).
    train = weights + optimizer + reference + max(acts, grads)
    evaluation = weights + reference + forward_only(shape, s.eval_batch_size, s.max_length, c)
    parts = {"weights": weights, "gradients": grads, "optimizer": optimizer, "activations": acts,
             "reference": reference}  # fmt: skip
    phases = {"training": train, "evaluation": evaluation}
    if s.reference == "precomputed":  # the sweep's first trial: the start point loaded beside the policy
        ref_model = c * P / (w if stage == 3 else 1)
        phases["precompute"] = weights + ref_model + forward_only(
            shape, s.eval_batch_size, s.max_length, c
        )
    return Estimate(parts, phases, trained)


def activations(shape: ModelShape, s: Setup) -> float:
    """The activations of one micro-batch at their peak, per worker: what autograd keeps of the forward
    pass for the backward pass, plus the largest temporary on top of it.

    Kept per token and decoder layer, a Llama-style layer holds 7 hidden-size tensors (the layer's input,
    two norm outputs, the rotated query, the attention output and its copy into o_proj, the residual sum),
    the rotated key and the value, 4 MLP-width tensors (gate, its activation, up, their product) and the
    attention's log-sum-exp per head; a LoRA adapter adds its rank per adapted layer. Gradient
    checkpointing keeps each layer's input and recomputes one layer at a time. After the last layer: the
    final norm (2 hidden-size tensors per token), and per response token its hidden state and the float32
    log-softmax over the vocabulary. The temporary on top: the head's backward pass (two float32
    vocabulary-size tensors per response token), or an online reference's forward pass, whichever is larger."""
    c, d = s.compute_bytes, shape.hidden
    tokens = s.batch_size * 2 * s.max_length
    responses = s.batch_size * 2 * (s.max_length - 1)
    adapted = len(LINEARS if s.lora is None or s.lora.target_modules == "all-linear" else s.lora.target_modules)
    per_layer = 7 * d + 2 * shape.kv + 4 * shape.ffn + shape.heads + (s.lora.r * adapted if s.lora else 0)
    layers = (shape.layers * d + per_layer) if s.gradient_checkpointing else shape.layers * per_layer
    kept = tokens * (layers + 3 * d) * c + responses * (d * c + 4 * shape.vocab)
    backward = responses * 2 * 4 * shape.vocab
    online = forward_only(shape, s.batch_size, s.max_length, c) if s.reference == "online" else 0.0
    return kept + max(backward, online)


def forward_only(shape: ModelShape, pairs: int, max_length: int, c: int) -> float:
    """A forward pass without gradients (evaluation, a reference): one layer's temporaries at a time
    (hidden state, norm, query/key/value and attention output, three MLP-width tensors), and the response
    positions' logits in the compute dtype, float32 and log-softmax."""
    tokens = pairs * 2 * max_length
    responses = pairs * 2 * (max_length - 1)
    layer = 4 * shape.hidden + 2 * shape.kv + 3 * shape.ffn
    return tokens * layer * c + responses * shape.vocab * logit_bytes(c)


def logit_bytes(c: int) -> int:
    """Bytes per vocabulary entry of a response position: its logit in the compute dtype, a float32 copy
    (none when computing in float32) and the float32 log-softmax."""
    return c + (4 if c != 4 else 0) + 4


# --------------------------------------------------------------------------------------------------
# A sweep's plan: per method entry, its largest setting
# --------------------------------------------------------------------------------------------------


@dataclass
class EntryMemory:
    """One method entry's estimate: its largest setting (LoRA rank, batch size), for every worker."""

    position: int
    label: str
    estimate: Estimate | None  # None: the model's shape is unknown offline
    lora: LoraConfig | None
    settings: int  # settings with different estimates (the largest is shown)
    gpus: float  # GPUs a worker reserves (resources.gpus or gpus_per_worker)
    workers: int
    zero_stage: int | None

    @property
    def fine_tuning(self) -> str:
        return f"LoRA r={self.lora.r}" if self.lora else "full"


def compute_bytes(spec: SweepSpec) -> int:
    """Bytes per value a trial computes in: ``auto`` is bf16 on a GPU, float32 on CPU (models.pick_dtype)."""
    dtype = spec.model.dtype
    if dtype == "auto":
        res = spec.resources
        on_gpu = (res.gpus_per_worker if spec.uses_deepspeed else res.gpus) > 0
        dtype = "bfloat16" if on_gpu else "float32"
    return 4 if dtype == "float32" else 2


def sweep_memory(spec: SweepSpec) -> list[EntryMemory]:
    """Every method entry's estimate (the largest over its training and LoRA grid points, a range's ends)."""
    shape = model_shape(spec.model.name_or_path, spec.model.tiny.model_dump())
    res, ds = spec.resources, spec.deepspeed
    stage = (ds.stage if ds else 3) if spec.uses_deepspeed else None
    offload = ds.offload if ds else "none"
    if ds is not None and ds.config:
        stage = int(json.loads(Path(ds.config).read_text()).get("zero_optimization", {}).get("stage", 0))
    workers = res.workers if spec.uses_deepspeed else 1
    gpus = res.gpus_per_worker if spec.uses_deepspeed else res.gpus
    out = []
    for i, entry in enumerate(spec.methods):
        lora = lora_values(spec, entry)
        points = [(tr, LoraConfig.model_validate(lo) if lo is not None else None)
                  for tr in grid_points(entry.training) for lo in (grid_points(lora) if lora else [None])]  # fmt: skip
        best: tuple[Estimate | None, LoraConfig | None] = (None, points[0][1])
        peaks = set()
        for tr, lo in points if shape is not None else []:
            training = TrainingConfig.model_validate({**spec.training.model_dump(), **tr})
            e = estimate(shape, Setup(
                training.batch_size, spec.data.max_length, spec.evaluation.batch_size, compute_bytes(spec),
                spec.model.gradient_checkpointing, lo, _reference(entry), workers, stage, offload,
            ))  # fmt: skip
            peaks.add(round(e.peak))
            if best[0] is None or e.peak > best[0].peak:
                best = (e, lo)
        label = entry_label(entry, lora)
        out.append(EntryMemory(i, label, best[0], best[1], len(peaks), gpus, workers, stage))
    return out


def _reference(entry: MethodEntry) -> str | None:
    return entry.reference if losses.needs_reference(entry.method) else None


def parse_size(text: str) -> float:
    """``80GB``, ``141 GiB``, ``24000MB`` -> bytes (GB = GiB = 2**30, as GPU memory is quoted)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]i?B?)?\s*", text, re.I)
    if not m:
        raise ValueError(f"{text!r} is not a size; write e.g. 80GB")
    unit = (m.group(2) or "GB")[0].upper()
    return float(m.group(1)) * 2 ** {"K": 10, "M": 20, "G": 30, "T": 40}[unit]


def cluster_gpu_memory(path: str | Path) -> tuple[float, str]:
    """GPU memory of the GPU node type of a Ray cluster launcher file (``available_node_types``), by
    its ``InstanceType`` (``INSTANCE_GPU_MEMORY_GB``): (bytes, what it is)."""
    import yaml

    nodes = (yaml.safe_load(Path(path).read_text()) or {}).get("available_node_types") or {}
    for name, node in nodes.items():
        instance = str((node.get("node_config") or {}).get("InstanceType", ""))
        for known, gb in INSTANCE_GPU_MEMORY_GB.items():
            if instance == known or instance.startswith(known + "."):
                return gb * GB, f"{name}: {instance}, {gb} GB per GPU"
    raise ValueError(
        f"no node type with a known GPU instance type ({', '.join(INSTANCE_GPU_MEMORY_GB)}); pass --gpu-memory"
    )


def gb(x: float) -> str:
    return f"{x / GB:.1f} GB" if x >= GB else f"{x / 2**20:.3g} MB"


def per_gpu(e: EntryMemory, gpu_memory: float) -> int:
    """Workers of this entry one GPU holds by memory."""
    return math.floor(gpu_memory / e.estimate.peak) if e.estimate and e.estimate.peak > 0 else 0


def misfit(e: EntryMemory, gpu_memory: float | None) -> str | None:
    """Why this entry's workers do not fit the GPU memory they reserve, or None."""
    if e.estimate is None or gpu_memory is None or e.gpus <= 0:
        return None
    budget = gpu_memory * min(e.gpus, 1.0)  # a fraction of a GPU: that share of its memory
    if e.estimate.peak <= budget:
        return None
    share = f"{e.gpus:g} of a GPU: {gb(budget)}" if e.gpus < 1 else f"one GPU: {gb(budget)}"
    parts = ", ".join(f"{k} {gb(v)}" for k, v in e.estimate.parts.items() if v)
    return (
        f"methods.{e.position} ({e.label}): a trial needs an estimated {gb(e.estimate.peak)} per worker "
        f"({parts}; {e.fine_tuning}, {_zero(e)}), more than its {share}. Make it fit with LoRA "
        "(`model.lora: {r: 16}`), ZeRO-3 over more workers (`resources: {workers: 8, gpus_per_worker: 1}`, "
        "`deepspeed: {stage: 3}`), `model.gradient_checkpointing: true`, or a smaller `training.batch_size` "
        "(raise `training.grad_accum` to keep the global batch); or pass --force to launch anyway"
    )


def _zero(e: EntryMemory) -> str:
    return "one process" if e.zero_stage is None else f"ZeRO-{e.zero_stage} over {e.workers} workers"


def lines(entries: list[EntryMemory], spec: SweepSpec, gpu_memory: float | None, source: str,
          trials: int, trial_hours: float | None) -> list[str]:  # fmt: skip
    """The dry run's memory plan: a row per method entry, and the sweep's GPU-hours."""
    dtype = "bf16/fp16" if compute_bytes(spec) == 2 else "float32"
    head = f"memory plan: estimated peak per worker ({dtype} compute"
    out = [head + (f"; GPU memory {gb(gpu_memory)} from {source})" if gpu_memory else "; no GPU memory given: --gpu-memory 80GB or --cluster cluster.yaml)")]
    out.append(f"{'#':>3}  {'label':<22} {'fine-tuning':<12} {'ZeRO':<6} {'peak':>9} {'peak in':<10} {'weights':>9} "
               f"{'grads':>9} {'optim.':>9} {'activ.':>9} {'ref.':>9} {'trainable':>15}  per GPU")  # fmt: skip
    for e in entries:
        zero = "-" if e.zero_stage is None else f"{e.zero_stage}x{e.workers}"
        if e.estimate is None:
            out.append(f"{e.position:>3}  {e.label:<22} {e.fine_tuning:<12} {zero:<6} unknown: "
                       f"{spec.model.name_or_path}'s config.json is not available offline")  # fmt: skip
            continue
        p = e.estimate.parts
        fits = str(per_gpu(e, gpu_memory)) if gpu_memory else "-"
        if gpu_memory and misfit(e, gpu_memory):
            fits += " (does not fit)"
        more = f"  (largest of {e.settings} settings)" if e.settings > 1 else ""
        phase = max(e.estimate.phases, key=e.estimate.phases.get)
        out.append(
            f"{e.position:>3}  {e.label:<22} {e.fine_tuning:<12} {zero:<6} {gb(e.estimate.peak):>9} {phase:<10} "
            f"{gb(p['weights']):>9} {gb(p['gradients']):>9} {gb(p['optimizer']):>9} {gb(p['activations']):>9} "
            f"{gb(p['reference']):>9} {e.estimate.trainable:>15,}  {fits}{more}"
        )
    if trial_hours is not None:
        gpus = (spec.resources.workers * spec.resources.gpus_per_worker if spec.uses_deepspeed
                else spec.resources.gpus)  # fmt: skip
        out.append(f"GPU-hours: {trials} trials x {gpus:g} GPUs x {trial_hours:g} h = {trials * gpus * trial_hours:,.1f}")
    return out
