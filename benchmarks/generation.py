"""Benchmark: generation throughput of the configured backend against naive one-prompt-at-a-time `model.generate`.

    python benchmarks/generation.py                 # both prompt mixes, 64 prompts each (~6 min on 2 cores)
    python benchmarks/generation.py --prompts 16 --naive 4      # smoke run
    python benchmarks/generation.py --backend vllm --model hf:meta-llama/Llama-2-7b-hf   # on a GPU machine

Two prompt mixes, the ones the pipeline generates from, with the stages' own sampling settings (config defaults):
    instructions   Self-Instruct prompts (8 numbered instructions from the seed tasks; temperature 1.0, top-p 0.95,
                   up to 160 new tokens, no stop string: the list runs on)
    instances      the instances stage's few-shot prompts over the seed instructions (temperature 0.7, top-p 0.95,
                   up to 64 new tokens, stopping at the instance's end)
Rows per mix:
    naive          `model.generate` on one prompt at a time (transformers' own sampler and stop strings): what a
                   script that loops over prompts does. Run on the first `--naive` prompts only (it is slow).
    backend        the pipeline's backend (`generation.backend`; transformers on CPU) on all `--prompts` prompts,
                   `generation.batch_size` prompts per batch, per-item seeds
tokens/s counts generated tokens up to and including EOS or the stop (not padding); prompts/s, prompts per second;
"prompt s", the part of the backend's seconds spent running prompts through the model (its prefill).
The same model, device, dtype and thread count for every row, in one process. The load average is printed with the
table: timings on a shared machine move with it.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from refine_af import instance_format  # noqa: E402
from refine_af.config import RunConfig, load_config  # noqa: E402
from refine_af.generate import SamplingParams, make_backend  # noqa: E402
from refine_af.generate.base import encode, render  # noqa: E402
from refine_af.readers import load_seeds  # noqa: E402
from refine_af.stages.instructions import self_instruct_prompt  # noqa: E402

SEEDS = ROOT / "refine_af" / "data" / "seed_tasks.jsonl"


def prompt_mixes(config: RunConfig, n: int) -> dict[str, tuple[list[str], SamplingParams]]:
    seeds = load_seeds(str(SEEDS))
    rng = random.Random(0)
    ins, inst = config.instructions, config.instances
    texts = [s.instruction for s in seeds]
    instructions = [self_instruct_prompt(rng, texts, [], ins.prompt_instructions, ins.seed_in_prompt) for _ in range(n)]
    instances = [instance_format.build(s.instruction, s.is_classification) for s in (seeds * n)[:n]]
    return {
        "instructions": (instructions, SamplingParams(temperature=ins.temperature, top_p=ins.top_p,
                                                      max_new_tokens=ins.max_new_tokens, seed=0)),
        "instances": (instances, SamplingParams(temperature=inst.temperature, top_p=inst.top_p,
                                                max_new_tokens=inst.max_new_tokens, stop=instance_format.STOP,
                                                seed=0)),
    }


def naive(model, tokenizer, prompts: list[str], params: SamplingParams) -> tuple[int, float]:
    """Generated tokens and seconds of one `model.generate` call per prompt."""
    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    tokens, start = 0, time.perf_counter()
    for prompt in prompts:
        ids = torch.tensor([encode(tokenizer, render(tokenizer, prompt))], device=model.device)
        kwargs = dict(stop_strings=list(params.stop), tokenizer=tokenizer) if params.stop else {}
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                             temperature=params.temperature, top_p=params.top_p,
                             max_new_tokens=params.max_new_tokens, pad_token_id=eos, **kwargs)
        row = out[0, ids.shape[1]:].tolist()
        tokens += row.index(eos) + 1 if eos in row else len(row)
    return tokens, time.perf_counter() - start


def batched(backend, prompts: list[str], params: SamplingParams) -> tuple[int, float, float | None]:
    """Generated tokens, seconds, and of those the seconds spent on prompts (the transformers backend's prefill)."""
    spent = [0.0]
    prefill = getattr(backend, "_prefill", None)
    if prefill:
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return prefill(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - t

        backend._prefill = timed
    start = time.perf_counter()
    outs = backend.generate(prompts, params, desc="backend")
    seconds = time.perf_counter() - start
    if prefill:
        del backend._prefill
    return sum(len(c.token_ids) for c in outs), seconds, spent[0] if prefill else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=64, help="prompts per mix for the backend")
    parser.add_argument("--naive", type=int, default=8, help="prompts per mix for naive generate")
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--backend", default="auto", choices=["auto", "transformers", "vllm"])
    parser.add_argument("--batch-size", type=int, default=None, help="generation.batch_size (default: config's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--mix", action="append", choices=["instructions", "instances"], help="default: both")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [f"model={args.model}", f"generation.backend={args.backend}"]
    if args.batch_size:
        overrides.append(f"generation.batch_size={args.batch_size}")
    config = load_config(None, overrides)
    backend = make_backend(config)
    from refine_af.models import load_causal_lm  # the naive reference: the same weights, dtype and device

    model, tokenizer = (backend.model, backend.tokenizer) if hasattr(backend, "model") else load_causal_lm(
        config.model, cache_dir=config.cache_dir, s3=config.s3, device="auto", dtype=config.generation.dtype)

    rows = []
    for mix, (prompts, params) in prompt_mixes(config, args.prompts).items():
        if args.mix and mix not in args.mix:
            continue
        batched(backend, prompts[:2], params)  # warm-up (allocator, kernels)
        n_tok, secs = naive(model, tokenizer, prompts[: args.naive], params)
        rows.append((mix, "naive generate", args.naive, n_tok, secs, None))
        b_tok, b_secs, b_prompt = batched(backend, prompts, params)
        rows.append((mix, f"{type(backend).__name__} (batch {config.generation.batch_size})", len(prompts), b_tok,
                     b_secs, b_prompt))

    print(f"\nmodel {config.model}, device {model.device}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"| {'mix':<12} | {'row':<34} | {'prompts':>7} | {'tokens':>6} | {'s':>7} | {'prompt s':>8} | "
          f"{'tokens/s':>8} | {'prompts/s':>9} | {'× naive':>7} |")
    print(f"|{'-' * 14}|{'-' * 36}|{'-' * 9}|{'-' * 8}|{'-' * 9}|{'-' * 10}|{'-' * 10}|{'-' * 11}|{'-' * 9}|")
    base = {}
    for mix, row, n, tok, secs, prompt_s in rows:
        rate = tok / secs
        base.setdefault(mix, rate)
        spent = f"{prompt_s:.1f}" if prompt_s is not None else "-"
        print(f"| {mix:<12} | {row:<34} | {n:>7} | {tok:>6} | {secs:>7.1f} | {spent:>8} | {rate:>8.1f} | "
              f"{n / secs:>9.2f} | {rate / base[mix]:>6.1f}× |")


if __name__ == "__main__":
    main()
