"""Judging on a GPU (a lent machine; docs/judging.md): a built-in trial in bf16 on CUDA that generates by
sampling and is judged by the oracle, the built-in reward model and a local Hugging Face reward model
with a chat template, its wall time with and without the judges, and a reward model's batched scores
against its scores one pair at a time on the GPU (float32 and bf16).

    python -m bench.gpu_judging [--out DIR]     # writes gpu_judging.json there
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    import sklearn
    import torch
    import transformers

    from ablate import models
    from ablate import spec as spec_mod
    from ablate.judging import judges
    from ablate.spec.evaluation import JudgeSpec
    from ablate.trial import startpoint
    from ablate.trial.runner import run_trial
    from tests.test_judges import save_tiny_reward_model

    p = argparse.ArgumentParser()
    p.add_argument("--out", default=".")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    out: dict = {"torch": torch.__version__, "transformers": transformers.__version__, "sklearn": sklearn.__version__,
                 "cuda": torch.cuda.is_available(), "device": str(models.pick_device())}  # fmt: skip
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    tmp = Path(tempfile.mkdtemp(prefix="gpu-judging-"))
    rm = save_tiny_reward_model(tmp / "tiny-rm")
    evaluation = {"num_prompts": 128, "max_new_tokens": 16,
                  "generation": {"temperature": 0.7, "top_p": 0.9, "stop_token_ids": [3]}}  # fmt: skip
    sweep = {"name": "gpu-judging", "cache_dir": str(tmp / "cache"), "methods": [{"method": "simpo"}],
             "data": {"task": {"n_train": 512, "n_eval": 128, "n_sft": 1000}}, "sft": {"epochs": 2},
             "training": {"learning_rate": 3e-5}, "evaluation": evaluation}  # fmt: skip
    configs = {}
    for name, js in (("no judge", []), ("three judges", ["builtin:oracle", "builtin:reward-model",
                                                         {"name": str(rm), "label": "tiny-rm"}])):  # fmt: skip
        spec = spec_mod.SweepSpec.model_validate({**sweep, "evaluation": {**evaluation, "judges": js}})
        t0 = time.perf_counter()
        start = startpoint.prepare_sweep(spec, log=lambda *_: None)
        out[f"prepare_s ({name})"] = time.perf_counter() - t0
        configs[name] = {**spec_mod.expand(spec)[0], "start": start}
    times: dict[str, list[float]] = {n: [] for n in configs}
    for rep in range(args.reps + 1):
        for name, cfg in configs.items():
            final = run_trial(cfg, report=lambda _: None)
            assert final["status"] == "finished", final["status"]
            if rep:
                times[name].append(final["trial_s"])
            if rep == 1 and name == "three judges":
                out["metrics"] = {k: v for k, v in final.items() if "@" in k or k in (
                    "oracle_win_rate", "gen_length", "repeat_4gram_rate", "distinct_2", "hit_max_tokens_rate",
                    "chosen_logp_change", "peak_memory_mb")}  # fmt: skip
    out["trial_s_median"] = {n: statistics.median(v) for n, v in times.items()}
    out["judging_overhead"] = out["trial_s_median"]["three judges"] / out["trial_s_median"]["no judge"] - 1
    device = models.pick_device()
    prompts = [f"Q: w{i:02d} w{(i + 5) % 24:02d} A:" for i in range(24)]
    answers = [" ".join(["w01"] * (i % 7)) for i in range(24)]
    for dtype in ("float32", "bfloat16"):
        judge = judges.RewardModelJudge(JudgeSpec(name=str(rm), batch_size=8, dtype=dtype), str(rm), device)
        batched = judge.score(prompts, answers)
        alone = [judge.score([q], [a])[0] for q, a in zip(prompts, answers, strict=True)]
        out[f"rm_batched_vs_alone_max_abs_{dtype}"] = max(abs(a - b) for a, b in zip(batched, alone, strict=True))
        out[f"rm_score_range_{dtype}"] = [min(alone), max(alone)]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_judging.json").write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
