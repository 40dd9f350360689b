"""vLLM backend for GPU pods (the `gpu` extra).

Only `VLLMBackend` needs vLLM, and imports it when built. Everything it decides — the engine's arguments, whether an
adapter can be served, the requests, reading the outputs back — is a plain function here, tested without vLLM.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from refine_af import progress
from refine_af.errors import RefineError
from refine_af.generate.base import Completion, Prompt, SamplingParams, encode, item_seeds, render, truncate_at_stop

# the LoRA ranks vLLM's kernels take, and the projections of LLaMA-family models it applies adapters to
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
VLLM_LORA_TARGETS = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                               "qkv_proj", "gate_up_proj"})


def engine_args(path: str, gen: Any, lora_rank: int | None = None) -> dict[str, Any]:
    """`vllm.LLM`'s arguments from `generation.*`; `lora_rank` reserves room for serving one adapter of that rank."""
    args = dict(model=path, tokenizer=path, dtype=gen.dtype, gpu_memory_utilization=gen.gpu_memory_utilization,
                tensor_parallel_size=gen.tensor_parallel_size, max_num_seqs=gen.max_num_seqs,
                enforce_eager=gen.enforce_eager, enable_prefix_caching=True)  # the stages' prompts share templates
    if gen.max_model_len:
        args["max_model_len"] = gen.max_model_len
    if lora_rank is not None:
        args.update(enable_lora=True, max_loras=1, max_lora_rank=next(r for r in VLLM_LORA_RANKS if r >= lora_rank))
    return args


def check_adapter(adapter: str | Path, gen: Any, model_ref: str) -> dict[str, Any]:
    """The adapter's peft config, after checking that vLLM can use it as `generation.lora` says — before any GPU
    work starts. Merging takes any LoRA; serving takes only what vLLM's LoRA kernels do."""
    path = Path(adapter) / "adapter_config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RefineError(f"{path}: not a readable LoRA adapter config ({e})") from None
    where = f"{path}"
    base = cfg.get("base_model_name_or_path")
    if base and base != model_ref:
        raise RefineError(f"{where}: base_model_name_or_path: the adapter was trained on {base!r}, the run's model "
                          f"is {model_ref!r}")
    if cfg.get("peft_type", "LORA") != "LORA":
        raise RefineError(f"{where}: peft_type: {cfg.get('peft_type')!r}; only LoRA adapters can be used")
    if gen.lora == "merge":
        return cfg
    problems = []
    rank, targets = int(cfg.get("r", 8)), cfg.get("target_modules") or []
    if rank > gen.max_lora_rank or rank > VLLM_LORA_RANKS[-1]:
        problems.append(f"r: rank {rank} is above generation.max_lora_rank ({gen.max_lora_rank})")
    targets = [targets] if isinstance(targets, str) else list(targets)
    if unknown := sorted(set(targets) - VLLM_LORA_TARGETS):
        problems.append(f"target_modules: vLLM serves LoRA on {sorted(VLLM_LORA_TARGETS)}, not {unknown}")
    if cfg.get("modules_to_save"):
        problems.append(f"modules_to_save: {cfg['modules_to_save']} (fully trained modules) cannot be served")
    if cfg.get("use_dora"):
        problems.append("use_dora: DoRA adapters cannot be served")
    if cfg.get("bias", "none") != "none":
        problems.append(f"bias: {cfg['bias']!r}; served adapters have no bias terms")
    if problems:
        raise RefineError(f"{where}: vLLM cannot serve this adapter (generation.lora=serve): " + "; ".join(problems)
                          + ". Set generation.lora=merge to merge it into the weights first")
    return cfg


def requests(tokenizer: Any, prompts: Sequence[Prompt], params: SamplingParams,
             seeds: Sequence[int] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """vLLM's prompts (token ids by the one tokenisation rule, `encode`) and one set of sampling arguments per
    prompt, each with its own seed: an output depends on its prompt and seed, not on batch order or size."""
    seeds = item_seeds(len(prompts), params, seeds) or [None] * len(prompts)
    tokens = [{"prompt_token_ids": encode(tokenizer, render(tokenizer, p))} for p in prompts]
    sampling = [dict(temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens,
                     stop=list(params.stop) or None, seed=seed, n=1, skip_special_tokens=True) for seed in seeds]
    return tokens, sampling


def to_completion(output: Any, params: SamplingParams) -> Completion:
    """A `vllm.RequestOutput` as a Completion. vLLM leaves the stop string out of the text; cutting again keeps a
    stop string that spans the end of a decoded chunk out as well."""
    best = output.outputs[0]
    text, _ = truncate_at_stop(best.text, params.stop)
    reason = "length" if best.finish_reason == "length" else "stop"
    return Completion(text=text, finish_reason=reason, prompt_ids=list(output.prompt_token_ids),
                      token_ids=list(best.token_ids))


class VLLMBackend:
    """Continuous-batching generation with vLLM, from a model directory; `adapter` (a LoRA directory) is served with
    a `LoRARequest`, so that `generate(adapter=False)` answers with the base model from the same engine. `merged`
    names the adapter already merged into `path`'s weights: such an engine has no base model to answer with."""

    def __init__(self, path: str, gen: Any, adapter: str | None = None, adapter_rank: int | None = None,
                 merged: str | None = None):
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        self.llm = LLM(**engine_args(path, gen, adapter_rank if adapter else None))
        self.tokenizer = self.llm.get_tokenizer()
        self.lora = LoRARequest("adapter", 1, str(adapter)) if adapter else None
        self.merged = merged
        self.chunk = gen.max_num_seqs * 4  # prompts per `generate` call: progress between calls, engine stays full

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams, desc: str | None = None,
                 seeds: Sequence[int] | None = None, adapter: bool = True) -> list[Completion]:
        from vllm import SamplingParams as VLLMParams

        if not adapter and self.merged:
            raise RefineError(f"the adapter {self.merged} is merged into this engine's weights, so it cannot answer "
                              "without it: build the backend with lora='serve'")
        tokens, sampling = requests(self.tokenizer, prompts, params, seeds)
        lora = self.lora if adapter else None
        out: list[Completion] = []
        for i in range(0, len(tokens), self.chunk):
            part = [VLLMParams(**s) for s in sampling[i : i + self.chunk]]
            results = self.llm.generate(tokens[i : i + self.chunk], part, lora_request=lora, use_tqdm=True)
            out += [to_completion(r, params) for r in results]
            progress.report(len(out), len(tokens))
        return out
