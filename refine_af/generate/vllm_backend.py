"""vLLM backend for GPU pods (the `gpu` extra). Not importable on CPU machines; imported only when chosen."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from refine_af.generate.base import Completion, Prompt, SamplingParams, item_seeds, render, truncate_at_stop


class VLLMBackend:
    """Continuous-batching generation with vLLM; a LoRA adapter directory is served with `LoRARequest`."""

    def __init__(self, path: str, adapter: str | None = None, dtype: str = "auto", memory: float = 0.85):
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        lora = {"enable_lora": True, "max_lora_rank": _lora_rank(adapter)} if adapter else {}
        self.llm = LLM(model=path, dtype=dtype, gpu_memory_utilization=memory, **lora)
        self.tokenizer = self.llm.get_tokenizer()
        self.lora = LoRARequest("adapter", 1, adapter) if adapter else None

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams, desc: str | None = None,
                 seeds: Sequence[int] | None = None) -> list[Completion]:
        from vllm import SamplingParams as VLLMParams

        # one request per prompt, each with its own seed: outputs do not depend on batch order or size
        sampling = [VLLMParams(temperature=params.temperature, top_p=params.top_p, seed=seed,
                               max_tokens=params.max_new_tokens, stop=list(params.stop) or None)
                    for seed in item_seeds(len(prompts), params, seeds) or [None] * len(prompts)]
        texts = [render(self.tokenizer, p) for p in prompts]
        outputs = self.llm.generate(texts, sampling, lora_request=self.lora, use_tqdm=True)
        completions = []
        for out in outputs:
            best = out.outputs[0]
            text, _ = truncate_at_stop(best.text, params.stop)
            reason = "length" if best.finish_reason == "length" else "stop"
            completions.append(Completion(text=text, finish_reason=reason, prompt_ids=list(out.prompt_token_ids),
                                          token_ids=list(best.token_ids)))
        return completions


def _lora_rank(adapter: str) -> int:
    """vLLM sizes its LoRA slots up front (default rank 16): the adapter's rank, rounded up to a size it supports."""
    rank = json.loads((Path(adapter) / "adapter_config.json").read_text()).get("r", 16)
    return next((n for n in (8, 16, 32, 64, 128, 256, 320, 512) if n >= rank), rank)
