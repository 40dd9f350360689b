"""transformers backend: batched generation on CPU or GPU, with a decoding loop of its own."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
from tqdm.auto import tqdm

from refine_af import progress
from refine_af.generate.base import Completion, Prompt, SamplingParams, encode, item_seeds, render, truncate_at_stop

MIN_SHARED_PREFIX = 8  # tokens; below this a shared prefix is not worth a forward pass of its own


class TransformersBackend:
    """Generation with any causal LM (a peft-wrapped policy included), batched with three savings over looping
    `model.generate`, each of which keeps a completion a function of its prompt and seed alone:

    - prompts are grouped by template, then sorted by length, so that a batch pads little; results come back in
      input order;
    - a batch's shared token prefix (a stage's few-shot template) is run once, not once per row, and its KV cache
      repeated for the rows; each row's own part is left-padded after it (positions come from the attention mask);
    - a row leaves the batch (and the KV cache) as soon as it ends (EOS, a stop string or `max_new_tokens`), so a
      batch costs its rows' own lengths, not its longest row's times its size.
    Sampling draws each row's tokens from a torch generator of its own (seeded per item: `seeds`, or derived from
    `params.seed` and the prompt's position), so batch size, batch mates and the shard do not change what is drawn.
    """

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.eos = _eos_ids(model, tokenizer)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft passes kwargs through
        # transformers 5 renamed `past_key_values` to `cache`
        self.cache_kw = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams, desc: str | None = None,
                 seeds: Sequence[int] | None = None, adapter: bool = True) -> list[Completion]:
        """`adapter=False` answers with a peft model's adapter switched off (the base model), e.g. for a probe."""
        seeds = item_seeds(len(prompts), params, seeds)
        encoded = [encode(self.tokenizer, render(self.tokenizer, p)) for p in prompts]
        # prompts of one template together (their shared prefix is run once per batch), then by length (less padding)
        order = sorted(range(len(encoded)), key=lambda i: (encoded[i][:MIN_SHARED_PREFIX], -len(encoded[i])))
        results: list[Completion | None] = [None] * len(encoded)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        bar = tqdm(total=len(encoded), desc=desc or "generate", unit="prompt", disable=len(batches) < 2)
        off = self.model.disable_adapter() if not adapter and hasattr(self.model, "disable_adapter") else nullcontext()
        with torch.inference_mode(), off:
            for idx in batches:
                rows = [encoded[i] for i in idx]
                row_seeds = [seeds[i] for i in idx] if seeds else None
                for i, completion in zip(idx, self._batch(rows, params, row_seeds), strict=True):
                    results[i] = completion
                bar.update(len(idx))
                progress.report(bar.n, len(encoded))
        bar.close()
        return results  # type: ignore[return-value]

    def _prefix(self, rows: list[list[int]]) -> tuple[int, Any]:
        """The length of the token prefix all rows share (each keeps at least one token of its own) and a KV cache
        holding it once per row, computed in one pass; a fresh cache when the prefix is too short to pay for it."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        first, n = rows[0], min(map(len, rows)) - 1
        shared = next((k for k in range(n) if any(r[k] != first[k] for r in rows)), n)
        if len(rows) < 2 or shared < MIN_SHARED_PREFIX:
            return 0, cache
        self.model(input_ids=torch.tensor([first[:shared]], device=self.model.device), use_cache=True,
                   logits_to_keep=1, **{self.cache_kw: cache})
        cache.batch_repeat_interleave(len(rows))
        return shared, cache

    def _batch(self, ids: list[list[int]], params: SamplingParams, seeds: list[int] | None) -> list[Completion]:
        tok, device, n = self.tokenizer, self.model.device, len(ids)
        shared, cache = self._prefix(ids)
        own = [x[shared:] for x in ids]
        width = max(map(len, own))
        input_ids = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in own], device=device)
        mask = torch.tensor([[1] * shared + [0] * (width - len(x)) + [1] * len(x) for x in own], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        step_positions = positions[:, shared:]
        generators = [torch.Generator(device=device).manual_seed(s) for s in seeds] if seeds else None
        stop_window = max((len(s) for s in params.stop), default=0) + 4  # tokens enough to hold any stop string
        out: list[list[int]] = [[] for _ in range(n)]
        done: list[tuple[bool, bool] | None] = [None] * n  # (hit EOS, hit a stop string) once a row has ended
        alive = list(range(n))
        for _ in range(params.max_new_tokens):
            logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=step_positions,
                                use_cache=True, logits_to_keep=1, **{self.cache_kw: cache}).logits[:, -1]
            if params.temperature > 0:
                drawn = sample_rows(logits, [generators[i] for i in alive], params.temperature, params.top_p)
            else:
                drawn = logits.argmax(-1)
            keep = []
            for j, (i, t) in enumerate(zip(alive, drawn.tolist(), strict=True)):
                out[i].append(t)
                eos = t in self.eos
                stop = bool(params.stop) and any(s in tok.decode(out[i][-stop_window:]) for s in params.stop)
                if eos or stop or len(out[i]) == params.max_new_tokens:
                    done[i] = (eos, stop)
                else:
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(alive):  # ended rows leave the batch and the cache
                sel = torch.tensor(keep, device=device)
                cache.batch_select_indices(sel)
                mask, positions, drawn = mask[sel], positions[sel], drawn[sel]
                alive = [alive[j] for j in keep]
            mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
            positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
            input_ids, step_positions = drawn[:, None], positions[:, -1:]
        completions = []
        for prompt, row, (eos, _) in zip(ids, out, done, strict=True):
            text, stopped = truncate_at_stop(tok.decode(row[:-1] if eos else row, skip_special_tokens=True),
                                             params.stop)
            reason = "stop" if stopped or eos else "length"
            completions.append(Completion(text=text, finish_reason=reason, prompt_ids=prompt, token_ids=row))
        return completions


def sample_rows(logits: torch.Tensor, generators: Sequence[torch.Generator], temperature: float, top_p: float
                ) -> torch.Tensor:
    """One token per row, drawn with the row's own generator: temperature, then the top-p nucleus (the smallest
    set of most likely tokens whose mass reaches top_p), by inverting the nucleus's CDF at one uniform draw."""
    probs = (logits.float() / temperature).softmax(-1)
    ordered, index = probs.sort(dim=-1, descending=True)
    cdf = ordered.cumsum(-1)
    inside = (cdf - ordered) < top_p  # the mass before a token has not yet reached top_p
    mass = (ordered * inside).sum(-1)
    u = torch.stack([torch.rand((), generator=g, device=probs.device) for g in generators]) * mass
    j = torch.searchsorted(cdf, u[:, None], right=True).clamp(max=probs.shape[-1] - 1)
    j = torch.minimum(j, inside.sum(-1, keepdim=True) - 1)  # rounding at the nucleus's edge stays inside it
    return index.gather(-1, j).squeeze(-1)


def _eos_ids(model: Any, tok: Any) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None) or tok.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
