"""PPO: the pure functions against hand-computed values, learning on a tiny model, exact resume."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from helpers import POOL, word_policy

from refine_af.config import RLConfig
from refine_af.generate import SamplingParams
from refine_af.ppo import (
    KLController,
    PPOTrainer,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    rollout_prompt,
    sampled_ids,
    whiten,
)

pytestmark = pytest.mark.usefixtures("one_thread")



def count_a(instructions: list[str], completions: list[str]) -> list[float]:
    return [float(c.split().count("a")) for c in completions]


def trainer(**overrides) -> PPOTrainer:
    model, tok = word_policy()
    rl = RLConfig(**{"batch_size": 8, "minibatches": 2, "ppo_epochs": 2, "max_new_tokens": 8,
                     "learning_rate": 5e-3, "kl_coef": 0.01, **overrides})
    return PPOTrainer(model, tok, rl, count_a, prompt_fn=lambda s: s, stop=(), seed=0)  # HF stop strings need BPE



# -- pure functions -------------------------------------------------------------------------------------------------


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 0.3], [1.0, 1.0, 5.0]])  # 5.0 sits past the end of row 2: ignored
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 1: deltas 0.9*0.4-0.5=-0.14, 0.9*0.3-0.4=-0.13, 1-0.3=0.7; A_t = delta_t + 0.72 * A_{t+1}
    # row 2: deltas 0.9*1-1=-0.1, 2-1=1 (no value after the end), then padding
    expected = torch.tensor([[-0.14 + 0.72 * (-0.13 + 0.72 * 0.7), -0.13 + 0.72 * 0.7, 0.7], [-0.1 + 0.72, 1.0, 0.0]])
    assert torch.allclose(advantages, expected)
    assert torch.allclose(returns, (expected + values) * mask)


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1, 9.0]]))
    advantages = torch.tensor([[1.0, 1.0, -1.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last token is padding
    loss, clip_fraction = clipped_policy_loss(new, old, advantages, mask, clip_range=0.2)
    # max(-A r, -A clip(r)): -1.2 (clipped at 1.2), -0.5 (0.5 < 0.8 but the unclipped term is larger), 1.1
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.1) / 3)
    assert clip_fraction.item() == pytest.approx(1 / 3)


def test_clipped_value_loss_by_hand():
    values, old = torch.tensor([[2.0, 0.8, 7.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    returns, mask = torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    # token 1: max((2-1)^2, (1.5-1)^2) = 1; token 2: max((0.8-1)^2, (0.5-1)^2) = 0.25; token 3 masked
    assert clipped_value_loss(values, old, returns, mask, clip_range=0.5).item() == pytest.approx(0.5 * 1.25 / 2)


def test_whiten_and_kl_controller():
    x, mask = torch.tensor([[1.0, 2.0, 3.0, 100.0]]), torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = whiten(x, mask)
    assert w[0, 3] == 0 and w[0, :3].mean().abs() < 1e-6 and w[0, :3].pow(2).mean().item() == pytest.approx(1, 1e-4)
    fixed = KLController(0.1)
    fixed.update(50.0, 8)
    assert fixed.value == 0.1
    adaptive = KLController(0.1, target=6.0, horizon=100)
    adaptive.update(12.0, 10)  # error clipped to +0.2: * (1 + 0.2 * 10 / 100)
    assert adaptive.value == pytest.approx(0.1 * 1.02)
    adaptive.update(3.0, 10)  # error -0.5 clipped to -0.2
    assert adaptive.value == pytest.approx(0.1 * 1.02 * 0.98)


# -- the trainer on a tiny model ------------------------------------------------------------------------------------


def test_evaluate_matches_generation_logprobs():
    """Padding and positions: logprobs recomputed over the rollout batch equal those seen while sampling."""
    t = trainer()
    prompts = ["b c d e f g", "i"]  # different lengths: left padding in generation
    completions = t.backend.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=6, seed=1))
    traj = t._trajectory(completions, [0.0, 0.0])
    R = traj.response_mask.shape[1]
    with torch.no_grad():
        logprobs, _, _ = t._evaluate(traj.input_ids, traj.attention_mask, traj.position_ids, R)
    for row, c in enumerate(completions):  # each prompt alone, no padding at all
        ids = torch.tensor([c.prompt_ids + c.token_ids])
        with torch.no_grad():
            logits = t.policy(input_ids=ids).logits[0, len(c.prompt_ids) - 1 : -1]
        alone = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c.token_ids)[:, None]).squeeze(-1)
        assert torch.allclose(logprobs[row, : len(c.token_ids)], alone, atol=1e-5)


@pytest.mark.parametrize("epochs,minibatches", [(1, 2), (2, 2), (1, 1)])  # (1, 1): the fused single pass
@pytest.mark.slow
def test_ppo_raises_the_reward_and_reports_kl(caplog, epochs, minibatches):
    lr = 5e-3 * 4 / (epochs * minibatches)  # about the same total movement per step
    t = trainer(warn_kl=3.0, ppo_epochs=epochs, minibatches=minibatches, learning_rate=lr)
    with caplog.at_level(logging.WARNING, logger="refine_af.ppo"):
        stats = [t.train_step(t.next_batch(POOL)) for _ in range(24)]
    rewards = [s.reward for s in stats]
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 1.5, rewards  # measured: ~0.5 -> ~5 "a" per 8-word response
    assert stats[0].kl == pytest.approx(0, abs=1e-6)  # a fresh adapter is the base model
    assert all(math.isfinite(s.kl) and math.isfinite(s.value_loss) for s in stats)
    assert stats[-1].kl > 0.5 and stats[-1].entropy < stats[0].entropy
    row = stats[-1].as_dict()
    for key in ("reward/total", "kl", "kl_coef", "policy_loss", "value_loss", "entropy", "response_length",
                "seconds/rollout", "seconds/scoring", "seconds/update"):
        assert math.isfinite(row[key]), key
    assert "KL to the base model" in caplog.text and "top responses" in caplog.text  # drift warning, with samples


def test_composite_reward_terms_reach_the_stats():
    from refine_af.rewards import RewardBreakdown

    def two_terms(instructions, completions):
        a = count_a(instructions, completions)
        n = [float(len(c.split())) for c in completions]
        return RewardBreakdown([x + 0.5 * y for x, y in zip(a, n, strict=True)], {"a": a, "words": n},
                               {"a": a, "words": [0.5 * y for y in n]})

    t = trainer()
    t.reward_fn = two_terms
    row = t.train_step(t.next_batch(POOL)).as_dict()
    assert row["reward/words/weighted"] == pytest.approx(0.5 * row["reward/words/mean"])
    assert row["reward/total"] == pytest.approx(row["reward/a/weighted"] + row["reward/words/weighted"])


def test_save_load_resumes_exactly(tmp_path):
    a = trainer(target_kl=1.0, kl_horizon=50)  # adaptive KL, so its state matters too
    for _ in range(2):
        a.train_step(a.next_batch(POOL))
    a.save(tmp_path / "ckpt")
    after = a.train_step(a.next_batch(POOL))

    b = trainer(target_kl=1.0, kl_horizon=50)
    torch.manual_seed(123)  # disturb the global RNG: nothing after the LoRA init may depend on it
    b.load(tmp_path / "ckpt")
    assert (b.step, b.cursor) == (2, 16)
    resumed = b.train_step(b.next_batch(POOL))
    keys = [k for k in after.as_dict() if not k.startswith("seconds/")]
    assert {k: after.as_dict()[k] for k in keys} == pytest.approx({k: resumed.as_dict()[k] for k in keys}, abs=1e-6)
    assert a.last_rollouts == b.last_rollouts
    for (name, pa), (_, pb) in zip(a.policy.named_parameters(), b.policy.named_parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6), name
    assert torch.allclose(a.value_head.weight, b.value_head.weight, atol=1e-6)
    assert (tmp_path / "ckpt" / "adapter" / "adapter_config.json").is_file()  # peft format for the backends


def test_stop_strings_and_the_instances_prompt(builtin_tokenizer):
    from refine_af import instance_format

    tok = builtin_tokenizer
    ids = tok("a cat\nOutput: a dog\n\nTask: more", add_special_tokens=False)["input_ids"]
    cut = sampled_ids(ids + [tok.pad_token_id] * 3, tok, instance_format.STOP)
    assert "Task:" in tok.decode(cut) and "more" not in tok.decode(cut) and cut == ids[: len(cut)]
    eos = tok("a dog", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert sampled_ids(eos, tok, instance_format.STOP) == eos
    assert rollout_prompt({"instruction": "Is it spam?", "is_classification": True}) == instance_format.build(
        "Is it spam?", True)
    assert rollout_prompt("Add 2 and 3.") == instance_format.build("Add 2 and 3.", False)


def test_the_trainer_leaves_the_global_rng_alone():
    """The local runner runs every stage in one process: a trainer must not reseed or advance the global RNGs, and
    its LoRA init depends on its seed alone."""
    def lora_a(global_seed: int) -> dict[str, torch.Tensor]:
        model, tok = word_policy()  # seeds the global RNG itself
        torch.manual_seed(global_seed)
        state = torch.get_rng_state()
        t = PPOTrainer(model, tok, RLConfig(batch_size=4, max_new_tokens=4), count_a, prompt_fn=lambda s: s, stop=())
        init = {n: p.detach().clone() for n, p in t.policy.named_parameters() if "lora_A" in n}
        t.train_step(t.next_batch(POOL))
        assert torch.equal(torch.get_rng_state(), state)
        return init

    first, second = lora_a(5), lora_a(6)
    assert first and all(torch.equal(first[n], second[n]) for n in first)
