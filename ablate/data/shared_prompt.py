"""Preference pairs with the prompt computed once: one row per pair, ``prompt + chosen + rejected``.

In the usual layout a batch of B pairs is 2B rows, ``prompt + chosen`` then ``prompt + rejected``,
right-padded to the longest. That computes every prompt twice (a third of the tokens with short
responses, more with long prompts) and pads the shorter response of each pair up to the longer one.
Here each pair is one row; a 4-D attention mask lets chosen tokens see the prompt and the chosen
tokens before them, rejected tokens the prompt and the rejected tokens before them, and never each
other; position ids restart after the prompt for the rejected response, so every token sees exactly
what it sees in its own sequence. The prompt's last position predicts the first token of both
responses. Log-probs equal the usual layout's up to float rounding.

Needs a model that takes a custom 4-D mask and position ids: Hugging Face models with ``sdpa`` or
``eager`` attention (flash-attention kernels take no arbitrary mask, so they keep the usual layout).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from ablate.data.tokens import TokenizedPair
from ablate.trial.train import response_head

PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, 3
MASKABLE_ATTENTION = ("sdpa", "eager")


def supported(model: torch.nn.Module) -> bool:
    """Whether ``model`` can run the shared-prompt layout (a Hugging Face model taking 4-D masks)."""
    if not isinstance(model, PreTrainedModel):
        return False
    config = model.config.get_text_config()
    return getattr(config, "_attn_implementation", None) in MASKABLE_ATTENTION and getattr(
        config, "is_causal", True
    )


def usable(model: torch.nn.Module, pairs: list[TokenizedPair]) -> bool:
    """The layout fits the model and the data (every prompt has a token to predict the responses from)."""
    return supported(model) and all(p.prompt_ids for p in pairs)


def row_length(pair: TokenizedPair) -> int:
    return len(pair.prompt_ids) + len(pair.chosen_ids) + len(pair.rejected_ids)


def collate(pairs: list[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """One row per pair. Besides ``input_ids``, ``attention_mask`` (1 on real tokens; the 4-D mask is
    built from ``segments`` at forward time, in the model's dtype), ``position_ids`` and ``segments``,
    it lists every response token: the position whose output predicts it (``src_row``, ``src_col``),
    the token (``target``) and its sequence (``seq``: pair b's chosen is b, its rejected B + b)."""
    b = len(pairs)
    width = max(row_length(p) for p in pairs)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    seg = torch.full((b, width), PAD, dtype=torch.long)
    pos = torch.zeros((b, width), dtype=torch.long)
    src_row, src_col, target, seq = [], [], [], []
    for i, p in enumerate(pairs):
        n_p, n_c, n_r = len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)
        ids[i, : n_p + n_c + n_r] = torch.tensor(p.prompt_ids + p.chosen_ids + p.rejected_ids)
        seg[i, :n_p], seg[i, n_p : n_p + n_c], seg[i, n_p + n_c : n_p + n_c + n_r] = PROMPT, CHOSEN, REJECTED
        pos[i, : n_p + n_c] = torch.arange(n_p + n_c)
        pos[i, n_p + n_c : n_p + n_c + n_r] = torch.arange(n_p, n_p + n_r)
        # chosen token j sits at n_p + j and is predicted from n_p + j - 1 (the prompt's end for j = 0)
        src_col += list(range(n_p - 1, n_p + n_c - 1))
        target += p.chosen_ids
        seq += [i] * n_c
        # rejected token j sits at n_p + n_c + j; its predecessor is the prompt's end for j = 0
        src_col += [n_p - 1] + list(range(n_p + n_c, n_p + n_c + n_r - 1))
        target += p.rejected_ids
        seq += [b + i] * n_r
        src_row += [i] * (n_c + n_r)
    counts = torch.tensor([len(p.chosen_ids) for p in pairs] + [len(p.rejected_ids) for p in pairs])
    return {
        "input_ids": ids,
        "attention_mask": (seg != PAD).long(),
        "position_ids": pos,
        "segments": seg,
        "src_row": torch.tensor(src_row),
        "src_col": torch.tensor(src_col),
        "target": torch.tensor(target),
        "seq": torch.tensor(seq),
        "counts": counts,
    }


def attention_mask(segments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4-D mask [B, 1, L, L]: causal, responses see the prompt and themselves, not each other;
    padding sees only itself (so no row of the softmax is empty)."""
    width = segments.shape[1]
    idx = torch.arange(width, device=segments.device)
    causal = idx[None, :] <= idx[:, None]
    q, k = segments[:, :, None], segments[:, None, :]
    allowed = causal & ((k == q) | (k == PROMPT)) & (q != PAD) & (k != PAD)
    allowed |= torch.eye(width, dtype=torch.bool, device=segments.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def pair_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and token counts of a ``collate`` batch: the B chosen, then the B
    rejected, as ``ablate.trial.train.sequence_logps`` returns them for the usual layout."""
    dtype = next(model.parameters()).dtype
    inputs = {
        "input_ids": batch["input_ids"],
        "attention_mask": attention_mask(batch["segments"], dtype),
        "position_ids": batch["position_ids"],
        "use_cache": False,
    }
    rows, cols = batch["src_row"], batch["src_col"]
    head = response_head(model)
    if head is None:
        logits = model(**inputs).logits[rows, cols]
    else:
        backbone, lm_head = head
        logits = lm_head(backbone(**inputs).last_hidden_state[rows, cols])
    token_logps = -F.cross_entropy(logits.float(), batch["target"], reduction="none")
    sums = torch.zeros(batch["counts"].shape[0], dtype=token_logps.dtype, device=token_logps.device)
    return sums.index_add(0, batch["seq"], token_logps), batch["counts"]
