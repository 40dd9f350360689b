"""GRPO through TRL: learning on a tiny model, per-step stats in PPO's shape, composite terms as reward functions."""

from __future__ import annotations

import math

import pytest
import torch

from refine_af.config import RewardConfig, RLConfig
from refine_af.grpo import TermReward, run_grpo
from refine_af.rewards import CompositeReward

WORDS = ["<pad>", "<unk>", "</s>"] + list("abcdefghijklmnopqrst")
POOL = ["b c d", "e f g h", "i j", "k l m n o", "p q", "r s t"]


def tiny_policy():
    """A random 2-layer Llama over a 23-word vocabulary with a word-level tokenizer (as in test_ppo.py)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, initializer_range=0.1)
    return LlamaForCausalLM(config).eval(), tok


def count_a(instructions: list[str], completions: list[str]) -> list[float]:
    return [float(c.split().count("a")) for c in completions]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_grpo_raises_the_reward_and_reports_kl(tmp_path):
    model, tok = tiny_policy()
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
