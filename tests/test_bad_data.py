"""Bad preference data in real .jsonl files: a clear error before any trial starts (fatal cases), or
a counted skip reported in the trial's metrics, through ablate/data/tokens.py, a trial and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

from ablate import models
from ablate.data import sources as datasource
from ablate.data import synthetic
from ablate.data import tokens as data
from ablate.trial.runner import run_trial
from tests.conftest import REPO, SMALL, make_trial

FIELDS = ["prompt", "chosen", "rejected"]


def good_rows(n: int = 40) -> list[dict]:
    task = synthetic.build_task(synthetic.TaskConfig(n_train=n, n_eval=8, n_sft=10))
    return [{k: r[k] for k in FIELDS} for r in task["train"][:n]]


def write_jsonl(path, rows) -> str:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return str(path)


def cfg(source: str) -> dict:
    return {"source": source, "fields": FIELDS, "train_split": "train", "eval_split": "test"}


# Fatal: the file cannot be trusted as a whole. (case, lines to add, what the message must name)
FATAL = {
    "missing field": ['{"prompt": "Q: w01 A:", "chosen": "w01"}', "line 41", "'rejected' is missing"],
    "null value": ['{"prompt": "Q: w01 A:", "chosen": null, "rejected": "w02"}', "line 41", "'chosen' is missing"],
    "number": ['{"prompt": "Q: w01 A:", "chosen": 42, "rejected": "w02"}', "line 41", "'chosen' is int"],
    "object": ['{"prompt": {"text": "Q"}, "chosen": "w01", "rejected": "w02"}', "line 41", "'prompt' is dict"],
    "not JSON": ['{"prompt": "Q: w01 A:", "chosen": "w01", "rejected": ', "line 41", "not valid JSON"],
}  # fmt: skip


@pytest.mark.parametrize("case", list(FATAL))
def test_fatal_rows_raise_a_data_error_naming_line_and_field(tmp_path, case):
    line, where, what = FATAL[case]
    path = write_jsonl(tmp_path / "pairs.jsonl", [*good_rows(), line])
    with pytest.raises(datasource.DataError) as err:
        datasource.load_splits(cfg(path))
    assert where in str(err.value) and what in str(err.value) and path in str(err.value)


def test_non_utf8_bytes_are_an_error_naming_the_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, good_rows()[:3])
    with path.open("ab") as f:
        f.write('{"prompt": "Q: caf\u00e9 A:", "chosen": "w01", "rejected": "w02"}\n'.encode("latin-1"))
    with pytest.raises(datasource.DataError, match=r"line 4: not valid UTF-8 \(byte 0xe9.*iconv"):
        datasource.load_splits(cfg(str(path)))


def test_empty_and_identical_pairs_are_skipped_and_counted(tmp_path):
    rows = good_rows(40)
    bad = [
        {"prompt": "Q: w01 A:", "chosen": "", "rejected": "w01"},
        {"prompt": "Q: w01 A:", "chosen": "w01", "rejected": "   "},
        {"prompt": "Q: w02 A:", "chosen": "w02 w02", "rejected": "w02 w02"},
    ]
    path = write_jsonl(tmp_path / "pairs.jsonl", bad + rows)  # all three land in the training part
    counts = {}
    train, held_out = datasource.load_splits(cfg(path), counts)
    assert counts == {"skipped_pairs_empty": 2, "skipped_pairs_identical": 1}
    assert len(train) + len(held_out) == 40 and all(r in rows for r in train + held_out)


def test_a_file_with_no_usable_pair_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "same", "rejected": "same"}] * 5)
    with pytest.raises(datasource.DataError, match="no usable training pairs"):
        datasource.load_splits(cfg(path))


def test_long_prompts_and_responses_are_truncated_and_counted():
    tok = models.build_builtin_tokenizer()
    long_prompt = "Q: " + " ".join(f"w{i:02d}" for i in range(20)) + " A:"  # 23 tokens with <bos>
    rows = [
        {"prompt": long_prompt, "chosen": "w19", "rejected": "w18"},
        {"prompt": "Q: w01 A:", "chosen": " ".join(["w01"] * 40), "rejected": "w01"},
        {"prompt": "Q: w01 A:", "chosen": "w01", "rejected": "w02"},
    ]
    counts = {}
    pairs = data.tokenize_pairs(tok, rows, max_length=24, max_prompt_length=8, counts=counts)
    assert counts == {"truncated_prompts": 1, "truncated_responses": 1}
    assert len(pairs[0].prompt_ids) == 8 and tok.convert_ids_to_tokens(pairs[0].prompt_ids)[-1] == "A:"
    assert len(pairs[1].prompt_ids) + len(pairs[1].chosen_ids) == 24


def test_trial_reports_the_skip_counts_in_its_metrics(tmp_path, small_spec, start):
    rows = good_rows(60)
    long_prompt = "Q: " + " ".join(f"w{i:02d}" for i in range(20)) + " A:"
    bad = [
        {"prompt": "Q: w01 A:", "chosen": "", "rejected": "w01"},
        {"prompt": "Q: w02 A:", "chosen": "w02", "rejected": "w02"},
        {"prompt": long_prompt, "chosen": "w19", "rejected": "w18"},
    ]
    path = write_jsonl(tmp_path / "pairs.jsonl", bad + rows)
    trial = make_trial(small_spec, start, "simpo", data={"source": path})
    trial["start"] = {"path": start["path"], "baseline": None}  # no oracle baseline for a file's prompts
    final = run_trial(trial, lambda _: None)
    assert final["status"] == "finished"
    assert final["skipped_pairs_empty"] == 1 and final["skipped_pairs_identical"] == 1
    assert final["truncated_prompts"] == 1
    assert final["steps"] == 4  # 63 rows - 6 held out - 2 skipped = 55 pairs, in batches of 16


# --- through the CLI: exit 2 and nothing launched, or a summary of the skips ---------------------


def sweep_on(tmp_path, source: str) -> str:
    sweep = {**SMALL, "name": "baddata", "storage": str(tmp_path / "results"),
             "cache_dir": str(tmp_path / "cache"), "data": {"source": source}}  # fmt: skip
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return str(path)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ablate.run", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=600)  # fmt: skip


def test_cli_refuses_a_non_utf8_file_with_exit_2_before_launching_anything(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, good_rows()[:3])
    with path.open("ab") as f:
        f.write(b'{"prompt": "\xff", "chosen": "a", "rejected": "b"}\n')
    sweep = sweep_on(tmp_path, str(path))
    t0 = time.time()
    proc = cli(sweep)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip()
    assert err.startswith(f"error: {sweep}: data.source: {path} line 4: not valid UTF-8 (byte 0xff")
    assert "Traceback" not in err and len(err.splitlines()) == 1  # one paragraph
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()  # nothing launched
    assert "Sweep baddata" not in proc.stdout and time.time() - t0 < 60


@pytest.mark.parametrize("case", list(FATAL))
def test_cli_main_refuses_bad_rows_before_launching_anything(tmp_path, capsys, case):
    from ablate.sweep import cli as run

    line, where, what = FATAL[case]
    path = write_jsonl(tmp_path / "pairs.jsonl", [*good_rows(), line])
    sweep = sweep_on(tmp_path, path)
    assert run.main([sweep]) == run.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {sweep}: data.source: {path} {where}") and what in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()  # nothing launched


def test_cli_dry_run_summarises_skipped_pairs(tmp_path):
    bad = [
        {"prompt": "Q: w01 A:", "chosen": "", "rejected": "w01"},
        {"prompt": "p", "chosen": "x", "rejected": "x"},
    ]
    path = write_jsonl(tmp_path / "pairs.jsonl", bad + good_rows(40))
    proc = cli(sweep_on(tmp_path, path), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert (
        f"Data {path}: 36 training and 4 held-out pairs; skipped pairs: 1 empty, 1 identical" in proc.stdout
    )
    assert "1 trials" in proc.stdout


# --- data as users have it: a byte-order mark, a held-out file, save_to_disk directories ----------


def dry_run(sweep: str, capsys) -> tuple[int, str, str]:
    from ablate.sweep import cli as run

    capsys.readouterr()  # only what the CLI prints
    code = run.main([sweep, "--dry-run"])
    out = capsys.readouterr()
    return code, out.out, out.err


def checked_plan(sweep: str):
    """The plan as the CLI launches it: built, its data read and its split recorded in every trial."""
    from ablate import spec
    from ablate.sweep import cli as run
    from ablate.sweep import plan as plan_mod

    return run.check_data(sweep, plan_mod.build(spec.load_sweep(sweep)))


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_file_starting_with_a_utf8_byte_order_mark_is_read(tmp_path, capsys, suffix):
    rows = good_rows(40)
    body = "\n".join(map(json.dumps, rows)) if suffix == ".jsonl" else json.dumps(rows)
    path = tmp_path / f"pairs{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())  # as Windows tools and spreadsheet exports write it
    train, held_out = datasource.load_splits(cfg(str(path)))
    assert train + held_out == rows  # the mark is not part of the first prompt
    code, out, err = dry_run(sweep_on(tmp_path, str(path)), capsys)
    assert code == 0, err
    assert f"Data split: train: {path} without its last tenth (36 pairs); held out: the last tenth of {path} (4 pairs)" in out


def test_a_held_out_file_next_to_the_training_file(tmp_path, capsys):
    rows = good_rows(48)
    train_file = write_jsonl(tmp_path / "pairs-train.jsonl", rows[:40])
    eval_file = write_jsonl(tmp_path / "pairs-test.jsonl", rows[40:])
    train, held_out = datasource.load_splits({**cfg(train_file), "eval_source": eval_file})
    assert train == rows[:40] and held_out == rows[40:]  # nothing of the training file is held out
    expected = {"train": train_file, "held_out": eval_file, "train_pairs": 40, "held_out_pairs": 8}
    for name, section in {"pair": {"source": {"train": train_file, "eval": eval_file}},
                          "eval_source": {"source": train_file, "eval_source": eval_file}}.items():  # fmt: skip
        sweep = tmp_path / f"{name}.yaml"
        sweep.write_text(yaml.safe_dump({**SMALL, "name": name, "data": section}))
        code, out, err = dry_run(str(sweep), capsys)
        assert code == 0, err
        assert f"Data split: train: {train_file} (40 pairs); held out: {eval_file} (8 pairs)" in out
        assert [t["data_split"] for t in checked_plan(str(sweep)).trials] == [expected]


def test_a_missing_held_out_file_exits_2_naming_the_field(tmp_path, capsys):
    train_file = write_jsonl(tmp_path / "pairs.jsonl", good_rows(40))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({**SMALL, "name": "noeval", "data": {"source": train_file,
                                                                         "eval_source": str(tmp_path / "test.jsonl")}}))  # fmt: skip
    code, _, err = dry_run(str(sweep), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"error: {sweep}: data.eval_source: '{tmp_path / 'test.jsonl'}' does not exist" in err


def save_to_disk(tmp_path, splits: dict[str, list[dict]] | list[dict]) -> str:
    import datasets

    path = tmp_path / "saved"
    if isinstance(splits, dict):
        datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(path)
    else:
        datasets.Dataset.from_list(splits).save_to_disk(path)
    return str(path)


def test_a_save_to_disk_dataset_dict_gives_its_train_and_test_splits(tmp_path, capsys, small_spec, start):
    rows = good_rows(56)
    path = save_to_disk(tmp_path, {"train": rows[:48], "test": rows[48:]})
    train, held_out = datasource.load_splits(cfg(path))
    assert train == rows[:48] and held_out == rows[48:]
    sweep = sweep_on(tmp_path, path)
    code, out, err = dry_run(sweep, capsys)
    assert code == 0, err
    assert f"Data split: train: {path} split 'train' (48 pairs); held out: {path} split 'test' (8 pairs)" in out
    trial = {**checked_plan(sweep).trials[0], "start": {"path": start["path"], "baseline": None}}
    final = run_trial(trial, lambda _: None)  # the trial reads the directory and records its split
    assert final["status"] == "finished" and final["steps"] == 3  # 48 pairs in batches of 16


def test_a_save_to_disk_directory_without_the_eval_split_exits_2_listing_its_splits(tmp_path, capsys):
    rows = good_rows(40)
    path = save_to_disk(tmp_path, {"train": rows[:32], "validation": rows[32:]})
    code, _, err = dry_run(sweep_on(tmp_path, path), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"data.eval_split: {path} (written by save_to_disk) has splits ['train', 'validation'] and no 'test'" in err
    assert "data.eval_source" in err  # the other fix


def test_a_single_saved_dataset_holds_out_its_last_tenth(tmp_path, capsys):
    rows = good_rows(40)
    path = save_to_disk(tmp_path, rows)
    train, held_out = datasource.load_splits(cfg(path))
    assert train == rows[:36] and held_out == rows[36:]
    code, out, _ = dry_run(sweep_on(tmp_path, path), capsys)
    assert code == 0 and f"held out: the last tenth of {path} (4 pairs)" in out


def test_the_builtin_task_has_its_own_held_out_pairs(tmp_path, capsys):
    eval_file = write_jsonl(tmp_path / "test.jsonl", good_rows(8))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({**SMALL, "name": "builtin", "data": {"eval_source": eval_file}}))
    code, _, err = dry_run(str(sweep), capsys)
    assert code == 2 and "data.eval_source: the built-in task has its own held-out pairs" in err
