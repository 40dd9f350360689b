"""The backend interface: sampling parameters in, completions out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Prompt = str | list[dict[str, str]]


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 means greedy decoding
    top_p: float = 1.0
    max_new_tokens: int = 128
    stop: tuple[str, ...] = ()  # generation ends at the first of these; the text is cut before it
    seed: int | None = None  # per-item seeds derive from it and the prompt's position, unless given per item


@dataclass
class Completion:
    text: str
    finish_reason: Literal["stop", "length"]  # "length": cut by max_new_tokens, the text may be incomplete
    prompt_ids: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)  # the sampled ids: through EOS or the stop-completing token


class Backend(Protocol):
    tokenizer: Any

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams, desc: str | None = None,
                 seeds: Sequence[int] | None = None, adapter: bool = True) -> list[Completion]:
        """One completion per prompt, in order; `desc` labels the progress bar. `seeds` (one per prompt) key each
        prompt's sampling stream: the same prompt and seed give the same completion in any batch. `adapter=False`
        answers with the base model of a backend built with a LoRA adapter."""


def item_seeds(n: int, params: SamplingParams, seeds: Sequence[int] | None) -> list[int] | None:
    """Each prompt's sampling seed: as given, else derived from `params.seed` and the position; None for greedy."""
    from refine_af.seeds import derive

    if seeds is not None:
        if len(seeds) != n:
            raise ValueError(f"{len(seeds)} seeds for {n} prompts")
        return list(seeds)
    if params.temperature <= 0:
        return None
    return [derive(params.seed or 0, "item", i) for i in range(n)]


def render(tokenizer: Any, prompt: Prompt) -> str:
    """Prompt text: raw strings pass through, chat messages go through the model's chat template."""
    if isinstance(prompt, str):
        return prompt
    if not has_chat_template(tokenizer):  # a base model: plain "role: content" turns
        return "".join(f"{m['content']}\n\n" if m["role"] != "assistant" else m["content"] for m in prompt)
    continues = prompt[-1]["role"] == "assistant"
    return tokenizer.apply_chat_template(
        prompt, tokenize=False, add_generation_prompt=not continues, continue_final_message=continues
    )


def as_user_turn(tokenizer: Any, text: str) -> Prompt:
    """An instruction prompt in the form the model answers: a user turn for chat models (the builtin instruct model
    ends a raw prompt that stops at "Output:" at once, with its end-of-turn token), the raw text for base models."""
    return [{"role": "user", "content": text}] if has_chat_template(tokenizer) else text


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer renders chat messages with a template of its own (a base model has none)."""
    return getattr(tokenizer, "chat_template", None) is not None


def encode(tokenizer: Any, text: str) -> list[int]:
    """A rendered prompt's token ids, by the one rule every stage and backend uses: the tokenizer's own BOS when it
    adds one (LLaMA-2 and Mistral do, the builtin model does not), never twice (a chat template may have written it),
    and nothing else (no EOS). TRL's SFT tokenises the same way, so the policy, SFT and evaluation see one sequence."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and adds_bos(tokenizer) and ids[:1] != [bos]:
        ids = [bos, *ids]
    return ids


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts a BOS token before a text of its own accord."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, device: Any = None, side: Literal["left", "right"] = "left",
             min_width: int = 0) -> tuple[Any, Any]:
    """(ids, attention mask), long tensors (len(rows), width): each token row padded with `pad_id` to the longest
    (at least `min_width`). Left padding ends every row at the last column, where a causal model reads its next
    token; the mask's cumulative sum gives the positions a row would have unpadded."""
    import torch

    width = max([min_width, *map(len, rows)])
    ids, mask = [], []
    for row in rows:
        pad, real = [pad_id] * (width - len(row)), list(row)
        ids.append(pad + real if side == "left" else real + pad)
        mask.append([0] * len(pad) + [1] * len(real) if side == "left" else [1] * len(real) + [0] * len(pad))
    return torch.tensor(ids, dtype=torch.long, device=device), torch.tensor(mask, dtype=torch.long, device=device)


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` before the earliest stop string; says whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
