"""TRL's side of benchmark 1: CPOTrainer(loss_type="simpo", cpo_alpha=0) and DPOTrainer, configured
for CPU float32 as in /work/shared/stack-notes.md ("TRL 1.16 on CPU"). TRL is imported only here,
never by the product (it is the optional extra ``bench``)."""

from __future__ import annotations

import tempfile

from bench.timing import StepClock, now, since


def _common(out_dir: str, settings: dict) -> dict:
    return {
        "output_dir": out_dir,
        "per_device_train_batch_size": settings["batch_size"],
        "num_train_epochs": 1,
        "learning_rate": settings["learning_rate"],
        "lr_scheduler_type": "cosine",
        "warmup_steps": settings["warmup_ratio"],  # a float below 1 is a ratio of the total steps
        "max_grad_norm": settings["max_grad_norm"],
        "weight_decay": 0.0,
        "max_length": settings["max_length"],
        "logging_steps": settings["log_every"],
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        "bf16": False,
        "seed": settings["seed"],
        "dataloader_num_workers": 0,
    }


def run_trl(method: str, rows: list[dict], policy, ref_model, tokenizer, settings: dict) -> dict:
    """Train one epoch; ``method`` is ``simpo``, ``dpo`` (online reference) or ``dpo-precomputed``.

    Returns the end-to-end seconds (data set construction, trainer set-up incl. tokenization and
    reference precomputation, and training) and the per-step durations."""
    import datasets
    from transformers import PrinterCallback, TrainerCallback

    clock = StepClock()

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            clock.start()

        def on_step_end(self, args, state, control, **kw):
            clock.tick()

    with tempfile.TemporaryDirectory(prefix="bench-trl-") as tmp:
        t0 = now()
        data = datasets.Dataset.from_list(rows)
        if method == "simpo":
            from trl.experimental.cpo import CPOConfig, CPOTrainer

            args = CPOConfig(
                **_common(tmp, settings),
                loss_type="simpo",
                cpo_alpha=0.0,
                beta=settings["beta"],
                simpo_gamma=settings["gamma"],
            )
            trainer = CPOTrainer(
                model=policy, args=args, train_dataset=data, processing_class=tokenizer, callbacks=[Clock()]
            )
        else:
            from trl import DPOConfig, DPOTrainer

            args = DPOConfig(
                **_common(tmp, settings),
                beta=settings["dpo_beta"],
                precompute_ref_log_probs=method == "dpo-precomputed",
            )
            trainer = DPOTrainer(
                model=policy,
                ref_model=ref_model,
                args=args,
                train_dataset=data,
                processing_class=tokenizer,
                callbacks=[Clock()],
            )
        trainer.remove_callback(PrinterCallback)  # printing logs costs time; ablate prints nothing either
        out = trainer.train()
        e2e = since(t0)
    return {
        "e2e_s": e2e[0],
        "e2e_cpu_s": e2e[1],
        "step_s": clock.durations(0),
        "step_cpu_s": clock.durations(1),
        "steps": out.global_step,
        "tokens": _tokens(trainer.train_dataset),
        "loss": out.training_loss,
    }


def _tokens(dataset) -> int:
    """Non-padding tokens of one epoch (prompt twice, chosen, rejected), read from TRL's tokenized data."""
    cols = dataset.column_names
    if "chosen_input_ids" in cols:  # CPOTrainer: full sequences
        return sum(len(x) for x in dataset["chosen_input_ids"]) + sum(
            len(x) for x in dataset["rejected_input_ids"]
        )
    prompt = sum(len(x) for x in dataset["prompt_ids"])
    return (
        2 * prompt + sum(len(x) for x in dataset["chosen_ids"]) + sum(len(x) for x in dataset["rejected_ids"])
    )
