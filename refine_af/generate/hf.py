"""transformers backend: continuous batched generation on CPU or GPU, with a decoding loop of its own."""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from refine_af import progress
from refine_af.generate.base import (
    Completion,
    Prompt,
    SamplingParams,
    encode,
    item_seeds,
    pad_rows,
    render,
    truncate_at_stop,
)
from refine_af.models import default_pad

MIN_SHARED_PREFIX = 8  # tokens; below this a shared prefix is not worth a forward pass of its own
NUCLEUS_CANDIDATES = 512  # most likely tokens looked at first for the top-p nucleus (exact whenever it lies inside)


@dataclass
class Rows:
    """The rows decoding together: their items, KV cache, attention mask (left-padded to one width), last
    positions and next-token logits."""

    items: list[int] = field(default_factory=list)
    cache: Any = None
    mask: torch.Tensor | None = None
    last: torch.Tensor | None = None  # position of each row's last token
    logits: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.items)

    def join(self, new: Rows) -> Rows:
        """Both sets of rows in one batch: the narrower cache and mask are left-padded to the wider one."""
        if not self.items:
            return new
        width = max(self.mask.shape[1], new.mask.shape[1])
        for rows in (self, new):
            rows._pad_left(width - rows.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, new.cache.layers, strict=True):
            mine.keys, mine.values = torch.cat([mine.keys, theirs.keys]), torch.cat([mine.values, theirs.values])
        return Rows(self.items + new.items, self.cache, torch.cat([self.mask, new.mask]),
                    torch.cat([self.last, new.last]), torch.cat([self.logits, new.logits]))

    def keep(self, kept: list[int]) -> Rows:
        """Only rows `kept` (indices into this batch): the others leave the batch and the cache; columns no row
        attends to any more are cut off."""
        if len(kept) == len(self.items):
            return self
        if not kept:
            return Rows()
        sel = torch.tensor(kept, device=self.mask.device)
        self.cache.batch_select_indices(sel)
        mask = self.mask[sel]
        unused = int((mask.sum(0) == 0).long().cumprod(0).sum())  # leading columns of padding only
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[:, :, unused:], layer.values[:, :, unused:]
        return Rows([self.items[j] for j in kept], self.cache, mask[:, unused:], self.last[sel], self.logits[sel])

    def _pad_left(self, n: int) -> None:
        if n:
            self.mask = torch.cat([self.mask.new_zeros(len(self), n), self.mask], dim=1)
            for layer in self.cache.layers:
                pad = layer.keys.new_zeros(*layer.keys.shape[:2], n, layer.keys.shape[3])
                layer.keys, layer.values = torch.cat([pad, layer.keys], 2), torch.cat([pad.clone(), layer.values], 2)


class TransformersBackend:
    """Generation with any causal LM (a peft-wrapped policy included), batched with savings over looping
    `model.generate`, none of which makes a completion depend on anything but its prompt and seed:

    - continuous batching: a row leaves the batch (and the KV cache) as soon as it ends (EOS, a stop string or
      `max_new_tokens`) and waiting prompts take the free places, so the batch stays full and no row waits for the
      longest one;
    - prompts are grouped by template, then sorted by length, so that admitted rows pad little;
    - the shared token prefix of the rows admitted together (a stage's few-shot template) is run once, not once per
      row, and its KV cache repeated for them; each row's own part is left-padded after it (positions come from the
      attention mask).
    Sampling draws each row's tokens from a torch generator of its own (seeded per item: `seeds`, or derived from
    `params.seed` and the prompt's position), so batch size, batch mates and the shard do not change what is drawn.
    """

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        tokenizer.padding_side = "left"
        default_pad(tokenizer)
        self.eos = _eos_ids(model, tokenizer)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft passes kwargs through
        # transformers 5 renamed `past_key_values` to `cache`
        self.cache_kw = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams, desc: str | None = None,
                 seeds: Sequence[int] | None = None, adapter: bool = True) -> list[Completion]:
        """`adapter=False` answers with a peft model's adapter switched off (the base model), e.g. for a probe."""
        seeds = item_seeds(len(prompts), params, seeds)
        encoded = [encode(self.tokenizer, render(self.tokenizer, p)) for p in prompts]
        order = deque(sorted(range(len(encoded)), key=lambda i: (encoded[i][:MIN_SHARED_PREFIX], -len(encoded[i]))))
        generators = {i: torch.Generator(device=self.model.device).manual_seed(s) for i, s in enumerate(seeds or [])}
        out: dict[int, list[int]] = {i: [] for i in range(len(encoded))}
        ended: dict[int, bool] = {}  # item -> whether it ended on EOS
        bar = tqdm(total=len(encoded), desc=desc or "generate", unit="prompt", disable=len(encoded) <= self.batch_size)
        off = self.model.disable_adapter() if not adapter and hasattr(self.model, "disable_adapter") else nullcontext()
        rows = Rows()
        with torch.inference_mode(), off:
            while order or rows:
                if order and (not rows or self.batch_size - len(rows) >= max(1, self.batch_size // 4)):
                    admitted = [order.popleft() for _ in range(min(self.batch_size - len(rows), len(order)))]
                    rows = rows.join(self._prefill(admitted, encoded))
                drawn = self._draw(rows, params, generators)
                kept = [j for j, (i, t) in enumerate(zip(rows.items, drawn.tolist(), strict=True))
                        if not self._ends(i, t, out, ended, params)]
                if len(kept) < len(rows):
                    bar.update(len(rows) - len(kept))
                    progress.report(len(ended), len(encoded))
                rows = rows.keep(kept)
                if rows:
                    self._step(rows, drawn[kept] if len(kept) < len(drawn) else drawn)
        bar.close()
        return [self._completion(encoded[i], out[i], ended[i], params) for i in range(len(encoded))]

    def _prefill(self, items: list[int], encoded: list[list[int]]) -> Rows:
        """Rows for `items`, their prompts run through the model: the shared prefix once, then each row's own part."""
        from transformers import DynamicCache

        ids, device = [encoded[i] for i in items], self.model.device
        cache = DynamicCache(config=self.model.config)
        first, n = ids[0], min(map(len, ids)) - 1  # every row keeps at least one token of its own
        shared = next((k for k in range(n) if any(r[k] != first[k] for r in ids)), n)
        if len(ids) < 2 or shared < MIN_SHARED_PREFIX:
            shared = 0
        else:
            self.model(input_ids=torch.tensor([first[:shared]], device=device), use_cache=True, logits_to_keep=1,
                       **{self.cache_kw: cache})
            cache.batch_repeat_interleave(len(ids))
        input_ids, own_mask = pad_rows([x[shared:] for x in ids], self.tokenizer.pad_token_id, device)
        mask = torch.cat([own_mask.new_ones(len(ids), shared), own_mask], 1)  # the shared prefix, then its own part
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions[:, shared:],
                            use_cache=True, logits_to_keep=1, **{self.cache_kw: cache}).logits[:, -1]
        return Rows(list(items), cache, mask, positions[:, -1], logits)

    def _step(self, rows: Rows, drawn: torch.Tensor) -> None:
        """Feed each row its drawn token: the cache, mask, positions and logits move one token on."""
        rows.mask = torch.cat([rows.mask, rows.mask.new_ones(len(rows), 1)], dim=1)
        rows.last = rows.last + 1
        rows.logits = self.model(input_ids=drawn[:, None], attention_mask=rows.mask, position_ids=rows.last[:, None],
                                 use_cache=True, logits_to_keep=1, **{self.cache_kw: rows.cache}).logits[:, -1]

    @staticmethod
    def _draw(rows: Rows, params: SamplingParams, generators: dict[int, torch.Generator]) -> torch.Tensor:
        if params.temperature <= 0:
            return rows.logits.argmax(-1)
        return sample_rows(rows.logits, [generators[i] for i in rows.items], params.temperature, params.top_p)

    def _ends(self, item: int, token: int, out: dict[int, list[int]], ended: dict[int, bool],
              params: SamplingParams) -> bool:
        """Append `token` to the item's output; whether the item has ended (recorded in `ended`)."""
        row = out[item]
        row.append(token)
        eos = token in self.eos
        window = max((len(s) for s in params.stop), default=0) + 4  # tokens enough to hold any stop string
        stop = bool(params.stop) and any(s in self.tokenizer.decode(row[-window:]) for s in params.stop)
        if eos or stop or len(row) >= params.max_new_tokens:
            ended[item] = eos
            return True
        return False

    def _completion(self, prompt: list[int], row: list[int], eos: bool, params: SamplingParams) -> Completion:
        text, stopped = truncate_at_stop(self.tokenizer.decode(row[:-1] if eos else row, skip_special_tokens=True),
                                         params.stop)
        return Completion(text=text, finish_reason="stop" if stopped or eos else "length", prompt_ids=prompt,
                          token_ids=row)


def sample_rows(logits: torch.Tensor, generators: Sequence[torch.Generator], temperature: float, top_p: float
                ) -> torch.Tensor:
    """One token per row, drawn with the row's own generator: temperature, then the top-p nucleus (the smallest
    set of most likely tokens whose mass reaches top_p), by inverting the CDF at one uniform draw. Without a
    nucleus (top_p 1) the CDF is taken in vocabulary order, which needs no sort."""
    probs = (logits.float() / temperature).softmax(-1)
    u = torch.stack([torch.rand((), generator=g, device=probs.device) for g in generators])
    if top_p >= 1:
        cdf = probs.cumsum(-1)
        return torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp(max=probs.shape[-1] - 1)[:, 0]
    ordered, index = probs.topk(min(NUCLEUS_CANDIDATES, probs.shape[-1]), dim=-1)  # sorted, far cheaper than sort
    if bool((ordered.sum(-1) < top_p).any()):  # a flat distribution: some nucleus reaches past the candidates
        ordered, index = probs.sort(dim=-1, descending=True)
    cdf = ordered.cumsum(-1)
    inside = (cdf - ordered) < top_p  # the mass before a token has not yet reached top_p
    mass = (ordered * inside).sum(-1)
    j = torch.searchsorted(cdf, (u * mass)[:, None], right=True)
    j = torch.minimum(j, inside.sum(-1, keepdim=True) - 1)  # rounding at the nucleus's edge stays inside it
    return index.gather(-1, j).squeeze(-1)


def _eos_ids(model: Any, tok: Any) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None) or tok.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
