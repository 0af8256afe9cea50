import json

import torch

from ablate import models
from ablate.data import sources as datasource
from ablate.data import tokens as data
from ablate.data.tokens import IGNORE_INDEX


def tok():
    return models.build_builtin_tokenizer()


def test_prompt_tokens_are_masked_and_responses_end_with_eos():
    t = tok()
    pairs = data.tokenize_pairs(
        t, [{"prompt": "Q: w01 w02 A:", "chosen": "w01 w02", "rejected": "well w01"}], 32, 8
    )
    batch = data.collate_pairs(pairs, t.pad_token_id)
    prompt_len = len(pairs[0].prompt_ids)
    assert prompt_len == 5  # <bos> Q: w01 w02 A:
    assert pairs[0].prompt_ids[0] == t.bos_token_id
    # row 0 is chosen, row 1 rejected; prompt positions never carry a label
    assert (batch["labels"][:, :prompt_len] == IGNORE_INDEX).all()
    assert batch["labels"][0, prompt_len:].tolist() == t.convert_tokens_to_ids(["w01", "w02", "<eos>"])
    assert batch["labels"][1, prompt_len:].tolist() == t.convert_tokens_to_ids(["well", "w01", "<eos>"])
    assert batch["input_ids"].shape == (2, prompt_len + 3)
    assert batch["attention_mask"].sum().item() == 2 * (prompt_len + 3)


def test_padding_is_masked_in_labels_and_attention():
    t = tok()
    rows = [{"prompt": "Q: w01 A:", "chosen": "w01 really really really", "rejected": "w01"}]
    batch = data.collate_pairs(data.tokenize_pairs(t, rows, 32, 8), t.pad_token_id)
    assert batch["attention_mask"][1].tolist() == [1] * 6 + [0] * 3
    assert (batch["labels"][1, 6:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][1, 6:] == t.pad_token_id).all()


def test_truncation_keeps_prompt_end_and_cuts_responses():
    t = tok()
    prompt = "Q: " + " ".join(f"w{i:02d}" for i in range(10)) + " A:"
    rows = [{"prompt": prompt, "chosen": " ".join(["w09"] * 30), "rejected": "w09"}]
    (pair,) = data.tokenize_pairs(t, rows, max_length=16, max_prompt_length=6)
    assert len(pair.prompt_ids) == 6
    assert t.convert_ids_to_tokens(pair.prompt_ids)[-2:] == ["w09", "A:"]  # the end of the prompt is kept
    assert len(pair.prompt_ids) + len(pair.chosen_ids) == 16
    assert pair.rejected_ids[-1] == t.eos_token_id


def test_batches_cover_every_pair_once_and_group_lengths():
    lengths = [5, 50, 6, 48, 7, 52, 5, 49] * 8
    batches = data.batch_indices(lengths, 4, seed=0, group_by_length=True)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert max(spread) <= 4  # grouping puts short with short, long with long


def test_local_jsonl_file_loads_and_missing_fields_are_named(tmp_path):
    good = tmp_path / "pairs.jsonl"
    good.write_text(
        "\n".join(json.dumps({"prompt": f"p{i}", "chosen": "a", "rejected": "b"}) for i in range(20))
    )
    train, held_out = datasource.load_splits({"source": str(good), "fields": ["prompt", "chosen", "rejected"]})
    assert len(train) == 18 and len(held_out) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "p", "chosen": "a", "rejected": "b"}\n')
    try:
        datasource.load_splits({"source": str(bad), "fields": ["prompt", "chosen", "rejected"]})
    except datasource.DataError as e:
        assert "prompt" in str(e) and "question" in str(e)
    else:
        raise AssertionError("a file without a prompt field must be refused")


def test_sequence_logps_match_a_direct_computation():
    from ablate.trial.train import sequence_logps

    t = tok()
    model = models.build_builtin_model(models.TinyModelConfig(), t, seed=0)
    rows = [{"prompt": "Q: w01 w02 A:", "chosen": "w01 w02", "rejected": "well w01 really"}]
    batch = data.collate_pairs(data.tokenize_pairs(t, rows, 32, 8), t.pad_token_id)
    logps, lengths = sequence_logps(model, batch)
    assert lengths.tolist() == [3, 4]
    full = torch.log_softmax(model(input_ids=batch["input_ids"]).logits.float(), -1)
    for row in range(2):
        labels = batch["labels"][row]
        want = sum(
            full[row, i - 1, labels[i]].item() for i in range(1, labels.shape[0]) if labels[i] != IGNORE_INDEX
        )
        assert abs(logps[row].item() - want) < 1e-4
