"""Stage `sft-<arm>`: LoRA fine-tuning of the base model on the arm's instruction dataset (TRL's SFTTrainer).

    refine-af run --stages sft-refine-af,sft-self-instruct --set sft.epochs=3

Each row becomes a prompt-completion pair: the prompt is `instruction_format.instruction_prompt(instruction, input)`
(prompts/instruction_prompt*.txt, the format evaluation uses), as a user turn for chat models and raw text for base
models (`generate.as_user_turn`); the completion is the assistant turn, or " " + output followed by EOS for base
models. The loss is on the
completion only (TRL's `completion_only_loss`: prompt tokens get label -100). Examples are cut at `sft.max_length`
tokens; one whose prompt alone fills it has nothing left to learn and TRL drops it (counted as dropped_too_long).
Precision is fp32 on CPU (bf16 is emulated there, ~10x slower) and bf16 on GPUs that support it; gradient
checkpointing is on for GPUs only. Every `sft.checkpoint_every` optimiser steps the trainer's state (adapter,
optimiser, scheduler, RNG, data position) goes to the store (`refine_af.checkpoints`); a killed stage resumes from
the latest checkpoint instead of starting over.

Inputs:  `dataset` (instances-<arm>'s dataset.jsonl: instruction, input, output; provenance ignored)
Outputs: <run>/sft-<arm>/adapter/             the LoRA adapter (peft: adapter_config.json, adapter_model.safetensors)
         <run>/sft-<arm>/metrics.jsonl        one row per optimiser step: step, epoch, loss, learning_rate,
                                              grad_norm, mean_token_accuracy, seconds (since training began)
         <run>/sft-<arm>/merged/              with sft.merge: full merged weights + tokenizer, for serving
         <run>/sft-<arm>/checkpoints/step-NNNNN/  the latest checkpoint while training (TRL's format + metrics)
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from refine_af import checkpoints, models, progress, seeds
from refine_af.errors import RefineError
from refine_af.generate import as_user_turn
from refine_af.instruction_format import instruction_prompt
from refine_af.readers import read_dataset
from refine_af.runner import StageContext
from refine_af.store import jsonl_bytes

log = logging.getLogger(__name__)

LOG_LINES = 10  # progress lines per run (every row still goes to metrics.jsonl)
STATE = "trainer_state.json"  # the file of a Trainer checkpoint uploaded last: its presence marks it complete


def build_trainer(model: Any, tokenizer: Any, rows: list[dict], cfg: Any, *, seed: int, device: str,
                  output_dir: str) -> Any:
    """TRL's SFTTrainer with a fresh LoRA adapter on `model` and the rows as prompt-completion pairs.

    Build and train it inside `seeds.global_rng(seed)`: the LoRA init (in SFTTrainer.__init__, before the Trainer
    seeds anything) and the Trainer's own draws take the global RNGs, with no way to pass a generator."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    cuda = device.startswith("cuda")
    args = SFTConfig(
        output_dir=output_dir, num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size // cfg.gradient_accumulation,
        gradient_accumulation_steps=cfg.gradient_accumulation, warmup_steps=cfg.warmup_ratio,  # < 1: a ratio
        max_length=cfg.max_length, completion_only_loss=True, bf16=models.bf16(device),
        use_cpu=not cuda, activation_checkpointing=cuda, logging_steps=1, save_strategy="steps",
        save_steps=cfg.checkpoint_every, save_total_limit=1, report_to="none", seed=seed, disable_tqdm=True)
    lora = models.lora_config(cfg.lora)
    prompts = [as_user_turn(tokenizer, instruction_prompt(r["instruction"], r["input"])) for r in rows]
    if isinstance(prompts[0], str):  # a base model: raw text, the completion continues "Output:"
        completions: list[Any] = [" " + r["output"].strip() for r in rows]
    else:  # a chat model: TRL renders both turns with its template
        completions = [[{"role": "assistant", "content": r["output"].strip()}] for r in rows]
    data = Dataset.from_dict({"prompt": prompts, "completion": completions})
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora)
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; StepLog logs a line every few steps
    return trainer


def run(ctx: StageContext) -> None:
    arm, cfg, config = ctx.stage.params["arm"], ctx.config.sft, ctx.config
    source = ctx.input("dataset")
    rows, sha256 = read_dataset(ctx.store, source)  # validate inputs before touching the store
    device = models.pick_device(config.generation.device)
    model, tokenizer = models.load_causal_lm(config.model, cache_dir=config.cache_dir, s3=config.s3, device=device,
                                             dtype=config.generation.dtype)

    with tempfile.TemporaryDirectory(prefix="refine-af-sft-") as tmp, seeds.global_rng(config.seed):
        trainer = build_trainer(model, tokenizer, rows, cfg, seed=config.seed, device=device, output_dir=tmp)
        if not len(trainer.train_dataset):
            raise RefineError(f"{ctx.name}: every example's prompt fills sft.max_length ({cfg.max_length} tokens), "
                              "leaving no completion to train on: raise sft.max_length")
        ctx.begin()

        # 1. Train, one metrics row per optimiser step, from the latest checkpoint when there is one.
        steps, resume = StepLog(ctx), None
        latest = checkpoints.latest(ctx, STATE)
        if latest:
            resume = Path(tmp) / f"checkpoint-{checkpoints.step_of(latest)}"
            steps.rows = checkpoints.restore(ctx, latest, resume)
        trainer.add_callback(steps)
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)

        # 2. Outputs: the adapter, the metrics and, on request, the merged model.
        models.save_adapter(trainer.model, f"{tmp}/adapter", config.model)
        ctx.upload_output(f"{tmp}/adapter", "adapter")
        ctx.write_output("metrics.jsonl", jsonl_bytes(steps.rows))
        if cfg.merge:
            merged = trainer.model.merge_and_unload()
            merged.save_pretrained(f"{tmp}/merged")
            tokenizer.save_pretrained(f"{tmp}/merged")
            ctx.upload_output(f"{tmp}/merged", "merged")
        checkpoints.clear(ctx)

    trained = len(trainer.train_dataset)
    ctx.counts.update(examples=len(rows), trained=trained, dropped_too_long=len(rows) - trained,
                      steps=result.global_step)
    first, final = steps.rows[0]["loss"], steps.rows[-1]["loss"]
    trained_here = result.global_step - (checkpoints.step_of(latest) if latest else 0)  # this process's steps
    ctx.metrics.update(first_loss=first, final_loss=final,
                       train_loss=round(statistics.fmean(r["loss"] for r in steps.rows), 4),
                       seconds_per_step=round(result.metrics["train_runtime"] / max(1, trained_here), 4))
    ctx.provenance.update(model=models.describe(config.model), arm=arm, dataset=source, dataset_sha256=sha256,
                          precision="bf16" if trainer.args.bf16 else "fp32", device=device)
    log.info("%s: %d examples, %d steps, loss %.3f -> %.3f, %.2f s/step, adapter at %s", ctx.name, trained,
             result.global_step, first, final, ctx.metrics["seconds_per_step"], f"{ctx.store.uri}/{ctx.key('adapter')}")


class StepLog(TrainerCallback):
    """Trainer callback: a metrics row per logged step, a log line every `max_steps / LOG_LINES` steps, and each
    checkpoint the Trainer writes (but the last, which the adapter supersedes) copied to the store with the rows."""

    def __init__(self, ctx: StageContext):
        self.ctx, self.rows, self.start = ctx, [], time.perf_counter()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.start = time.perf_counter()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
        if not logs or "loss" not in logs:  # the closing summary (train_loss, train_runtime) has no "loss"
            return
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "loss": round(logs["loss"], 4),
               "learning_rate": logs.get("learning_rate"), "grad_norm": _round(logs.get("grad_norm")),
               "mean_token_accuracy": _round(logs.get("mean_token_accuracy")),
               "seconds": round(time.perf_counter() - self.start, 2)}
        self.rows.append(row)
        progress.report(state.global_step, state.max_steps)
        every = max(1, state.max_steps // LOG_LINES)
        if state.global_step % every == 0 or state.global_step == state.max_steps:
            log.info("%s: step %d/%d epoch %.2f loss %.4f lr %.2e", self.ctx.name, state.global_step, state.max_steps,
                     row["epoch"], row["loss"], row["learning_rate"] or 0.0)

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step < state.max_steps:
            local = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            checkpoints.save(self.ctx, local, state.global_step, self.rows, STATE)


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)
