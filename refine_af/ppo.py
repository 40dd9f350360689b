"""PPO with a KL penalty for the rl stage: the paper's optimiser, written here on torch + peft.

Hand-written because TRL 1.16 has no PPOTrainer (it moved to `trl.experimental`, then was removed); GRPO, which
TRL does have, is the alternative in `refine_af/grpo.py`. The loop follows Ziegler et al. 2019 / Stiennon et al.
2020 and reads like torchtune's `recipes/ppo_full_finetune_single_device.py`:

    1. rollout   the policy (base model + LoRA) answers a batch of instructions through the generation backend
    2. score     the composite reward scores each completion (a scalar per rollout)
    3. evaluate  one batched forward pass: token logprobs, entropies and values of the policy; a second with the
                 adapter disabled gives the frozen base model's logprobs (the same weights, no second copy).
                 With ppo_epochs = minibatches = 1 the first pass keeps its graph and is the update's pass too
    4. rewards   per-token reward = -kl_coef * (logp - ref_logp), plus the score on the last response token
    5. GAE       advantages with (gamma, lam), whitened over the batch; returns = advantages + values
    6. update    ppo_epochs passes over shuffled minibatches: clipped surrogate + vf_coef * clipped value loss
    7. KL        the coefficient stays fixed, or adapts toward target_kl (Ziegler's proportional controller)

The value head is one linear layer on the policy's last hidden state, trained with the LoRA parameters. Dropout is
off throughout (eval mode), so the rollout's logprobs and the update's agree at the first minibatch.

    trainer = PPOTrainer(model, tokenizer, config.rl, reward.score_completions, seed=config.seed)
    for _ in range(config.rl.steps):
        stats = trainer.train_step(trainer.next_batch(records))    # PPOStats; stats.as_dict() for metrics
    trainer.save("ckpt/")   # adapter (peft format) + full trainer state; PPOTrainer.load(...) resumes exactly
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from refine_af import instance_format, seeds
from refine_af.generate import Prompt, SamplingParams
from refine_af.generate.base import pad_rows
from refine_af.generate.hf import TransformersBackend
from refine_af.models import lora_config
from refine_af.rewards import RewardBreakdown, task_of

log = logging.getLogger(__name__)

RewardFn = Callable[[list[Any], list[str]], "list[float] | RewardBreakdown"]  # (records, completions)
STATE_FILE = "trainer_state.pt"


class Trajectory(NamedTuple):
    """One rollout batch. B rollouts, prompts left-padded to P tokens, responses right-padded to R tokens."""

    input_ids: torch.Tensor  # (B, P + R) long: prompt then response
    attention_mask: torch.Tensor  # (B, P + R) long: 1 on real tokens
    position_ids: torch.Tensor  # (B, P + R) long: positions counted over real tokens, as in generation
    response_mask: torch.Tensor  # (B, R) float: 1 on response tokens (through EOS when there is one)
    logprobs: torch.Tensor  # (B, R) log pi_old(token_t | state_t)
    ref_logprobs: torch.Tensor  # (B, R) log pi_base(token_t | state_t)
    values: torch.Tensor  # (B, R) V_old(state_t), the state before token t
    scores: torch.Tensor  # (B,) total reward of each rollout

    @property
    def model_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.input_ids, self.attention_mask, self.position_ids


class PPOStats(NamedTuple):
    """What one step did. Means are over the B rollouts unless said otherwise."""

    step: int  # 1-based count of completed steps
    reward: float  # total reward (weighted sum of the terms)
    reward_std: float
    terms: dict[str, dict[str, float]]  # term -> {"mean": raw, "std": raw, "weighted": weight * raw mean}
    kl: float  # sum over response tokens of (logp - ref_logp): KL(policy || base) estimate per response, nats
    kl_coef: float  # coefficient used in this step's rewards
    policy_loss: float  # mean over minibatches and epochs
    value_loss: float
    entropy: float  # mean per response token, nats
    clip_fraction: float  # share of response tokens whose ratio was clipped
    response_length: float  # tokens
    seconds_rollout: float
    seconds_scoring: float
    seconds_update: float  # evaluation forward passes, advantages and the PPO epochs

    def as_dict(self) -> dict[str, float]:
        """Flat metrics: reward/<term>/{mean,std,weighted}, reward/total, kl, ..., seconds/{rollout,...}."""
        out: dict[str, float] = {"step": self.step, "reward/total": self.reward, "reward/total/std": self.reward_std}
        for term, values in self.terms.items():
            out.update({f"reward/{term}/{k}": v for k, v in values.items()})
        out.update(kl=self.kl, kl_coef=self.kl_coef, policy_loss=self.policy_loss, value_loss=self.value_loss,
                   entropy=self.entropy, clip_fraction=self.clip_fraction, response_length=self.response_length)
        out.update({"seconds/rollout": self.seconds_rollout, "seconds/scoring": self.seconds_scoring,
                    "seconds/update": self.seconds_update})
        return out


# -- pure functions ------------------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries; 0 elsewhere."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded sequences. All (B, T); returns (advantages, returns).

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lam * A_{t+1}, with V and A zero past the end.
    """
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    T = rewards.shape[1]
    for t in reversed(range(T)):
        alive = mask[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        next_value = values[:, t + 1] * alive if t + 1 < T else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running * alive
        advantages[:, t] = running * mask[:, t]
    return advantages, (advantages + values) * mask


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, masked mean of max(-A r, -A clip(r, 1 - c, 1 + c)), r = exp(logp - old).

    Returns (loss, fraction of masked tokens where the clipped term was the larger one).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    return masked_mean(torch.maximum(unclipped, clipped), mask), masked_mean((clipped > unclipped).float(), mask)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       clip_range: float) -> torch.Tensor:
    """0.5 * masked mean of max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)."""
    clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


class KLController:
    """Fixed coefficient (target None) or Ziegler et al.'s adaptive one:

        kl_coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_rollouts / horizon
    """

    def __init__(self, kl_coef: float, target: float | None = None, horizon: int = 10_000):
        self.value, self.target, self.horizon = kl_coef, target, horizon

    def update(self, kl: float, n_rollouts: int) -> None:
        if self.target is not None:
            error = float(np.clip(kl / self.target - 1, -0.2, 0.2))
            self.value *= 1 + error * n_rollouts / self.horizon


# -- the trainer ------------------------------------------------------------------------------------------------


def sampled_ids(token_ids: Sequence[int], tokenizer: Any, stop: Sequence[str]) -> list[int]:
    """The tokens the policy sampled: through EOS, or through the token that completed a stop string (generation
    pads after it, and those pads were not sampled)."""
    ids = list(token_ids)
    if stop and any(s in tokenizer.decode(ids) for s in stop):
        for k in range(1, len(ids) + 1):
            if any(s in tokenizer.decode(ids[:k]) for s in stop):
                return ids[:k]
    return ids


def rollout_prompt(item: Any) -> Prompt:
    """The instances stage's prompt for an instruction record (a string, or anything `task_of` reads)."""
    return instance_format.build(*task_of(item))


class PPOTrainer:
    """PPO on `model` + a fresh LoRA adapter (config.lora) + a value head; all knobs from `config` (RLConfig).

    A batch is a list of instruction records (strings, or rows with `instruction` and `is_classification`).
    prompt_fn(record) is the policy's prompt (default: the instances stage's, `instance_format.build`), and
    generation stops at `stop` (default `instance_format.STOP`), so the policy trains on exactly the task the
    instances stage gives it. reward_fn(records, completions) returns list[float] or a RewardBreakdown (per-term
    stats are then logged); `CompositeReward.score_completions` is one. Rollouts go through the transformers
    backend, seeded from (seed, step), and minibatches are shuffled from (seed, step), so a run is reproducible and
    a resumed run continues exactly as an uninterrupted one. Pass the model as `models.load_causal_lm` gives it
    (float32 on CPU, bf16 on GPUs); it is wrapped in place.
    """

    def __init__(self, model: Any, tokenizer: Any, config: Any, reward_fn: RewardFn, *,
                 prompt_fn: Callable[[Any], Prompt] = rollout_prompt,
                 stop: Sequence[str] = instance_format.STOP, seed: int = 0):
        from peft import get_peft_model

        self.config, self.reward_fn, self.prompt_fn, self.stop, self.seed = config, reward_fn, prompt_fn, stop, seed
        self.tokenizer = tokenizer
        with seeds.global_rng(seed):  # peft's LoRA init draws from the global RNG and takes no generator
            self.policy = get_peft_model(model, lora_config(config.lora))
        self.policy.eval()  # no dropout: rollout and update logprobs must agree
        base = self.policy.get_base_model()
        self.decoder, self.lm_head = base.get_decoder(), base.get_output_embeddings()
        device = base.device
        if device.type == "cpu" and base.dtype != torch.float32:
            log.warning("the policy is %s on CPU: CPUs without bf16 units run it ~10x slower than float32", base.dtype)
        # start at V = 0; skip_init: no draws from the global RNG for weights that are zeroed anyway
        self.value_head = torch.nn.utils.skip_init(nn.Linear, base.config.hidden_size, 1, device=device)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        params = [p for p in self.policy.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
        self.params = params
        self.kl = KLController(config.kl_coef, config.target_kl, config.kl_horizon)
        self.backend = TransformersBackend(self.policy, tokenizer, batch_size=config.batch_size)
        self.step, self.cursor = 0, 0  # completed steps; instructions consumed by next_batch
        self.first_length: float | None = None  # step 1's mean response length, the drift baseline
        self.last_rollouts: list[dict[str, Any]] = []  # the latest batch, for sample logging

    # -- data ---------------------------------------------------------------------------------------------------

    def next_batch(self, pool: Sequence[Any]) -> list[Any]:
        """The next batch_size records of `pool`: a fresh permutation per pass, from (seed, pass).

        The position is part of the trainer's state; resume with the same pool.
        """
        n, batch = len(pool), []
        for _ in range(self.config.batch_size):
            epoch, i = divmod(self.cursor, n)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seeds.derive(self.seed, "pass", epoch)))
            batch.append(pool[order[i]])
            self.cursor += 1
        return batch

    # -- one step -------------------------------------------------------------------------------------------------

    def train_step(self, records: Sequence[Any]) -> PPOStats:
        """One PPO step on a batch of records: the module docstring's steps 1-7, a method each."""
        records = list(records)
        t0 = time.perf_counter()
        completions = self._rollout(records)
        t1 = time.perf_counter()
        breakdown = self._score(records, completions)
        t2 = time.perf_counter()
        traj, entropy, live = self._evaluate_rollouts(completions, breakdown.total)
        kl_tokens, rewards = self._token_rewards(traj)
        advantages, returns = self._advantages(traj, rewards)
        losses = self._update(traj, live, advantages, returns)
        kl, kl_coef = self._update_kl_coef(kl_tokens)
        self.step += 1
        t3 = time.perf_counter()

        stats = self._stats(traj, breakdown, entropy, losses, kl, kl_coef, (t1 - t0, t2 - t1, t3 - t2))
        self.last_rollouts = [{"instruction": task_of(r)[0], "completion": c.text, "reward": s, "kl": k}
                              for r, c, s, k in zip(records, completions, traj.scores.tolist(),
                                                    kl_tokens.sum(1).tolist(), strict=True)]
        self._check_drift(stats)
        return stats

    def _rollout(self, records: list[Any]) -> list[Any]:
        """1. rollout: one completion per instruction from the current policy, sampled from (seed, step)."""
        cfg = self.config
        params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                                stop=tuple(self.stop), seed=seeds.derive(self.seed, "rollout", self.step))
        return self.backend.generate([self.prompt_fn(r) for r in records], params, desc="rollout")

    def _score(self, records: list[Any], completions: list[Any]) -> RewardBreakdown:
        """2. score: the reward sees the text only (cut before the stop string)."""
        scored = self.reward_fn(records, [c.text for c in completions])
        return scored if isinstance(scored, RewardBreakdown) else RewardBreakdown(list(scored), {}, {})

    def _evaluate_rollouts(self, completions: list[Any], scores: Sequence[float]
                           ) -> tuple[Trajectory, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """3. evaluate: the trajectory with old logprobs and values, the base model's logprobs (adapter off), and the
        token entropies; plus the policy's forward pass with its graph when it is the update's too, else None.

        With one epoch of one minibatch the update's own forward pass is the rollout's (ratio 1 exactly), so it is
        kept with its graph instead of run twice: the step then costs what TRL's GRPO step costs.
        """
        traj = self._trajectory(completions, scores)
        R = traj.response_mask.shape[1]
        with torch.no_grad(), self.policy.disable_adapter():
            ref_logprobs, _, _ = self._evaluate(*traj.model_inputs, R, with_values=False)
        single_pass = self.config.ppo_epochs == 1 and self.config.minibatches == 1
        with torch.set_grad_enabled(single_pass):
            live = self._evaluate(*traj.model_inputs, R)
        logprobs, entropy, values = (x.detach() for x in live)
        traj = traj._replace(logprobs=logprobs, ref_logprobs=ref_logprobs, values=values)
        return traj, entropy, live if single_pass else None

    def _token_rewards(self, traj: Trajectory) -> tuple[torch.Tensor, torch.Tensor]:
        """4. rewards: (per-token KL to the base model, per-token reward: the KL penalty, plus the score on each
        response's last token)."""
        mask = traj.response_mask
        kl_tokens = (traj.logprobs - traj.ref_logprobs) * mask
        rewards = -self.kl.value * kl_tokens
        last = mask.sum(1).long() - 1
        rewards[torch.arange(len(last)), last] += traj.scores
        return kl_tokens, rewards

    def _advantages(self, traj: Trajectory, rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """5. advantages: GAE, whitened over the batch's response tokens; and the returns."""
        advantages, returns = gae(rewards, traj.values, traj.response_mask, self.config.gamma, self.config.lam)
        return whiten(advantages, traj.response_mask), returns

    def _update(self, traj: Trajectory, live: tuple[torch.Tensor, ...] | None, advantages: torch.Tensor,
                returns: torch.Tensor) -> tuple[list[float], list[float], list[float]]:
        """6. PPO epochs over minibatches shuffled from (seed, step); (policy losses, value losses, clip fractions).
        `live` is step 3's forward pass when it stands in for the one minibatch's."""
        cfg, mask, R = self.config, traj.response_mask, traj.response_mask.shape[1]
        policy_losses, value_losses, clip_fracs = [], [], []
        B = len(traj.input_ids)
        size = B // cfg.minibatches
        generator = torch.Generator().manual_seed(seeds.derive(self.seed, "minibatches", self.step))
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(B, generator=generator)
            for start in range(0, B, size):
                idx = order[start : start + size]
                if live is not None:
                    new_logprobs, _, new_values = (x[idx] for x in live)
                else:
                    new_logprobs, _, new_values = self._evaluate(*(x[idx] for x in traj.model_inputs), R)
                pg_loss, clip_frac = clipped_policy_loss(new_logprobs, traj.logprobs[idx], advantages[idx],
                                                         mask[idx], cfg.clip_range)
                vf_loss = clipped_value_loss(new_values, traj.values[idx], returns[idx], mask[idx],
                                             cfg.clip_range_value)
                self.optimizer.zero_grad(set_to_none=True)
                (pg_loss + cfg.vf_coef * vf_loss).backward()
                torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
                policy_losses.append(pg_loss.item())
                value_losses.append(vf_loss.item())
                clip_fracs.append(clip_frac.item())
        return policy_losses, value_losses, clip_fracs

    def _update_kl_coef(self, kl_tokens: torch.Tensor) -> tuple[float, float]:
        """7. KL coefficient for the next step; (this step's KL per response, the coefficient it was penalised by)."""
        kl, kl_coef = kl_tokens.sum(1).mean().item(), self.kl.value
        self.kl.update(kl, len(kl_tokens))
        return kl, kl_coef

    def _stats(self, traj: Trajectory, breakdown: RewardBreakdown, entropy: torch.Tensor,
               losses: tuple[list[float], list[float], list[float]], kl: float, kl_coef: float,
               seconds: tuple[float, float, float]) -> PPOStats:
        mask, scores = traj.response_mask, traj.scores
        policy_losses, value_losses, clip_fracs = losses
        terms = {name: {"mean": float(np.mean(raw)), "std": float(np.std(raw)),
                        "weighted": float(np.mean(breakdown.weighted[name]))}
                 for name, raw in breakdown.raw.items()}
        return PPOStats(
            step=self.step, reward=scores.mean().item(), reward_std=scores.std(unbiased=False).item(), terms=terms,
            kl=kl, kl_coef=kl_coef, policy_loss=float(np.mean(policy_losses)),
            value_loss=float(np.mean(value_losses)), entropy=masked_mean(entropy, mask).item(),
            clip_fraction=float(np.mean(clip_fracs)), response_length=mask.sum(1).float().mean().item(),
            seconds_rollout=seconds[0], seconds_scoring=seconds[1], seconds_update=seconds[2])

    def _trajectory(self, completions: Sequence[Any], scores: Sequence[float]) -> Trajectory:
        """Token tensors for the rollouts: prompts left-padded, responses right-padded."""
        pad, device = self.tokenizer.pad_token_id, self.policy.get_base_model().device
        prompts, prompt_mask = pad_rows([c.prompt_ids for c in completions], pad, device)
        sampled = [sampled_ids(c.token_ids, self.tokenizer, self.stop) for c in completions]
        responses, resp = pad_rows(sampled, pad, device, side="right", min_width=1)
        ids, attention = torch.cat([prompts, responses], 1), torch.cat([prompt_mask, resp], 1)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        empty = torch.empty(0)
        return Trajectory(ids, attention, positions, resp.float(), empty, empty, empty,
                          torch.tensor(list(scores), dtype=torch.float32, device=device))

    def _evaluate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, R: int,
                  with_values: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(logprobs, entropy, values), each (b, R), for the last R tokens of each row given what precedes them."""
        hidden = self.decoder(input_ids=input_ids, attention_mask=attention_mask,
                              position_ids=position_ids).last_hidden_state
        states = hidden[:, -R - 1 : -1]  # the state before each response token: (b, R, H)
        logits = self.lm_head(states).float() / self.config.temperature  # sampled at this temperature
        logp_all = torch.log_softmax(logits, -1)
        logprobs = logp_all.gather(-1, input_ids[:, -R:, None]).squeeze(-1)
        with torch.no_grad():  # logged, not optimised
            entropy = -(logp_all.exp() * logp_all).sum(-1)
        values = self.value_head(states.float()).squeeze(-1) if with_values else None  # fp32 head
        return logprobs, entropy, values

    def _check_drift(self, stats: PPOStats) -> None:
        """Warn, with sample responses, when KL, entropy or response length drift: signs of reward hacking."""
        cfg, problems = self.config, []
        if self.first_length is None:
            self.first_length = stats.response_length
        if stats.kl > cfg.warn_kl:
            problems.append(f"KL to the base model is {stats.kl:.2f} nats per response (> warn_kl {cfg.warn_kl})")
        if stats.entropy < cfg.warn_entropy:
            problems.append(f"token entropy collapsed to {stats.entropy:.3f} (< warn_entropy {cfg.warn_entropy})")
        ratio = cfg.warn_length_ratio
        if not self.first_length / ratio <= stats.response_length <= self.first_length * ratio:
            problems.append(f"mean response length {stats.response_length:.1f} tokens left "
                            f"[{self.first_length / ratio:.1f}, {self.first_length * ratio:.1f}] (step 1: "
                            f"{self.first_length:.1f})")
        if problems:
            best = sorted(self.last_rollouts, key=lambda r: -r["reward"])[:2]
            samples = "\n".join(f"  reward {r['reward']:.3f} kl {r['kl']:.2f}: {r['completion'][:300]!r}"
                                for r in best)
            log.warning("rl step %d: %s; top responses:\n%s", stats.step, "; ".join(problems), samples)

    # -- checkpoints ----------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: adapter, value head, optimiser, KL controller, step, cursor. No RNG state:
        every draw is seeded from (seed, what, step), and the global RNGs are not used after the LoRA init."""
        from peft import get_peft_model_state_dict

        return {
            "adapter": {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.policy).items()},
            "value_head": self.value_head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "kl_coef": self.kl.value,
            "step": self.step,
            "cursor": self.cursor,
            "first_length": self.first_length,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.policy, state["adapter"])
        self.value_head.load_state_dict(state["value_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl.value, self.step, self.cursor = state["kl_coef"], state["step"], state["cursor"]
        self.first_length, self.seed = state["first_length"], state["seed"]

    def save(self, directory: str | Path) -> Path:
        """`directory/adapter/` (peft format, loadable by the generation backends) + `directory/trainer_state.pt`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.policy.save_pretrained(directory / "adapter")
        torch.save(self.state_dict(), directory / STATE_FILE)
        return directory

    def load(self, directory: str | Path) -> None:
        """Restore the full state written by `save` into this (freshly built, same-config) trainer."""
        self.load_state_dict(torch.load(Path(directory) / STATE_FILE, weights_only=True))
