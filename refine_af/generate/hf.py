"""transformers backend: batched, left-padded generation on CPU or GPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from refine_af.generate.base import Completion, Prompt, SamplingParams, render, truncate_at_stop


class TransformersBackend:
    """Generation with `model.generate`. Works with any causal LM, including a peft-wrapped policy.

    Prompts are sorted by length before batching so that a batch pads little; results come back in input order.
    Each batch reseeds torch from (seed, batch index), so a fixed prompt list and seed give fixed completions.
    """

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt], params: SamplingParams, desc: str | None = None
                 ) -> list[Completion]:
        texts = [render(self.tokenizer, p) for p in prompts]
        encoded = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -len(encoded[i]))
        results: list[Completion | None] = [None] * len(texts)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        bar = tqdm(total=len(texts), desc=desc or "generate", unit="prompt", disable=len(batches) < 2)
        for b, idx in enumerate(batches):
            for i, completion in zip(idx, self._batch([encoded[i] for i in idx], params, b), strict=True):
                results[i] = completion
            bar.update(len(idx))
        bar.close()
        return results  # type: ignore[return-value]

    def _batch(self, ids: list[list[int]], params: SamplingParams, index: int) -> list[Completion]:
        tok, device = self.tokenizer, self.model.device
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in ids], device=device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
        sample = params.temperature > 0
        if params.seed is not None:
            torch.manual_seed(params.seed * 100_003 + index)
        kwargs: dict[str, Any] = dict(max_new_tokens=params.max_new_tokens, do_sample=sample,
                                      pad_token_id=tok.pad_token_id)
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
        out = self.model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        completions = []
        eos = _eos_ids(self.model, tok)
        for prompt, row in zip(ids, out[:, width:].tolist(), strict=True):
            end = next((j for j, t in enumerate(row) if t in eos), None)
            gen = row if end is None else row[:end]
            text, stopped = truncate_at_stop(tok.decode(gen, skip_special_tokens=True), params.stop)
            hit_eos = end is not None
            reason = "stop" if stopped or hit_eos or len(gen) < params.max_new_tokens else "length"
            completions.append(Completion(text=text, finish_reason=reason, prompt_ids=prompt,
                                          token_ids=row if end is None else row[: end + 1]))
        return completions


def _eos_ids(model: Any, tok: Any) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None) or tok.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
