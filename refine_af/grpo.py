"""GRPO for the rl stage: a thin runner around TRL 1.16's GRPOTrainer, with the same rewards and LoRA as PPO.

The alternative to the paper's PPO (`refine_af/ppo.py`): no value head, advantages from groups of
`rl.grpo.num_generations` completions per instruction. Each reward term is passed to TRL as its own reward function
(named after the term, so TRL logs `rewards/<term>/mean`) with `reward_weights` from `rl.reward.<term>.weight`;
TRL sums them, then normalises within each group. The KL penalty uses `rl.kl_coef` as TRL's `beta` (fixed; the
reference model is the policy with its adapter disabled, as in PPO). Precision is fp32 and gradient checkpointing is
off on CPU: TRL defaults to bf16 and checkpointing, about 6x slower on CPUs without bf16 units.

Unlike PPO, GRPO's rollouts get no stop strings (TRL's generate takes none), so they run to EOS or
max_new_tokens: the text after the instance is ignored by the parser but still generated and trained on.

    stats = run_grpo(model, tokenizer, config.rl, records, reward, seed=config.seed)   # one dict per step
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from refine_af import instance_format, seeds
from refine_af.generate import Prompt
from refine_af.models import bf16, lora_config, save_adapter
from refine_af.ppo import rollout_prompt
from refine_af.rewards import CompositeReward, task_of


class TermReward:
    """One reward term as a TRL reward function; the dataset's instruction columns arrive as keyword lists.

    Completions are parsed with `instance_format.parse`; an unparseable one scores as an empty instance.
    """

    def __init__(self, reward: CompositeReward, term: str):
        self.reward, self.term, self.__name__ = reward, term, term

    def __call__(self, prompts: list, completions: list, instruction: list[str], is_classification: list[bool],
                 **kwargs: Any) -> list[float]:
        pairs = [instance_format.parse(_text(c), cls) or ("", "")
                 for c, cls in zip(completions, is_classification, strict=True)]
        return self.reward.score_term(self.term, instruction, [p[0] for p in pairs], [p[1] for p in pairs])


class PlainReward:
    """A `(instructions, completions) -> list[float]` callable as one TRL reward function named "reward"."""

    __name__ = "reward"

    def __init__(self, fn: Callable[[list[str], list[str]], list[float]]):
        self.fn = fn

    def __call__(self, prompts: list, completions: list, instruction: list[str], **kwargs: Any) -> list[float]:
        return [float(x) for x in self.fn(list(instruction), [_text(c) for c in completions])]


def _text(completion: Any) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else completion  # chat or plain completion


def run_grpo(model: Any, tokenizer: Any, config: Any, records: Sequence[Any],
             reward: CompositeReward | Callable[[list[str], list[str]], list[float]], *,
             prompt_fn: Callable[[Any], Prompt] = rollout_prompt, seed: int = 0, output_dir: str = "grpo-output",
             steps: int | None = None, resume: str | bool | None = None, base_ref: str | None = None,
             on_step: Callable[[dict], None] | None = None,
             on_checkpoint: Callable[[Path, list[dict]], None] | None = None) -> list[dict[str, float]]:
    """Train `model` + LoRA with GRPO for `steps` (default config.steps) steps; per-step stats, PPO's keys.

    `records` are instruction records as for PPO (strings, or rows with `instruction` and `is_classification`);
    `prompt_fn` defaults to the instances stage's prompt. A plain `reward` callable gets (instructions,
    completions). Each step samples batch_size completions (batch_size / num_generations instructions). Keys: step,
    reward/total, reward/total/std, reward/<term>/{mean,std,weighted}, kl (per response: TRL's per-token KL times
    the mean length), kl_per_token, kl_coef, policy_loss, entropy, clip_fraction, response_length and
    seconds/{rollout,scoring,update}. Checkpoints (TRL's format, every checkpoint_every steps) go to `output_dir`;
    `resume` is passed to `Trainer.train(resume_from_checkpoint=...)`; `on_step(row)` sees each step's stats and
    `on_checkpoint(path, rows)` each checkpoint TRL has just written, with the stats so far. The final adapter is
    saved in `output_dir/adapter/` (peft format); `model` itself carries the LoRA layers afterwards.
    """
    from transformers import PrinterCallback
    from trl import GRPOTrainer

    funcs, weights = _reward_functions(reward)
    args = _grpo_config(config, weights, output_dir=output_dir, steps=steps or config.steps, seed=seed)
    data = _dataset(records, prompt_fn)
    # transformers' Trainer seeds the global RNGs itself (args.seed), restores them from a checkpoint on resume and
    # samples from them; the LoRA init in GRPOTrainer.__init__ comes before that seeding: scope all of it to this call
    with seeds.global_rng(seed):
        trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=data,
                              processing_class=tokenizer, peft_config=lora_config(config.lora))
        stats: list[dict[str, float]] = []
        term_weights = dict(zip([f.__name__ for f in funcs], weights, strict=True))
        collect = _collector(_time_calls(trainer), term_weights, config.kl_coef, stats, on_step, on_checkpoint)
        trainer.remove_callback(PrinterCallback)  # TRL prints every log dict when tqdm is off; we return them
        trainer.add_callback(collect)
        trainer.train(resume_from_checkpoint=resume)
    adapter = f"{output_dir}/adapter"  # the trained LoRA, peft format, for the backends
    if base_ref:  # named by the run's model reference, not this machine's cache path
        save_adapter(trainer.model, adapter, base_ref)
    else:
        trainer.model.save_pretrained(adapter)
    return stats


def _reward_functions(reward: CompositeReward | Callable) -> tuple[list[Any], list[float]]:
    """TRL reward functions and their weights: a composite reward's terms, or the plain callable with weight 1."""
    if isinstance(reward, CompositeReward):
        return [TermReward(reward, term) for term in reward.scorers], [reward.weights[term] for term in reward.scorers]
    return [PlainReward(reward)], [1.0]


def _grpo_config(config: Any, weights: list[float], *, output_dir: str, steps: int, seed: int) -> Any:
    """TRL's GRPOConfig from the rl settings: one optimisation pass per generation, a constant learning rate, a log
    row every step; bf16 only on GPUs that have it."""
    import torch
    from trl import GRPOConfig

    cuda = torch.cuda.is_available()  # TRL trains where the model is: the first GPU when there is one
    return GRPOConfig(
        output_dir=output_dir, max_steps=steps, per_device_train_batch_size=config.batch_size,
        num_generations=config.grpo.num_generations, max_completion_length=config.max_new_tokens,
        temperature=config.temperature, top_p=config.top_p, learning_rate=config.learning_rate,
        beta=config.kl_coef, epsilon=config.clip_range, max_grad_norm=config.max_grad_norm, num_iterations=1,
        reward_weights=weights, bf16=bf16("cuda" if cuda else "cpu"), use_cpu=not cuda,
        activation_checkpointing=False, logging_steps=1, save_strategy="steps", save_steps=config.checkpoint_every,
        report_to="none", seed=seed, disable_tqdm=True, lr_scheduler_type="constant")


def _dataset(records: Sequence[Any], prompt_fn: Callable[[Any], Prompt]) -> Any:
    """The prompts, with the instruction columns the reward functions receive as keyword lists."""
    from datasets import Dataset

    tasks = [task_of(r) for r in records]
    return Dataset.from_dict({"prompt": [prompt_fn(r) for r in records], "instruction": [t[0] for t in tasks],
                              "is_classification": [t[1] for t in tasks]})


def _time_calls(trainer: Any) -> dict[str, float]:
    """Time the trainer's generation and reward calls, summed per step into the returned clock: TRL reports no time
    split, and the rest of a step is the update."""
    clock = {"rollout": 0.0, "scoring": 0.0, "start": 0.0}

    def timed(name: str, fn: Callable) -> Callable:
        def wrapper(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                clock[name] += time.perf_counter() - t
        return wrapper

    trainer._generate = timed("rollout", trainer._generate)
    trainer._calculate_rewards = timed("scoring", trainer._calculate_rewards)
    return clock


def _stats_row(logs: dict, step: int, term_weights: dict[str, float], kl_coef: float, clock: dict[str, float],
               total: float) -> dict[str, float]:
    """One step's TRL log as PPO's stats (`total`: the step's seconds so far)."""
    length = logs.get("completions/mean_length", float("nan"))
    row = {"step": step, "reward/total": logs["reward"], "reward/total/std": logs.get("reward_std", float("nan"))}
    for term, w in term_weights.items():
        mean = logs.get(f"rewards/{term}/mean", float("nan"))
        row.update({f"reward/{term}/mean": mean, f"reward/{term}/std": logs.get(f"rewards/{term}/std"),
                    f"reward/{term}/weighted": w * mean})
    kl_token = logs.get("kl", 0.0)
    row.update(kl=kl_token * length, kl_per_token=kl_token, kl_coef=kl_coef,
               policy_loss=logs.get("policy_loss", logs.get("loss", float("nan"))),
               entropy=logs.get("entropy", float("nan")),
               clip_fraction=logs.get("clip_ratio/region_mean", float("nan")), response_length=length)
    row.update({"seconds/rollout": clock["rollout"], "seconds/scoring": clock["scoring"],
                "seconds/update": total - clock["rollout"] - clock["scoring"], "seconds": total})
    return row


def _collector(clock: dict[str, float], term_weights: dict[str, float], kl_coef: float, stats: list[dict],
               on_step: Callable[[dict], None] | None,
               on_checkpoint: Callable[[Path, list[dict]], None] | None) -> Any:
    """A TrainerCallback that restarts the clock each step, appends each step's row to `stats` and passes it to
    `on_step`, and hands each checkpoint TRL writes to `on_checkpoint`."""
    from transformers import TrainerCallback

    class Collect(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            clock.update(rollout=0.0, scoring=0.0, start=time.perf_counter())

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
            if not logs or "reward" not in logs:
                return
            total = time.perf_counter() - clock["start"]
            row = _stats_row(logs, state.global_step, term_weights, kl_coef, clock, total)
            stats.append(row)
            if on_step:
                on_step(row)

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if on_checkpoint:
                on_checkpoint(Path(args.output_dir) / f"checkpoint-{state.global_step}", list(stats))

    return Collect()
