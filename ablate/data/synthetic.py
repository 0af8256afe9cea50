"""The built-in preference task: keyword recall with a known oracle reward and length-biased labels.

A prompt asks for a short list of keywords, ``Q: w03 w17 w22 A:``; the ideal answer restates
them, ``w03 w17 w22``. The oracle scores any response exactly:

    oracle(x, y) = coverage - JUNK_COST * junk

where coverage is the fraction of the prompt's keywords that appear in ``y`` and junk counts every
other token (fillers, wrong words, repeats). Longer is better only while it adds keywords.

Responses come from a "writer" with human-like habits that make its most likely answer wrong in
ways preference optimisation can fix: it often opens with filler ("well so"), often stops after
two keywords, sometimes drops or invents a word, and pads the end. The SFT start point imitates
this writer (as a base model imitates UltraChat-style demonstrations).

Preference labels come from a simulated annotator who mostly follows the oracle but also likes
length, as UltraFeedback's GPT-4 judges do:

    P(a preferred over b) = sigmoid((oracle(a) - oracle(b)) / temperature + length_bias * LEN_LOGIT * (|a| - |b|))

``length_bias`` is the knob: 0 gives clean labels; larger values reward padding. Everything is
generated from ``seed``, so a task config fully determines the data.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

CONTENT_WORDS = [f"w{i:02d}" for i in range(24)]
OPENERS = ["well", "so", "um"]
PADDING = ["really", "very", "just", "indeed"]
SPECIAL = ["<pad>", "<unk>", "<bos>", "<eos>"]
MARKERS = ["Q:", "A:"]
VOCAB = SPECIAL + MARKERS + CONTENT_WORDS + OPENERS + PADDING

JUNK_COST = 0.1
LEN_LOGIT = 0.8  # annotator logit per extra token at length_bias=1


class TaskConfig(BaseModel):
    """Knobs of the built-in task; part of the sweep file (``data.task``)."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(1, description="Task design version; results of different versions are kept apart.")
    length_bias: float = Field(
        1.0, ge=0.0, description="Annotator's preference for longer responses (0 = none)."
    )
    temperature: float = Field(
        0.15, gt=0.0, description="Annotator noise: lower follows the oracle more closely."
    )
    n_train: int = Field(2000, ge=8, description="Preference pairs for training.")
    n_eval: int = Field(
        256, ge=8, description="Held-out preference pairs (their prompts are used for generation)."
    )
    n_sft: int = Field(4000, ge=8, description="Writer demonstrations for the SFT start point.")
    min_keywords: int = Field(2, ge=1)
    max_keywords: int = Field(4, ge=1)
    seed: int = 0


@dataclass(frozen=True)
class Example:
    prompt: str
    keywords: tuple[str, ...]


def prompt_text(keywords: tuple[str, ...]) -> str:
    return "Q: " + " ".join(keywords) + " A:"


def keywords_of(prompt: str) -> tuple[str, ...]:
    return tuple(t for t in prompt.split() if t in CONTENT_WORDS)


def oracle_reward(prompt: str, response: str) -> float:
    """Exact quality of ``response`` for ``prompt``: keyword coverage minus a cost per junk token."""
    keywords = keywords_of(prompt)
    tokens = response.split()
    seen: set[str] = set()
    junk = 0
    for tok in tokens:
        if tok in keywords and tok not in seen:
            seen.add(tok)
        else:
            junk += 1
    return len(seen) / max(len(keywords), 1) - JUNK_COST * junk


def sample_prompt(rng: random.Random, cfg: TaskConfig) -> Example:
    k = rng.randint(cfg.min_keywords, max(cfg.min_keywords, cfg.max_keywords))
    keywords = tuple(rng.sample(CONTENT_WORDS, k))
    return Example(prompt_text(keywords), keywords)


def write_response(rng: random.Random, keywords: tuple[str, ...]) -> str:
    """One response from the writer; its habits make the greedy SFT answer imperfect."""
    out: list[str] = []
    if rng.random() < 0.6:  # verbose opener, the writer's most common habit
        out.append("well")
        if rng.random() < 0.5:
            out.append(rng.choice(OPENERS))
    for j, kw in enumerate(keywords):
        if j >= 2 and rng.random() < 0.55:  # lazy: stops after two keywords more often than not
            break
        if rng.random() < 0.1:  # forgets one
            continue
        out.append(kw)
        if rng.random() < 0.1:  # invents one
            out.append(rng.choice([w for w in CONTENT_WORDS if w not in keywords]))
    n_pad = min(_poisson(rng, 1.0), 6)
    for _ in range(n_pad):
        if out and rng.random() < 0.25:
            out.append(out[-1])  # repetition
        else:
            out.append(rng.choice(PADDING))
    return " ".join(out)


def _poisson(rng: random.Random, lam: float) -> int:
    # Knuth's method; lam is small.
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def annotator_prefers_first(rng: random.Random, prompt: str, a: str, b: str, cfg: TaskConfig) -> bool:
    logit = (oracle_reward(prompt, a) - oracle_reward(prompt, b)) / cfg.temperature
    logit += cfg.length_bias * LEN_LOGIT * (len(a.split()) - len(b.split()))
    return rng.random() < 1.0 / (1.0 + math.exp(-logit))


def make_pairs(rng: random.Random, n: int, cfg: TaskConfig) -> list[dict]:
    rows = []
    while len(rows) < n:
        ex = sample_prompt(rng, cfg)
        a, b = write_response(rng, ex.keywords), write_response(rng, ex.keywords)
        if a == b:  # identical responses carry no preference
            continue
        chosen, rejected = (a, b) if annotator_prefers_first(rng, ex.prompt, a, b, cfg) else (b, a)
        rows.append({"prompt": ex.prompt, "chosen": chosen, "rejected": rejected})
    return rows


def build_task(cfg: TaskConfig) -> dict[str, list[dict]]:
    """The task's splits: ``sft`` (prompt, response), ``train`` and ``eval`` (prompt, chosen, rejected)."""
    rng = random.Random(f"ablate-task-v{cfg.version}-{cfg.seed}")
    sft = []
    for _ in range(cfg.n_sft):
        ex = sample_prompt(rng, cfg)
        sft.append({"prompt": ex.prompt, "response": write_response(rng, ex.keywords)})
    train = make_pairs(rng, cfg.n_train, cfg)
    held_out = make_pairs(rng, cfg.n_eval, cfg)
    return {"sft": sft, "train": train, "eval": held_out}


def label_statistics(pairs: list[dict]) -> dict[str, float]:
    """How the labels relate to the oracle and to length (documented in docs/builtin-task.md)."""
    agree = longer = 0
    for p in pairs:
        agree += oracle_reward(p["prompt"], p["chosen"]) > oracle_reward(p["prompt"], p["rejected"])
        longer += len(p["chosen"].split()) > len(p["rejected"].split())
    n = len(pairs)
    return {"oracle_agreement": agree / n, "chosen_longer": longer / n}
