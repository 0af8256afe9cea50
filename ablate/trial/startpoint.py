"""The SFT start point: trained once per config on the built-in task's demonstrations, cached on
disk under a hash of that config, and reused by every trial as the policy initialisation and as
the reference model. Also caches the SFT model's greedy generations (the oracle win-rate baseline).

Real models (hub id or path) are used as given: they are already SFT checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch

from ablate import models, progress
from ablate.cache import atomic_dir, cache_key
from ablate.data import sources as datasource
from ablate.data import synthetic
from ablate.data import tokens as data_mod
from ablate.records import write_json
from ablate.trial.evaluate import generate
from ablate.trial.train import AdamWStepper, Hooks, TrainSettings, sequence_logps, total_steps, train

CACHE_VERSION = 1


# The SFT demonstrations depend on these task fields only; the label knobs (length_bias,
# temperature) and pair counts do not change them, so sweeps over those share one start point.
SFT_TASK_FIELDS = ("version", "seed", "n_sft", "min_keywords", "max_keywords")


def sft_model_dir(cache_dir: str, model: dict, data: dict, sft: dict) -> Path:
    task = {k: data["task"][k] for k in SFT_TASK_FIELDS}
    key = cache_key({"v": CACHE_VERSION, "tiny": model["tiny"], "task": task, "sft": sft,
                     "max_length": data["max_length"], "max_prompt_length": data["max_prompt_length"]})  # fmt: skip
    return Path(cache_dir).expanduser().resolve() / f"sft-{key}"


def train_sft(out_dir: Path, model_cfg: dict, data: dict, sft: dict, log=print) -> None:
    """Build the tiny model and tokenizer, fit them to the writer's demonstrations, save both."""
    torch.manual_seed(sft["seed"])
    tokenizer = models.build_builtin_tokenizer()
    model = models.build_builtin_model(models.TinyModelConfig(**model_cfg["tiny"]), tokenizer, sft["seed"])
    task = synthetic.build_task(synthetic.TaskConfig.model_validate(data["task"]))
    prompts = [
        data_mod.tokenize_prompt(tokenizer, r["prompt"], data["max_prompt_length"]) for r in task["sft"]
    ]
    responses = [
        data_mod.tokenize_response(tokenizer, r["response"], data["max_length"] - len(p))
        for r, p in zip(task["sft"], prompts, strict=True)
    ]
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses, strict=True)]

    def batches_of(epoch: int) -> list[list[int]]:
        return data_mod.batch_indices(lengths, sft["batch_size"], sft["seed"] + epoch)

    def collate(idx: list[int]) -> dict[str, torch.Tensor]:
        pad = tokenizer.pad_token_id
        return data_mod.collate_sequences([prompts[i] for i in idx], [responses[i] for i in idx], pad)

    def nll(batch):
        logps, n = sequence_logps(model, batch)
        loss = (-logps / n.clamp(min=1)).mean()
        return loss, {"loss": loss.item()}

    settings = TrainSettings(learning_rate=sft["learning_rate"], epochs=sft["epochs"], log_every=50)
    steps = total_steps(batches_of, settings)
    stepper = AdamWStepper(model, nll, settings, steps, collate)

    def on_log(step: int, logged: dict[str, float]) -> None:
        log(f"  sft step {step}: loss {logged['loss']:.3f}")

    with progress.Progress("training the SFT start point", steps, "steps") as shown:
        result = train(stepper, batches_of, settings, Hooks(after_step=lambda _: shown.advance(), on_log=on_log))
    log(f"  sft: {result.steps} steps in {result.seconds:.1f}s")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def baseline_generations(model_dir: Path, data: dict, evaluation: dict) -> Path:
    """The SFT model's answers to the evaluation prompts (``ablate.judging.generations``), generated here once and
    cached where trials look for them (``generations.baseline_path``), so no trial waits for them."""
    from ablate.judging import generations
    from ablate.spec.evaluation import EvalConfig

    ev = EvalConfig.model_validate(evaluation)
    tokenizer = models.load_tokenizer(str(model_dir))
    _, held_out = datasource.load_splits(data)
    rows = held_out[: ev.num_prompts]
    pairs = data_mod.tokenize_pairs(tokenizer, rows, data["max_length"], data["max_prompt_length"], data["chat_template"])
    prompt_ids = [p.prompt_ids for p in pairs]  # as the trials tokenize them (ablate.trial.worker_cache)
    cache_dir = str(Path(model_dir).parent)
    path = generations.baseline_path(cache_dir, str(model_dir), prompt_ids, ev)
    if path.is_file():
        return path
    model = models.load_model(str(model_dir), torch.device("cpu"), trainable=False)
    torch.manual_seed(ev.generation.seed)
    with progress.label(f"SFT baseline generations on {len(prompt_ids)} held-out prompts"):
        texts, counts = generate(model, tokenizer, prompt_ids, ev.new_tokens, ev.batch_size, "cpu",
                                 generations.sampling(ev))  # fmt: skip
    prompts = [generations.prompt_text(r["prompt"]) for r in rows]
    write_json(path, generations.GenerationSet(prompts, texts, counts).to_json())
    return path


def prepare(model: dict, data: dict, sft: dict, evaluation: dict, cache_dir: str, log=print) -> dict:
    """Where trials start from: ``{"path": model dir, "baseline": file of SFT generations or None}``.

    On the built-in task the SFT model is trained here (once), and so are the baseline's generations
    and the built-in reward model when a judge needs it; for real models trials produce the baseline."""
    if not models.is_builtin(model["name_or_path"]):
        return {"path": model["name_or_path"], "baseline": None}
    target = sft_model_dir(cache_dir, model, data, sft)
    if (target / "config.json").is_file():
        log(f"SFT start point: reusing {target}")
    else:
        log(f"SFT start point: training {target.name} (once; cached for later sweeps)")
        atomic_dir(target, lambda tmp: train_sft(tmp, model, data, sft, log))
    held_out_prompts = evaluation.get("prompts", "held_out") == "held_out"
    baseline = (
        baseline_generations(target, data, evaluation) if evaluation["generate"] and held_out_prompts else None
    )
    if any(_judge_name(j) == "builtin:reward-model" for j in evaluation.get("judges") or []):
        from ablate.judging import reward_model

        reward_model.ensure(cache_dir, str(target), data, log=log)
    return {"path": str(target), "baseline": str(baseline) if baseline else None}


def _judge_name(judge) -> str:
    return judge if isinstance(judge, str) else judge["name"]


def prepare_sweep(spec, log=print) -> dict:
    """``prepare`` for a validated sweep (``ablate.spec.SweepSpec``) and its own data section."""
    return prepare(
        spec.model.model_dump(),
        spec.data.model_dump(),
        spec.sft.model_dump(),
        spec.evaluation.model_dump(),
        spec.cache_dir,
        log=log,
    )
