"""What made a trial's numbers: the pinned hub revisions, the fingerprints of its inputs, its environment.

The driver does the once-per-sweep work (``pin`` at launch, ``attach`` after the start points are
prepared): a hub model, judge or data set named without a revision is resolved once, offline, to the
commit of its local Hugging Face cache snapshot (``huggingface_hub.snapshot_download(...,
local_files_only=True)``); a model or judge is then loaded by every trial from that snapshot's
directory, so a hub update in the middle of a sweep cannot split it across two revisions. The
fingerprints (the exact training and held-out rows after filtering, the tokenizer, the chat template,
the model's config and weight files, each judge) travel to the trials in their config
(``provenance``). Each trial adds its own environment (``environment``: packages, CUDA, GPUs, CPU,
ablate's commit; computed once per process) and writes ``provenance.json`` into its directory
(``write``), read by ``analysis.diff`` and the report's environment section (docs/provenance.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import subprocess
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

from ablate import records
from ablate.data import sources as datasource

PROVENANCE_FILE = records.PROVENANCE_FILE
RECORD_VERSION = 1
# The packages whose versions are recorded (those installed); the first ones move numbers most.
PACKAGES = ("torch", "transformers", "tokenizers", "deepspeed", "peft", "datasets", "alpaca_eval",
            "scikit-learn", "numpy", "ray", "huggingface_hub", "accelerate")  # fmt: skip
MODEL_FILES = ("config.json", "generation_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                   "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt")  # fmt: skip
# Weight files up to this size are hashed whole; bigger ones by size, head and tail (a file written by
# save_pretrained starts with its tensor index), so a 16 GB model costs the driver a few reads, not minutes.
FULL_HASH_MAX_BYTES = 256 << 20
SAMPLE_BYTES = 4 << 20
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def digest(value) -> str:
    """A short hash of a JSON-able value (keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- pins: hub names resolved once, offline, to a snapshot -------------------------------------------


def hub_cache() -> str:
    """The Hugging Face hub cache, read from the environment now (HF_HUB_CACHE, HF_HOME/hub, default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]).expanduser() / "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def is_hub_id(name: str | None) -> bool:
    """A hub id: not built-in, not a local path."""
    if not name or name.startswith(("builtin:", "/", ".", "~")) or Path(name).expanduser().exists():
        return False
    return bool(HUB_ID.match(name)) and Path(name).suffix not in (".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class Pin:
    """A hub name resolved to the commit of its local snapshot (``problem``: why it could not be)."""

    kind: str  # model, judge or dataset
    name: str
    revision: str | None = None
    path: str | None = None
    problem: str | None = None

    def line(self) -> str:
        if self.problem:
            return f"pin: {self.kind} {self.name}: NOT PINNED, {self.problem}"
        return f"pin: {self.kind} {self.name} @ {self.revision} ({self.path})"


def resolve(kind: str, name: str) -> Pin:
    """``name``'s snapshot in the local hub cache (its ``refs/main``), without the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    repo_type = "dataset" if kind == "dataset" else None
    try:
        path = snapshot_download(name, repo_type=repo_type, local_files_only=True, cache_dir=hub_cache())
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, OSError, ValueError) as e:
        why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return Pin(kind, name, problem=f"not in the local Hugging Face cache {hub_cache()} ({why})")
    return Pin(kind, name, Path(path).name, str(path))


def hub_names(spec) -> list[tuple[str, str]]:
    """(kind, name) of every hub model, judge and data set a validated sweep names."""
    names = [("model", spec.model.name_or_path)]
    names += [("judge", j.name) for j in spec.evaluation.judges or []]
    names += [("dataset", s) for s in (spec.data.source, spec.data.eval_source) if isinstance(s, str)]
    return list(dict.fromkeys((k, n) for k, n in names if is_hub_id(n)))


def pin(spec) -> list[Pin]:
    """The sweep's pins, resolved once (the driver, before the dry run prints them and before launch)."""
    return [resolve(kind, name) for kind, name in hub_names(spec)]


def pin_problem(sweep: str, pins: list[Pin]) -> str | None:
    """Why a sweep must not launch: a hub model or judge that cannot be pinned offline (its trials would
    each resolve it on their own). A hub data set that cannot be pinned is only warned about (``pin_warnings``):
    ``datasets`` keeps its own cache, which trials read as they always did."""
    bad = [p for p in pins if p.problem and p.kind != "dataset"]
    if not bad:
        return None
    names = ", ".join(f"{p.kind} {p.name}" for p in bad)
    return (f"{sweep}: {names}: not in the local Hugging Face cache ({hub_cache()}), so its revision cannot be "
            "pinned for the sweep. Download it once (`huggingface-cli download NAME`, or "
            "`huggingface_hub.snapshot_download(NAME)`) where the trials run, then launch again; every trial "
            "then loads that one snapshot offline.")  # fmt: skip


def pin_warnings(sweep: str, pins: list[Pin]) -> list[str]:
    return [f"warning: {sweep}: data set {p.name} is not pinned ({p.problem}); trials load it as `datasets` "
            "finds it, and its rows' fingerprint is what tells two runs apart" for p in pins
            if p.problem and p.kind == "dataset"]  # fmt: skip


def pinned_paths(pins: list[Pin]) -> dict[str, str]:
    return {p.name: p.path for p in pins if p.path and p.kind in ("model", "judge")}


# --- fingerprints of a sweep's inputs (the driver, once per data section and start point) ---------


def file_digest(f: Path) -> str:
    """A weight or config file's content hash: a hub snapshot's blob name (already its hash), the whole
    file up to ``FULL_HASH_MAX_BYTES``, else its size, head and tail (``sampled:``)."""
    if f.is_symlink() and Path(os.readlink(f)).parent.name == "blobs":
        return Path(os.readlink(f)).name
    size = f.stat().st_size
    h = hashlib.sha256()
    with f.open("rb") as fh:
        if size <= FULL_HASH_MAX_BYTES:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
            return h.hexdigest()[:16]
        h.update(str(size).encode() + fh.read(SAMPLE_BYTES))
        fh.seek(size - SAMPLE_BYTES)
        h.update(fh.read(SAMPLE_BYTES))
    return "sampled:" + h.hexdigest()[:16]


def model_fingerprint(path: str, tokenizer_files: bool = False) -> dict:
    """A model directory's config and weight files (and with ``tokenizer_files``, its tokenizer's)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        return {"name": path, "fingerprint": None}
    names = MODEL_FILES + (TOKENIZER_FILES if tokenizer_files else ())
    files = {f.name: file_digest(f) for f in sorted(p.iterdir())
             if f.is_file() and (f.name in names or f.suffix in WEIGHT_SUFFIXES or f.name.endswith("index.json"))}  # fmt: skip
    return {"fingerprint": digest(files), "files": len(files)}


def tokenizer_fingerprint(path: str, trust_remote_code: bool = False, use_template: bool = False) -> dict:
    """The tokenizer (vocabulary, rules, special tokens) and, apart, its chat template; whether a
    templated prompt starts with a doubled BOS (template + tokenizer both add one)."""
    from ablate import models

    tok = models.load_tokenizer(path, trust_remote_code)
    backend = getattr(tok, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(tok.get_vocab(), sort_keys=True)
    special = [tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, getattr(tok, "add_bos_token", None)]
    template = getattr(tok, "chat_template", None)
    out = {"tokenizer": digest([body, special]), "chat_template": digest(template) if template else None}
    if template and use_template and tok.bos_token_id is not None:
        text = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
        out["doubled_bos"] = tok(text)["input_ids"][:2] == [tok.bos_token_id] * 2
    return out


def data_fingerprint(data: dict) -> dict:
    """The exact training and held-out rows a trial gets (after unusable pairs are dropped)."""

    try:
        train, held_out = datasource.load_splits(data)
    except Exception as e:  # noqa: BLE001 - a record, not a check: the trial raises the real error itself
        return {"error": f"{type(e).__name__}: {e}"[:300]}
    return {"train_rows": digest(train), "held_out_rows": digest(held_out),
            "train_pairs": len(train), "held_out_pairs": len(held_out)}  # fmt: skip


def judge_fingerprints(spec, data: dict, start: dict, pinned: dict[str, str]) -> list[dict]:
    """Per judge (a list: ids such as ``builtin:oracle`` are no tracker's parameter names): what its scores
    depend on (a model's files and tokenizer, or the built-in code)."""
    from ablate.judging import judges
    from ablate.spec.evaluation import EvalConfig
    from ablate.spec.schema import DataConfig

    out = []
    for j in judges.effective(EvalConfig.model_validate(spec.evaluation.model_dump()), DataConfig.model_validate(data)):
        if j.name == judges.ORACLE:
            out.append({"id": j.id, "name": j.name})
        elif j.name == judges.REWARD_MODEL:  # trained from the start point on the task's labels
            out.append({"id": j.id, "name": j.name, "task": digest(data.get("task")),
                        "start": model_fingerprint(start["path"])["fingerprint"]})  # fmt: skip
        else:
            path = pinned.get(j.name, j.name)
            out.append({"id": j.id, "name": j.name, "revision": Path(path).name if j.name in pinned else None,
                        "max_length": j.max_length, **model_fingerprint(path, tokenizer_files=True)})  # fmt: skip
    return out


def sweep_inputs(spec, data: dict, start: dict, pins: list[Pin]) -> dict:
    """The ``provenance`` a trial config carries: pins and fingerprints of its data, model and judges."""
    pinned = pinned_paths(pins)
    model = {"name": spec.model.name_or_path, **model_fingerprint(start["path"])}
    if spec.model.name_or_path in pinned:
        model["revision"] = Path(pinned[spec.model.name_or_path]).name
    tokenizer = tokenizer_fingerprint(start["path"], spec.model.trust_remote_code, bool(data.get("chat_template")))
    return {
        "pins": [{"kind": p.kind, "name": p.name, "revision": p.revision} for p in pins if p.revision],
        "judge_paths": {k: v for k, v in pinned.items() if k != spec.model.name_or_path},
        "data": data_fingerprint(data),
        "model": model,
        **tokenizer,
        "judges": judge_fingerprints(spec, data, start, pinned),
    }


def attach(plan, pins: list[Pin], log=print):
    """``plan`` (start points prepared) with each trial's ``provenance`` and a pinned model's snapshot as
    its start point; computed once per (data section, start point)."""
    spec, pinned = plan.spec, pinned_paths(pins)
    t0, done = time.perf_counter(), {}

    def with_provenance(cfg: dict) -> dict:
        start = dict(cfg["start"])
        if start["path"] in pinned:  # a hub model: every trial loads the pinned snapshot
            start["path"] = pinned[start["path"]]
        key = digest([cfg["data"], start["path"]])
        if key not in done:
            done[key] = sweep_inputs(spec, cfg["data"], start, pins)
        return {**cfg, "start": start, "provenance": done[key]}

    trials = [with_provenance(t) for t in plan.trials]
    extra = dict(plan.trial_extra)
    if plan.search:
        extra.update({k: v for k, v in with_provenance({"data": spec.data.model_dump(), **extra}).items()
                      if k in ("start", "provenance")})  # fmt: skip
    log(f"Provenance: {len(done)} input fingerprint(s) in {time.perf_counter() - t0:.1f}s")
    return replace(plan, trials=trials, trial_extra=extra)


# --- the trial's own environment and record ----------------------------------------------------------


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def ablate_source() -> dict:
    """ablate's version and, from a git checkout, its commit and whether tracked files were edited."""
    try:
        version = metadata.version("ablate")
    except metadata.PackageNotFoundError:
        version = None
    root = Path(__file__).resolve().parents[1]
    commit = _git(["rev-parse", "HEAD"], root)
    dirty = None if commit is None else bool(_git(["status", "--porcelain", "--untracked-files=no"], root))
    return {"version": version, "commit": commit, "dirty": dirty}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> dict:
    import torch

    out: dict = {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}
    if torch.cuda.is_available():
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        try:  # the kernel module's version file; no NVML needed
            out["driver"] = re.search(r"Kernel Module\s+([\d.]+)", Path("/proc/driver/nvidia/version").read_text())[1]
        except (OSError, TypeError):
            out["driver"] = None
    return out


@functools.cache
def environment() -> dict:
    """This process's environment (computed once per process: a reused worker pays it once)."""
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"ablate": ablate_source(), "python": platform.python_version(), "packages": packages,
            **_gpus(), "cpu": _cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform()}  # fmt: skip


def record(cfg, world: int = 1) -> dict:
    """A trial's ``provenance.json``: its environment, the driver's fingerprints, its effective batch."""
    tr = cfg.training
    return {"version": RECORD_VERSION, "recorded_at": time.time(), "environment": environment(),
            "inputs": cfg.provenance or {}, "world": world,
            "effective_batch": tr.batch_size * tr.grad_accum * world}  # fmt: skip


def write(cfg, world: int, save_artifact) -> None:
    """Write the trial's record (each attempt rewrites it: a resumed trial records where it finished)."""
    save_artifact(PROVENANCE_FILE, json.dumps(record(cfg, world), indent=1, default=str).encode())
