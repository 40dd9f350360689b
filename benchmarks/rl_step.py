"""Benchmark: seconds per RL step, split into rollout / scoring / update, for PPO and TRL's GRPO.

    python benchmarks/rl_step.py              # 1 warm-up + 3 timed steps per row (~12 min on 2 cores)
    python benchmarks/rl_step.py --steps 1    # smoke run

Same run, same conditions for every row: the builtin model (SmolLM2-135M-Instruct, fp32, CPU), 8 completions per
step of up to 24 new tokens, the default LoRA (r=8 on q/k/v/o), the CPU-default composite reward (likelihoods under
the builtin model), KL coefficient 0.05 (PPO's penalty, GRPO's beta), the instances stage's prompt
(`instance_format.build`) over the package's seed instructions. PPO stops at the instance's end
(`instance_format.STOP`); TRL's generate takes no stop strings, so GRPO runs to EOS or 24 tokens. Rows:
    ppo 1x1    the shipped default: one epoch, one minibatch: the same forward/backward budget as GRPO's single
               pass (the rollout's forward pass is the update's; the clip never binds)
    ppo 1x2    one epoch of 2 minibatches (one extra no-grad forward pass; the second minibatch is off-policy by
               one update, so the clip matters)
    ppo 2x2    2 epochs x 2 minibatches
    grpo       TRL GRPOTrainer, 2 instructions x 4 generations, num_iterations=1, bf16 off, no checkpointing
The rollout time of GRPO is its `_generate`, scoring its `_calculate_rewards`; the rest of the step is "update"
(for PPO "update" includes the policy and reference forward passes). Timings depend on the load of the machine:
the load average is printed with the table. On a loaded 2-core machine `--threads 1` avoids OpenMP threads waiting
on each other (measured 5x faster generation at load average 4).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from refine_af.config import RewardConfig, RLConfig
from refine_af.grpo import run_grpo
from refine_af.models import load_causal_lm
from refine_af.ppo import PPOTrainer
from refine_af.rewards import CompositeReward

SEEDS = ROOT / "refine_af" / "data" / "seed_tasks.jsonl"


def ppo_row(instructions: list[dict], reward: CompositeReward, rl: RLConfig, steps: int) -> list[dict]:
    model, tokenizer = load_causal_lm("builtin", device="cpu")
    trainer = PPOTrainer(model, tokenizer, rl, reward.score_completions, seed=0)
    return [trainer.train_step(trainer.next_batch(instructions)).as_dict() for _ in range(steps + 1)][1:]


def grpo_row(instructions: list[dict], reward: CompositeReward, rl: RLConfig, steps: int) -> list[dict]:
    model, tokenizer = load_causal_lm("builtin", device="cpu")
    with tempfile.TemporaryDirectory() as out:
        stats = run_grpo(model, tokenizer, rl, instructions, reward, seed=0, output_dir=out, steps=steps + 1)
    return stats[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row (after one warm-up step)")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    instructions = [{k: row[k] for k in ("instruction", "is_classification")}
                    for row in map(json.loads, SEEDS.read_text().splitlines())]
    base = {"batch_size": 8, "max_new_tokens": 24, "kl_coef": 0.05, "checkpoint_every": 10_000}
    rows = {
        "ppo 1x1": (ppo_row, RLConfig(**base, ppo_epochs=1, minibatches=1)),
        "ppo 1x2": (ppo_row, RLConfig(**base, ppo_epochs=1, minibatches=2)),
        "ppo 2x2": (ppo_row, RLConfig(**base, ppo_epochs=2, minibatches=2)),
        "grpo": (grpo_row, RLConfig(**base, algorithm="grpo", grpo={"num_generations": 4})),
    }
    results, loads = {}, {}
    for name, (run, rl) in rows.items():
        reward = CompositeReward.from_config(RewardConfig(), run_model="builtin", device="cpu").load()
        t = time.perf_counter()
        stats = run(instructions, reward, rl, args.steps)
        results[name] = stats
        loads[name] = os.getloadavg()[0]
        print(f"{name}: {len(stats)} timed steps in {time.perf_counter() - t:.0f} s (with warm-up)", flush=True)

    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch "
          f"threads; mean over {args.steps} steps after 1 warm-up step; load: 1-minute load average when the "
          f"row ended\n")
    print(f"{'algorithm':<10} {'rollout s':>10} {'scoring s':>10} {'update s':>10} {'total s':>9} "
          f"{'tokens':>7} {'reward':>7} {'load':>5}")
    for name, stats in results.items():
        parts = [statistics.mean(s[f"seconds/{k}"] for s in stats) for k in ("rollout", "scoring", "update")]
        length = statistics.mean(s["response_length"] for s in stats)
        reward = statistics.mean(s["reward/total"] for s in stats)
        print(f"{name:<10} {parts[0]:>10.2f} {parts[1]:>10.2f} {parts[2]:>10.2f} {sum(parts):>9.2f} "
              f"{length:>7.1f} {reward:>7.3f} {loads[name]:>5.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
