"""transformers backend: batched, left-padded generation on CPU or GPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from refine_af import progress
from refine_af.generate.base import Completion, Prompt, SamplingParams, item_seeds, render, truncate_at_stop


class TransformersBackend:
    """Generation with `model.generate`. Works with any causal LM, including a peft-wrapped policy.

    Prompts are sorted by length before batching so that a batch pads little; results come back in input order.
    Sampling draws each prompt's tokens from a generator of its own, seeded per item (`seeds`, or derived from
    `params.seed` and the prompt's position), so a completion depends on its prompt and seed, not on the batch size,
    the shard or the other prompts it was batched with.
    """

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt], params: SamplingParams, desc: str | None = None,
                 seeds: Sequence[int] | None = None) -> list[Completion]:
        seeds = item_seeds(len(prompts), params, seeds)
        texts = [render(self.tokenizer, p) for p in prompts]
        encoded = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -len(encoded[i]))
        results: list[Completion | None] = [None] * len(texts)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        bar = tqdm(total=len(texts), desc=desc or "generate", unit="prompt", disable=len(batches) < 2)
        for idx in batches:
            batch_seeds = [seeds[i] for i in idx] if seeds else None
            for i, completion in zip(idx, self._batch([encoded[i] for i in idx], params, batch_seeds), strict=True):
                results[i] = completion
            bar.update(len(idx))
            progress.report(bar.n, len(texts))
        bar.close()
        return results  # type: ignore[return-value]

    def _batch(self, ids: list[list[int]], params: SamplingParams, seeds: list[int] | None) -> list[Completion]:
        tok, device = self.tokenizer, self.model.device
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in ids], device=device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
        # greedy decoding on top of RowSampler, which has already left one token per row when sampling
        kwargs: dict[str, Any] = dict(max_new_tokens=params.max_new_tokens, do_sample=False,
                                      pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
        if params.temperature > 0:
            kwargs["logits_processor"] = LogitsProcessorList(
                [RowSampler(seeds or [0] * len(ids), params.temperature, params.top_p)])
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


class RowSampler(LogitsProcessor):
    """Samples every row from its own torch generator (temperature, then top-p) and leaves only the drawn token.

    `model.generate`'s own sampler draws a whole batch from one global stream, so a row's text would depend on which
    rows share its batch. Here a row's draws depend on its seed and its logits alone.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float):
        self.seeds, self.temperature, self.top_p = list(seeds), temperature, top_p
        self.generators: list[torch.Generator] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if not self.generators:
            self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        probs = nucleus(scores.float() / self.temperature, self.top_p).softmax(-1)
        drawn = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators, strict=True)])
        return torch.full_like(scores, float("-inf")).scatter_(1, drawn[:, None], 0.0)


def nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Logits outside each row's top-p nucleus set to -inf (the smallest set of tokens whose mass reaches top_p)."""
    if top_p >= 1:
        return logits
    ordered, index = logits.sort(dim=-1, descending=True)
    probs = ordered.softmax(-1)
    outside = probs.cumsum(-1) - probs > top_p  # the mass before a token already reaches top_p
    return logits.scatter(-1, index, ordered.masked_fill(outside, float("-inf")))


def _eos_ids(model: Any, tok: Any) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None) or tok.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
