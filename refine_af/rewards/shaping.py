"""Shaping terms without a model: the output's length (`length_window`) and its repetition (`distinct_words`).

    length      length_window   0 if n == 0, n / min if n < min, 1 in [min, max], max / n beyond
                                (n counts output words, or tokens of the term's model's tokenizer)
    repetition  distinct_words  distinct content words / content words of the output, 0 when empty

`distinct_words` is a penalty beside a relevance term (`refine_af.rewards.independent`): copying the task's keywords
wins relevance (measured: "healthy tips staying healthy three tips healthy tips" 0.82 against a good answer's 0.43),
so the cpu-independent preset pays for relevance only with this penalty beside it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


class LengthWindow:
    """Output length shaping: 0 when empty, ramps up to 1 at `min`, flat to `max`, then decays as max / n.

    n counts whitespace-separated words (unit="words") or tokenizer tokens (unit="tokens", needs `tokenizer`).

    >>> LengthWindow(min=2, max=4)(["t"] * 5, [""] * 5, ["", "one", "one two", "a b c d", "a b c d e f g h"])
    [0.0, 0.5, 1.0, 1.0, 0.5]
    """

    def __init__(self, min: int, max: int, unit: str = "words", tokenizer: Any = None):
        self.min, self.max, self.unit, self.tokenizer = min, max, unit, tokenizer

    def _count(self, text: str) -> int:
        if self.unit == "tokens":
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text.strip() else 0
        return len(text.split())

    def __call__(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str],
                 **kwargs: Any) -> list[float]:
        scores = []
        for n in map(self._count, outputs):
            scores.append(0.0 if n == 0 else n / self.min if n < self.min else 1.0 if n <= self.max else self.max / n)
        return scores


class LazyTokenizer:
    """A lazily loaded tokenizer (for token-counted length), picklable."""

    def __init__(self, ref: str, cache_dir: str | None, s3: Any):
        self.ref, self.cache_dir, self.s3, self._tok = ref, cache_dir, s3, None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tok": None}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._tok is None:
            from transformers import AutoTokenizer

            from refine_af.models import resolve

            self._tok = AutoTokenizer.from_pretrained(resolve(self.ref, self.cache_dir, self.s3))
        return self._tok(*args, **kwargs)


STOP_WORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that these "
    "those i you he she we they me him her us them my your his our their not no so than then there here do does did "
    "have has had will would can could should may might must shall what which who whom whose when where why how all "
    "any each some such very just also into out up down over about".split())


class DistinctWords:
    """Repetition penalty: distinct content words / content words of the output (all words when it has no content
    word), 0 when empty. Stop words are left out, so natural text that reuses "the" and "of" keeps 1.

    >>> DistinctWords()(["t"] * 3, [""] * 3, ["", "The capital of France is Paris.", "Paris Paris France France"])
    [0.0, 1.0, 0.5]
    """

    def __call__(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str],
                 **kwargs: Any) -> list[float]:
        scores = []
        for y in outputs:
            words = [w.lower() for w in re.findall(r"\w+(?:['’]\w+)*", y)]
            content = [w for w in words if w not in STOP_WORDS] or words
            scores.append(len(set(content)) / len(content) if content else 0.0)
        return scores
