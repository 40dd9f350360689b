"""GRPO through TRL: learning on a tiny model, per-step stats in PPO's shape, composite terms as reward functions."""

from __future__ import annotations

import math

import pytest
from helpers import POOL, word_policy

from refine_af.config import RewardConfig, RLConfig
from refine_af.grpo import TermReward, run_grpo
from refine_af.rewards import CompositeReward

pytestmark = pytest.mark.usefixtures("one_thread")



def count_a(instructions: list[str], completions: list[str]) -> list[float]:
    return [float(c.split().count("a")) for c in completions]



@pytest.mark.slow
def test_grpo_raises_the_reward_and_reports_kl(tmp_path):
    model, tok = word_policy()
    rl = RLConfig(algorithm="grpo", steps=24, batch_size=8, max_new_tokens=8, learning_rate=1e-2, kl_coef=0.01,
                  checkpoint_every=100, grpo={"num_generations": 4})
    stats = run_grpo(model, tok, rl, POOL, count_a, prompt_fn=lambda s: s, seed=0, output_dir=str(tmp_path))
    assert [s["step"] for s in stats] == list(range(1, 25))
    rewards = [s["reward/total"] for s in stats]
    assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 1.5, rewards  # measured: ~0.5 -> ~6
    assert stats[0]["kl"] == pytest.approx(0, abs=1e-6)
    assert all(math.isfinite(s["kl"]) for s in stats) and stats[-1]["kl"] > 0.5
    for key in ("reward/reward/mean", "reward/reward/weighted", "kl_coef", "policy_loss", "entropy",
                "response_length", "seconds/rollout", "seconds/scoring", "seconds/update"):
        assert math.isfinite(stats[-1][key]), key
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_term_reward_parses_completions_for_its_term():
    reward = CompositeReward.from_config(RewardConfig(), run_model="builtin")
    length = TermReward(reward, "length")
    assert length.__name__ == "length"
    chat = [[{"role": "assistant", "content": "x\nOutput: one two"}]]  # input-first completion, as a chat turn
    assert length(prompts=["p"], completions=chat, instruction=["i"], is_classification=[False],
                  trainer_state=None) == [1.0]
    assert length(prompts=["p"], completions=["Positive\nInput: I loved it."], instruction=["i"],
                  is_classification=[True]) == [1.0]  # output-first: the label is the output
    assert length(prompts=["p"], completions=["no second field"], instruction=["i"],
                  is_classification=[False]) == [0.0]  # unparseable: an empty instance
