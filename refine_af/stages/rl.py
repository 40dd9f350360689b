"""Stage `rl`: the policy (base model + LoRA) learns to write instances that the automated feedback rewards.

    refine-af run --stages instructions,rl --set rl.steps=20

Each step samples `rl.batch_size` instructions, the policy writes one instance for each in the instances stage's
format (`refine_af.instance_format`), the composite reward (`refine_af.rewards`) scores it, and PPO
(`refine_af.ppo`, the paper's) or TRL's GRPO (`refine_af.grpo`) updates the adapter. Every `rl.checkpoint_every`
steps the full trainer state goes to the store; a killed run resumes from the last checkpoint and continues exactly
as the uninterrupted run would (the data order, the sampling seeds and the optimiser state are all in it).

Inputs:  `instructions` (the instructions stage's accepted instructions)
Outputs: <run>/rl/adapter/                      the trained LoRA adapter (peft, safetensors): the refine-af policy
         <run>/rl/metrics.jsonl                 per step: reward/<term>/{mean,std,weighted}, reward/total, kl,
                                                kl_coef, policy_loss, value_loss, entropy, response_length, seconds
         <run>/rl/rewards.png                   total reward, each weighted term and KL over the steps
         <run>/rl/samples.jsonl                 the last step's rollouts with their rewards (what the policy writes)
         <run>/rl/probe.jsonl                   the probe: fixed instructions answered by the base model and by the
                                                trained policy with the same sampling seeds, each with its reward
         <run>/rl/checkpoints/step-NNNNN/       the latest checkpoint (adapter/, metrics.jsonl, trainer state);
                                                valid once its trainer state, uploaded last, is there
"""

from __future__ import annotations

import gc
import io
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from refine_af import checkpoints, progress
from refine_af.errors import RefineError
from refine_af.models import describe, load_causal_lm, pick_device, save_adapter
from refine_af.readers import load_instructions
from refine_af.runner import StageContext
from refine_af.store import jsonl_bytes

log = logging.getLogger("refine_af")

STATE = {"ppo": "trainer_state.pt", "grpo": "trainer_state.json"}  # the file a checkpoint's upload ends with


def run(ctx: StageContext) -> None:
    cfg, rl = ctx.config, ctx.config.rl
    records = load_instructions(ctx.store, ctx.input("instructions"))

    # 1. Everything that can fail on bad input happens before the stage writes: scorers, then the policy's model.
    from refine_af.rewards import CompositeReward

    device = pick_device(cfg.generation.device)
    reward = CompositeReward.from_config(rl.reward, run_model=cfg.model, cache_dir=cfg.cache_dir, s3=cfg.s3,
                                         device=device)
    for term, info in reward.describe().items():
        log.info("rl: reward term %-17s scorer %-19s weight %-4g model %s", term, info["scorer"], info["weight"],
                 info["model"] or "-")
    try:
        reward.load()
    except RefineError:
        raise
    except Exception as e:  # a model that exists but is not a scorer of the named kind
        raise RefineError(f"rl.reward: a scoring model could not be loaded: {type(e).__name__}: {e}") from None
    model, tokenizer = load_causal_lm(cfg.model, cache_dir=cfg.cache_dir, s3=cfg.s3, device=device,
                                      dtype=cfg.generation.dtype)
    ctx.begin()

    # 2. Train, resuming from the latest checkpoint of this fingerprint.
    with tempfile.TemporaryDirectory(prefix="refine-af-rl-") as tmp:
        work = Path(tmp)
        train = _ppo if rl.algorithm == "ppo" else _grpo
        metrics, samples = train(ctx, model, tokenizer, records, reward, work)
        ctx.upload_output(work / "adapter", "adapter")

        # 3. Did training help? The same instructions and seeds, with the adapter off and on.
        del model  # the training copy, wrapped in place; the probe loads a clean one
        gc.collect()  # in case a trainer's reference cycle still holds the weights: free them before the reload
        probe_summary, probe_rows = (probe(ctx, records, reward, work / "adapter") if rl.probe_prompts
                                     else ({}, []))

    # 4. Outputs and the manifest's summary.
    ctx.write_output("metrics.jsonl", jsonl_bytes(metrics))
    ctx.write_output("samples.jsonl", jsonl_bytes(samples))
    if probe_rows:
        ctx.write_output("probe.jsonl", jsonl_bytes(probe_rows))
    ctx.write_output("rewards.png", plot(metrics))
    checkpoints.clear(ctx)
    ctx.counts.update(steps=len(metrics), rollouts=len(metrics) * rl.batch_size, instructions=len(records))
    ctx.metrics.update(summarize(metrics, list(reward.describe())))
    if probe_summary:
        ctx.metrics["probe"] = probe_summary
    ctx.provenance.update(algorithm=rl.algorithm, model=describe(cfg.model), reward=reward.describe())
    m = ctx.metrics
    log.info("rl: reward %.3f -> %.3f (mean of the first and last 5 steps), final KL %.3f, %.1f s per step",
             m["reward_first5"], m["reward_last5"], m["kl_final"], m["seconds_per_step"])
    if probe_summary:
        p = probe_summary
        log.info("rl: probe of %d fixed instructions: reward %.3f (base) -> %.3f (policy), difference %+.3f "
                 "[%+.3f, %+.3f] (95%% bootstrap)", p["prompts"], p["base"], p["policy"], p["delta"], *p["delta_ci"])


# -- the probe --------------------------------------------------------------------------------------------------------


def probe(ctx: StageContext, records: list[dict], reward: Any, adapter: Path) -> tuple[dict[str, Any], list[dict]]:
    """The reward of the base model and of the trained policy on `rl.probe_prompts` fixed instructions.

    The per-step rewards in metrics.jsonl come from a different draw of instructions each step, so their trend
    mixes what the policy learned with which instructions it got. The probe holds the instructions and the
    sampling seed fixed and toggles only the adapter, so the per-instruction differences are paired; their
    bootstrap interval says whether training moved the reward at all. Sampling as in the rollouts.
    """
    from refine_af.generate import SamplingParams, make_backend
    from refine_af.instance_format import STOP
    from refine_af.ppo import rollout_prompt
    from refine_af.rewards import task_of
    from refine_af.stats import bootstrap_ci

    cfg, rl = ctx.config, ctx.config.rl
    chosen = random.Random(cfg.seed).sample(records, min(rl.probe_prompts, len(records)))
    backend = make_backend(cfg, adapter=str(adapter), lora="serve")  # served, so the base model answers too
    params = SamplingParams(temperature=rl.temperature, top_p=rl.top_p, max_new_tokens=rl.max_new_tokens,
                            stop=tuple(STOP), seed=cfg.seed)
    prompts = [rollout_prompt(r) for r in chosen]
    base_texts = [c.text for c in backend.generate(prompts, params, desc="probe (base)", adapter=False)]
    policy_texts = [c.text for c in backend.generate(prompts, params, desc="probe (policy)")]
    base, trained = reward.score_completions(chosen, base_texts), reward.score_completions(chosen, policy_texts)
    delta, ci = bootstrap_ci([t - b for b, t in zip(base.total, trained.total, strict=True)], seed=cfg.seed)
    summary = {"prompts": len(chosen), "base": round(statistics.fmean(base.total), 4),
               "policy": round(statistics.fmean(trained.total), 4), "delta": round(delta, 4),
               "delta_ci": [round(x, 4) for x in ci],
               "terms_base": {t: round(statistics.fmean(v), 4) for t, v in base.raw.items()},
               "terms_policy": {t: round(statistics.fmean(v), 4) for t, v in trained.raw.items()},
               # a term that saturates has no spread: the check that its squash / calibration fits its scorer
               "terms_spread": {"base": {t: spread(v) for t, v in base.raw.items()},
                                "policy": {t: spread(v) for t, v in trained.raw.items()}}}
    rows = [{"instruction": task_of(r)[0], "base": b, "policy": t, "reward_base": rb, "reward_policy": rt}
            for r, b, t, rb, rt in zip(chosen, base_texts, policy_texts, base.total, trained.total, strict=True)]
    return summary, rows


def spread(values: list[float]) -> dict[str, float]:
    """mean, std, min, p10, p90, max of a term's values (p10 / p90 linearly interpolated).

    >>> spread([0.0, 1.0, 2.0, 3.0, 4.0])
    {'mean': 2.0, 'std': 1.4142, 'min': 0.0, 'p10': 0.4, 'p90': 3.6, 'max': 4.0}
    """
    xs = sorted(values)

    def quantile(q: float) -> float:
        pos = q * (len(xs) - 1)
        lo = int(pos)
        return xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * (pos - lo)

    stats = {"mean": statistics.fmean(xs), "std": statistics.pstdev(xs), "min": xs[0], "p10": quantile(0.1),
             "p90": quantile(0.9), "max": xs[-1]}
    return {k: round(v, 4) for k, v in stats.items()}


# -- logging -------------------------------------------------------------------------------------------------------


def _log_step(row: dict, steps: int) -> None:
    terms = " ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in row.items()
                     if k.startswith("reward/") and k.endswith("/mean") and k.count("/") == 2)
    log.info("rl step %d/%d: reward %.3f (%s) kl %.3f length %.1f %.1f s", row["step"], steps, row["reward/total"],
             terms, row["kl"], row["response_length"], row["seconds"])


# -- algorithms -----------------------------------------------------------------------------------------------------


def _ppo(ctx: StageContext, model: Any, tokenizer: Any, records: list[dict], reward: Any, work: Path
         ) -> tuple[list[dict], list[dict]]:
    from refine_af.ppo import PPOTrainer

    rl = ctx.config.rl
    trainer = PPOTrainer(model, tokenizer, rl, reward.score_completions, seed=ctx.config.seed)
    metrics: list[dict] = []
    latest = checkpoints.latest(ctx, STATE["ppo"])
    if latest:
        metrics = checkpoints.restore(ctx, latest, work / "resume")
        trainer.load(work / "resume")
    bar = tqdm(total=rl.steps, initial=trainer.step, desc="rl (ppo)", unit="step")
    while trainer.step < rl.steps:
        started = time.perf_counter()
        stats = trainer.train_step(trainer.next_batch(records))
        metrics.append({**stats.as_dict(), "seconds": round(time.perf_counter() - started, 3)})
        bar.update(1)
        progress.report(trainer.step, rl.steps)
        _log_step(metrics[-1], rl.steps)
        if trainer.step % rl.checkpoint_every == 0 and trainer.step < rl.steps:
            ckpt = work / f"step-{trainer.step:05d}"
            trainer.save(ckpt)
            checkpoints.save(ctx, ckpt, trainer.step, metrics, STATE["ppo"])
    bar.close()
    save_adapter(trainer.policy, work / "adapter", ctx.config.model)
    return metrics, trainer.last_rollouts


def _grpo(ctx: StageContext, model: Any, tokenizer: Any, records: list[dict], reward: Any, work: Path
          ) -> tuple[list[dict], list[dict]]:
    from refine_af.grpo import run_grpo

    rl, out = ctx.config.rl, work / "grpo"
    resume, earlier = None, []
    latest = checkpoints.latest(ctx, STATE["grpo"])
    if latest:
        resume = out / f"checkpoint-{checkpoints.step_of(latest)}"
        earlier = checkpoints.restore(ctx, latest, resume)

    def on_checkpoint(path: Path, stats: list[dict]) -> None:
        step = checkpoints.step_of(path.name)
        if step < rl.steps:
            checkpoints.save(ctx, path, step, earlier + stats, STATE["grpo"])

    stats = run_grpo(model, tokenizer, rl, records, reward, seed=ctx.config.seed, output_dir=str(out),
                     base_ref=ctx.config.model,
                     resume=str(resume) if resume else None, on_checkpoint=on_checkpoint,
                     on_step=lambda row: _log_step(row, rl.steps))
    (out / "adapter").rename(work / "adapter")
    return earlier + stats, []


# -- summary and plot -----------------------------------------------------------------------------------------------


def summarize(metrics: list[dict], terms: list[str]) -> dict[str, Any]:
    """First and last 5-step means of the total reward and of each term, the final KL, seconds per step."""
    def mean(key: str, rows: list[dict]) -> float:
        return round(statistics.fmean(r[key] for r in rows), 4)

    first, last = metrics[:5], metrics[-5:]
    out: dict[str, Any] = {"reward_first5": mean("reward/total", first), "reward_last5": mean("reward/total", last),
                           "kl_final": round(metrics[-1]["kl"], 4),
                           "seconds_per_step": mean("seconds", metrics)}
    out["terms_first5"] = {t: mean(f"reward/{t}/mean", first) for t in terms}
    out["terms_last5"] = {t: mean(f"reward/{t}/mean", last) for t in terms}
    return out


def plot(metrics: list[dict]) -> bytes:
    """PNG: total reward and each weighted term over the steps (left), KL to the base model (right)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # the object API: no pyplot state, no process-wide backend choice

    steps = [m["step"] for m in metrics]
    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot(steps, [m["reward/total"] for m in metrics], label="total", linewidth=2.5, color="black")
    for key in sorted(k for k in metrics[0] if k.endswith("/weighted")):
        left.plot(steps, [m[key] for m in metrics], label=key.split("/")[1], linewidth=1)
    left.set(xlabel="step", ylabel="reward (weighted terms)", title="reward")
    left.legend(fontsize=8)
    right.plot(steps, [m["kl"] for m in metrics], color="tab:red")
    right.set(xlabel="step", ylabel="nats per response", title="KL(policy || base)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
