"""vLLM backend for GPU pods (the `gpu` extra). Not importable on CPU machines; imported only when chosen."""

from __future__ import annotations

from collections.abc import Sequence

from refine_af.generate.base import Completion, Prompt, SamplingParams, render, truncate_at_stop


class VLLMBackend:
    """Continuous-batching generation with vLLM; a LoRA adapter directory is served with `LoRARequest`."""

    def __init__(self, path: str, adapter: str | None = None, dtype: str = "auto", memory: float = 0.85):
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        self.llm = LLM(model=path, dtype=dtype, gpu_memory_utilization=memory, enable_lora=adapter is not None)
        self.tokenizer = self.llm.get_tokenizer()
        self.lora = LoRARequest("adapter", 1, adapter) if adapter else None

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams, desc: str | None = None
                 ) -> list[Completion]:
        from vllm import SamplingParams as VLLMParams

        sampling = VLLMParams(temperature=params.temperature, top_p=params.top_p, seed=params.seed,
                              max_tokens=params.max_new_tokens, stop=list(params.stop) or None)
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
