"""The performance paths give the same numbers as the plain ones: response-only LM head, the causal
kernel for right-padded batches, length-sorted reference batches, and the per-worker caches."""

import copy
import json
import shutil

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ablate.data import shared_prompt
from ablate.data import sources as datasource
from ablate.data import tokens as data_mod
from ablate.data.tokens import IGNORE_INDEX, TokenizedPair, collate_pairs
from ablate.models import load_tokenizer
from ablate.trial import worker_cache
from ablate.trial.config import parse as parse_trial
from ablate.trial.logps import pair_logps
from ablate.trial.runner import run_trial
from ablate.trial.train import adamw, causal_mask, response_head, sequence_logps
from tests.conftest import make_trial


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def random_pairs(n: int, seed: int = 0) -> list[TokenizedPair]:
    g = torch.Generator().manual_seed(seed)

    def ids(lo, hi):
        return torch.randint(3, 50, (int(torch.randint(lo, hi, (1,), generator=g)),), generator=g).tolist()

    return [TokenizedPair([1, *ids(2, 9)], [*ids(1, 12), 2], [*ids(1, 12), 2]) for _ in range(n)]


def full_logits_logps(model, batch) -> torch.Tensor:
    """The textbook computation: full logits under the padding mask, log-softmax, masked sum."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE_INDEX
    logps = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    return (logps * mask).sum(-1)


def test_response_only_head_matches_full_logits_with_gradients():
    model = tiny_llama()
    batch = collate_pairs(random_pairs(6), pad_id=0)
    assert response_head(model) is not None
    fast, counts = sequence_logps(model, batch)
    slow = full_logits_logps(model, batch)
    assert torch.allclose(fast, slow, atol=1e-4)
    assert counts.tolist() == (batch["labels"][:, 1:] != IGNORE_INDEX).sum(-1).tolist()
    g_fast = torch.autograd.grad(fast.sum(), model.model.embed_tokens.weight)[0]
    g_slow = torch.autograd.grad(full_logits_logps(model, batch).sum(), model.model.embed_tokens.weight)[0]
    assert torch.allclose(g_fast, g_slow, atol=1e-4)


def test_models_with_a_transformed_head_take_their_own_forward():
    model = tiny_llama()
    model.config.logit_scale = 1.0  # as Cohere-style models have: logits are not a plain lm_head output
    assert response_head(model) is None
    batch = collate_pairs(random_pairs(4), pad_id=0)
    assert torch.allclose(sequence_logps(model, batch)[0], full_logits_logps(model, batch), atol=1e-4)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_prompt_layout_gives_the_usual_logps_and_gradients(attention):
    model = tiny_llama()
    model.config._attn_implementation = attention
    pairs = random_pairs(5, seed=2)
    assert shared_prompt.usable(model, pairs)
    usual, usual_counts = sequence_logps(model, collate_pairs(pairs, pad_id=0))
    shared, shared_counts = shared_prompt.pair_logps(model, shared_prompt.collate(pairs, pad_id=0))
    assert torch.allclose(shared, usual, atol=1e-4)
    assert shared_counts.tolist() == usual_counts.tolist()
    weight = model.model.layers[0].self_attn.q_proj.weight
    g_usual = torch.autograd.grad(usual.sum(), weight)[0]
    g_shared = torch.autograd.grad(shared.sum(), weight)[0]
    assert torch.allclose(g_shared, g_usual, atol=1e-4)


def test_shared_prompt_mask_keeps_the_responses_apart():
    pair = TokenizedPair([1, 5], [6, 2], [7, 8, 2])  # row: p p c c r r r pad...
    batch = shared_prompt.collate([pair, TokenizedPair([1, 5, 5, 5], [6, 2], [7, 8, 2])], pad_id=0)
    allowed = shared_prompt.attention_mask(batch["segments"], torch.float32)[0, 0] == 0
    assert allowed[3].tolist()[:7] == [True, True, True, True, False, False, False]  # 2nd chosen token
    assert allowed[5].tolist()[:7] == [True, True, False, False, True, True, False]  # 2nd rejected token
    assert batch["position_ids"][0].tolist()[:7] == [0, 1, 2, 3, 2, 3, 4]
    # both responses' first tokens are predicted from the prompt's last position
    assert batch["src_col"][:4].tolist() == [1, 2, 1, 4]


def test_shared_prompt_is_not_used_where_it_cannot_be():
    model = tiny_llama()
    assert not shared_prompt.usable(model, [TokenizedPair([], [6, 2], [7, 2])])
    model.config._attn_implementation = "flash_attention_2"
    assert not shared_prompt.usable(model, random_pairs(2))


def test_padding_mask_is_dropped_only_for_right_padding():
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    assert causal_mask(right) is None
    assert causal_mask(left) is left


def test_reference_logps_keep_the_order_of_the_pairs():
    model = tiny_llama()
    pairs = random_pairs(11, seed=1)
    together = pair_logps(model, pairs, batch_size=4, pad_id=0, device="cpu")
    for i, p in enumerate(pairs):
        alone = pair_logps(model, [p], batch_size=1, pad_id=0, device="cpu")
        assert together.chosen[i] == pytest.approx(alone.chosen[0].item(), abs=1e-4)
        assert together.rejected_len[i] == alone.rejected_len[0]


def test_fused_adamw_on_cpu():
    params = list(tiny_llama().parameters())
    assert adamw(params, 1e-3, 0.0).defaults["fused"] is True


def test_tokenized_data_is_cached_on_disk_and_reused(small_spec, start, tmp_path):
    cfg = make_trial(small_spec, start, "simpo")
    cfg["cache_dir"] = str(tmp_path)
    tokenizer = load_tokenizer(start["path"])
    worker_cache._tokenized.clear()  # earlier trials in this process may have kept it
    first = worker_cache.tokenized_splits(parse_trial(cfg), tokenizer)
    files = list((tmp_path / "tokenized").glob("*.json"))
    assert len(files) == 1
    worker_cache._tokenized.clear()  # a new worker process: only the disk cache is left
    again = worker_cache.tokenized_splits(parse_trial(cfg), tokenizer)
    assert again.train == first.train and again.held_out == first.held_out
    assert again.held_out_rows == first.held_out_rows
    train_rows, _ = datasource.load_splits(cfg["data"])
    d = cfg["data"]
    assert first.train == data_mod.tokenize_pairs(tokenizer, train_rows, d["max_length"], d["max_prompt_length"])
    other = {**cfg, "data": {**cfg["data"], "max_length": cfg["data"]["max_length"] - 8}}
    worker_cache.tokenized_splits(parse_trial(other), tokenizer)
    assert len(list((tmp_path / "tokenized").glob("*.json"))) == 2
    assert json.loads(files[0].read_text())["eval_rows"] == first.held_out_rows


def test_cached_start_point_hands_out_independent_copies(start):
    a = worker_cache.start_point_model(start["path"], torch.device("cpu"))
    b = worker_cache.start_point_model(start["path"], torch.device("cpu"), trainable=False)
    assert a.training and all(p.requires_grad for p in a.parameters())
    assert not b.training and not any(p.requires_grad for p in b.parameters())
    before = copy.deepcopy(b.state_dict())
    with torch.no_grad():
        for p in a.parameters():
            p.add_(1.0)
    c = worker_cache.start_point_model(start["path"], torch.device("cpu"))
    for k, v in c.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_trial_reports_its_start_up(small_spec, start):
    final = run_trial(make_trial(small_spec, start, "simpo"), lambda _: None)
    assert 0 < final["first_step_s"] < final["trial_s"]
    assert final["first_step_at"] > final["process_started_at"] > 1e9 and final["process_id"] > 0


def test_worker_cache_keeps_one_start_point_in_each_dtype(start, tmp_path):
    # bf16 DPO loads a float32 policy and a bf16 reference from the same start point: both stay cached.
    worker_cache._models.clear()
    worker_cache.start_point_model(start["path"], torch.device("cpu"), torch.float32)
    worker_cache.start_point_model(start["path"], torch.device("cpu"), torch.bfloat16, trainable=False)
    assert sorted(k[1] for k in worker_cache._models) == ["torch.bfloat16", "torch.float32"]
    other = tmp_path / "other-start"
    shutil.copytree(start["path"], other)
    worker_cache.start_point_model(str(other), torch.device("cpu"))  # another start point replaces them
    assert [k[0] for k in worker_cache._models] == [str(other)]
