"""Policy and reference loading, and the tiny built-in model.

Every model, built-in or not, is loaded through ``from_pretrained`` from a hub id or a local
directory; the built-in preset is first written to a local directory with ``save_pretrained``.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from tokenizers import Tokenizer, models, pre_tokenizers
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from ablate.data import synthetic

BUILTIN_PREFIX = "builtin:"


class TinyModelConfig(BaseModel):
    """Shape of the built-in Llama-architecture model (``model.tiny`` in the sweep file)."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(64, ge=8)
    intermediate_size: int = Field(192, ge=8)
    num_hidden_layers: int = Field(2, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    max_position_embeddings: int = Field(128, ge=16)


def is_builtin(name_or_path: str) -> bool:
    return name_or_path.startswith(BUILTIN_PREFIX)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The dtype a trial computes in (``master_dtype`` gives the one its trained weights are kept in).
    ``auto``: bf16 on a GPU that supports it, float32 on CPU (bf16 is slower there)."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def master_dtype(compute: torch.dtype) -> torch.dtype:
    """The dtype a trained policy's weights are kept in: float32 under a 16-bit compute dtype.

    AdamW's updates at preference-optimisation learning rates (1e-7 to 1e-6) are far below bf16's
    resolution (about 2e-4 for a weight of 0.05), so bf16 weights would drop them: the float32
    master copy keeps them, as DeepSpeed's bf16 mode and HF Trainer's ``bf16=True`` do."""
    return torch.float32 if compute in (torch.bfloat16, torch.float16) else compute


# cuDNN's attention builds an execution graph for every new input shape (tens of ms of CPU time
# each), and length-grouped batches bring a new width almost every step: on an H200 it kept the GPU
# idle ~45 % of a trial. FlashAttention (causal batches) and memory-efficient attention (the
# shared-prompt mask) have no per-shape set-up.
GPU_ATTENTION = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)


def compute_context(device: torch.device, compute: torch.dtype) -> contextlib.AbstractContextManager:
    """Where a model's forward (and backward) runs: autocast to ``compute`` for a float32 policy
    (nothing for float32), and on a GPU, attention kernels without per-shape set-up."""
    stack = contextlib.ExitStack()
    if compute != torch.float32:
        stack.enter_context(torch.autocast(device.type, dtype=compute))
    if device.type == "cuda":
        stack.enter_context(sdpa_kernel(list(GPU_ATTENTION)))
    return stack


def build_builtin_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(synthetic.VOCAB)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def build_builtin_model(
    cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerFast, seed: int
) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_attention_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:  # many causal LMs ship without one; padding is masked anyway
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    name_or_path: str,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    trainable: bool = True,
    gradient_checkpointing: bool = False,
) -> torch.nn.Module:
    """A causal LM from a hub id or a local directory; frozen and in eval mode when not trainable."""
    if trust_remote_code:
        warnings.warn(
            f"Loading {name_or_path} with trust_remote_code=True: its code runs here.", stacklevel=2
        )
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path, dtype=dtype, trust_remote_code=trust_remote_code
    )
    return prepare(model.to(device), trainable, gradient_checkpointing)


def prepare(model: torch.nn.Module, trainable: bool, gradient_checkpointing: bool = False) -> torch.nn.Module:
    """A loaded model made trainable (train mode, optionally gradient checkpointing), or frozen in eval mode."""
    model.requires_grad_(trainable)
    model.train(trainable)
    if trainable and gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Trainable and total parameters (under ZeRO-3 each parameter's full size, not this worker's shard);
    a LoRA policy trains only its adapter."""

    def numel(p: torch.nn.Parameter) -> int:
        return int(getattr(p, "ds_numel", p.numel()))

    params = list(model.parameters())
    return {
        "trainable_params": sum(numel(p) for p in params if p.requires_grad),
        "total_params": sum(numel(p) for p in params),
    }


def model_exists(name_or_path: str) -> bool:
    """A cheap check before launching: a local path must hold a config.json; hub ids are not checked offline."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        return (p / "config.json").is_file()
    looks_local = name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1
    return not looks_local
