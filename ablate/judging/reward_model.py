"""The built-in task's reward model (judge ``builtin:reward-model``): a ``LlamaForSequenceClassification``
(one label) initialised from the SFT start point, trained once with a Bradley–Terry loss on the task's
length-biased preference labels (fresh pairs from the sweep's task config, not the trials' held-out
pairs), saved with ``save_pretrained`` and cached like the start point.

It is a realistic judge: it learns what the labels reward, so it inherits their preference for length,
as GPT-4 judges of real data do; the oracle of the built-in task shows by how much (docs/judging.md).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F

from ablate import models
from ablate.cache import atomic_dir, cache_key
from ablate.data import synthetic
from ablate.data import tokens as data_mod
from ablate.trial.train import AdamWStepper, Hooks, TrainSettings, total_steps, train

VERSION = 1
# Fixed: a judge is not a sweep's hyperparameter. Pairs: twice the task's training pairs (4,000 by
# default), at least MIN_PAIRS.
SETTINGS = {"pairs_per_training_pair": 2, "min_pairs": 1000, "epochs": 2, "learning_rate": 1e-3, "batch_size": 64,
            "seed": 0}  # fmt: skip


def render(tokenizer, prompt: str, response: str) -> list[int]:
    """A prompt/response pair as a reward model reads it: its chat template (user, assistant), or the
    prompt and the response on two lines without one; a doubled BOS (template + tokenizer) made single."""
    if getattr(tokenizer, "chat_template", None):
        chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        text = tokenizer.apply_chat_template(chat, tokenize=False)
    else:
        text = f"{prompt}\n{response}"
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def model_dir(cache_dir: str, start_path: str, data: dict) -> Path:
    key = cache_key({"v": VERSION, "start": Path(start_path).name, "task": data["task"], "settings": SETTINGS})
    return Path(cache_dir).expanduser().resolve() / "reward-models" / f"rm-{key}"


def ensure(cache_dir: str, start_path: str, data: dict, log=print) -> Path:
    """The reward model's directory, trained now if it is not cached yet."""
    target = model_dir(cache_dir, start_path, data)
    if not (target / "config.json").is_file():
        log(f"Reward model (judge builtin:reward-model): training {target.name} (once; cached)")
        atomic_dir(target, lambda tmp: train_reward_model(tmp, start_path, data, log))
    return target


def training_pairs(data: dict) -> list[dict]:
    """Preference pairs labelled by the task's annotator (its length bias included), drawn apart from
    the trials' training and held-out pairs."""
    cfg = synthetic.TaskConfig.model_validate(data["task"])
    rng = random.Random(f"ablate-reward-model-v{VERSION}-{cfg.seed}")
    n = max(SETTINGS["min_pairs"], SETTINGS["pairs_per_training_pair"] * cfg.n_train)
    return synthetic.make_pairs(rng, n, cfg)


def train_reward_model(out_dir: Path, start_path: str, data: dict, log=print) -> None:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(SETTINGS["seed"])
    tokenizer = models.load_tokenizer(start_path)
    from transformers.utils import logging as hf_logging

    quiet = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its report that the new score head was not in the SFT checkpoint
    try:
        model = AutoModelForSequenceClassification.from_pretrained(start_path, num_labels=1, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(quiet)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.train()
    rows = training_pairs(data)
    chosen = [render(tokenizer, r["prompt"], r["chosen"]) for r in rows]
    rejected = [render(tokenizer, r["prompt"], r["rejected"]) for r in rows]
    lengths = [max(len(c), len(r)) for c, r in zip(chosen, rejected, strict=True)]
    pad = tokenizer.pad_token_id

    def batches_of(epoch: int) -> list[list[int]]:
        return data_mod.batch_indices(lengths, SETTINGS["batch_size"], SETTINGS["seed"] + epoch)

    def collate(idx: list[int]) -> dict[str, torch.Tensor]:  # chosen rows, then rejected rows, left-padded
        seqs = [chosen[i] for i in idx] + [rejected[i] for i in idx]
        width = max(map(len, seqs))
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
        return {"input_ids": torch.tensor([[pad] * (width - len(s)) + s for s in seqs]), "attention_mask": mask,
                "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}  # fmt: skip

    def bradley_terry(batch: dict[str, torch.Tensor]):
        r = model(**batch).logits[:, 0].float()
        r_w, r_l = r.chunk(2)
        loss = -F.logsigmoid(r_w - r_l).mean()
        return loss, {"loss": loss.item(), "accuracy": (r_w > r_l).float().mean().item()}

    settings = TrainSettings(learning_rate=SETTINGS["learning_rate"], epochs=SETTINGS["epochs"], log_every=50)
    stepper = AdamWStepper(model, bradley_terry, settings, total_steps(batches_of, settings), collate)

    def on_log(step: int, logged: dict[str, float]) -> None:
        log(f"  reward model step {step}: loss {logged['loss']:.3f}, label accuracy {logged['accuracy']:.3f}")

    result = train(stepper, batches_of, settings, Hooks(on_log=on_log))
    log(f"  reward model: {result.steps} steps in {result.seconds:.1f}s")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
