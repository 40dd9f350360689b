"""Scorers from a causal LM: likelihoods (the CPU defaults) and yes/no judgements (`judge`), one loaded model
(`CausalScorer`) shared by every scorer that names it.

None of the paper's scorers ships offline, and the builtin 135M model is at chance as a yes/no judge, but its
likelihoods separate fluent from shuffled and on-topic from off-topic text (GPTScore / BARTScore / PMI style). With
`lp(y | c)` the mean per-token log-probability (nats) of text y after the prefix c, `chat(u)` the model's chat
template with user message u and the assistant turn opened:

    naturalness        mean_logprob         sigma((lp(output | chat(""))                   - center) / scale)
    coherence          pmi                  sigma((lp(output | chat(prompt)) - lp(output | chat(""))) / scale)
    understandability  input_logprob        sigma((lp(input | chat-user(instruction + "\\n\\n"))  - center) / scale)
                                            empty input -> `empty_input` (default 0.5 = sigma(0), neutral:
                                            many tasks rightly have no input, so none is neither rewarded
                                            nor penalised)
    reward_model       conditional_logprob  sigma((lp(output | chat(prompt))               - center) / scale)
    any term           judge                x = sum P(yes variants) / sum P(yes and no variants) at the first reply
                                            token, asked a yes/no question about the instance; log-odds, calibrated

where prompt = instruction, plus "\\n\\n" + input when there is one. An empty output scores 0 on every likelihood
term (the bottom of the squash). "No context" means the chat turn with an empty user message, so PMI isolates what
the instruction adds to the output's likelihood, format held fixed. The likelihood scorers' centres and scales are
documented constants measured for the builtin model (`refine_af.rewards.registry.SCORERS`).

Naturalness and the second PMI term are the same quantity: the scorers of one model share a cache, so a batch costs
one forward pass per distinct (prefix, text) set: outputs alone, outputs after their prompt, inputs after their
instruction.

Tokenisation: a whole prompt a model reads is tokenised by `refine_af.generate.base.encode` (the tokenizer's own BOS
when it adds one, never twice, no EOS), the rule of every stage; a scored continuation is tokenised alone, without
special tokens, so its tokens are exactly its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from refine_af.generate.base import encode, has_chat_template, pad_rows
from refine_af.rewards.calibration import Squashed, join_prompt

JUDGE_QUESTIONS = {  # a term's question unless the config gives one (`rl.reward.<term>.question`)
    "reward_model": "Is the output a helpful and correct response to the instruction and input?",
    "naturalness": "Is the output natural, fluent text?",
    "coherence": "Does the output respond coherently to the instruction and input?",
    "understandability": "Is the output easy to understand?",
}
JUDGE_TEMPLATE = "Instruction: {instruction}\nInput: {input}\nOutput: {output}\n\n{question} Answer yes or no."


class CausalScorer:
    """A causal LM used for likelihoods and yes/no judgements. Loads lazily; pickles without its weights.

    `mean_logprobs` memoises (prefix, text) pairs, so scorers sharing this object reuse each other's passes.
    """

    def __init__(self, ref: str = "builtin", *, cache_dir: str | None = None, s3: Any = None, device: str = "auto",
                 batch_size: int = 16, model: Any = None, tokenizer: Any = None):
        self.ref, self.cache_dir, self.s3, self.device, self.batch_size = ref, cache_dir, s3, device, batch_size
        self.model, self.tokenizer = model, tokenizer
        self._cache: dict[tuple[str, str], float] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "model": None, "tokenizer": None, "_cache": {}}

    def load(self) -> CausalScorer:
        if self.model is None:
            from refine_af.models import load_causal_lm

            self.model, self.tokenizer = load_causal_lm(self.ref, cache_dir=self.cache_dir, s3=self.s3,
                                                        device=self.device)
        return self

    def chat_prefix(self, user: str) -> str:
        """The text before the assistant's reply to `user` (plain "user\\n\\n" for a model without a template)."""
        tok = self.load().tokenizer
        if not has_chat_template(tok):
            return f"{user}\n\n"
        return tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                       add_generation_prompt=True)

    def user_prefix(self, user: str) -> str:
        """The text before a continuation of the user's message `user` (its template's opening, no closing)."""
        tok = self.load().tokenizer
        if not has_chat_template(tok):
            return user
        mark = "\x00"  # cut the rendered turn where the user's text ends
        rendered = tok.apply_chat_template([{"role": "user", "content": user + mark}], tokenize=False)
        return rendered[: rendered.index(mark)]

    def mean_logprobs(self, prefixes: Sequence[str], texts: Sequence[str]) -> list[float]:
        """Mean per-token log p(text | prefix) in nats; nan for an empty text. One pass per batch of new pairs."""
        todo = sorted({(p, t) for p, t in zip(prefixes, texts, strict=True) if t and (p, t) not in self._cache})
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i : i + self.batch_size]
            self._cache.update(zip(chunk, self._forward(chunk), strict=True))
        out = [self._cache[(p, t)] if t else math.nan for p, t in zip(prefixes, texts, strict=True)]
        if len(self._cache) > 20_000:  # a cache for one batch's scorers, not a memory leak
            self._cache.clear()
        return out

    def _forward(self, pairs: list[tuple[str, str]]) -> list[float]:
        import torch

        tok, model = self.load().tokenizer, self.model
        seqs, n_text = [], []
        for prefix, text in pairs:  # tokenised apart, so the text's tokens are exactly its own
            p = encode(tok, prefix)
            t = tok(text, add_special_tokens=False)["input_ids"]
            p = p or [tok.eos_token_id]  # the first text token needs something to be predicted from
            seqs.append(p + t)
            n_text.append(len(t))
        keep = max(n_text)
        # left padding lines every text up against the end, so logits are needed for the last `keep` positions only
        ids, mask = pad_rows(seqs, tok.pad_token_id, model.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                           logits_to_keep=keep + 1).logits[:, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, ids[:, -keep:, None]).squeeze(-1)  # (n, keep)
        return [logp[i, keep - n :].mean().item() for i, n in enumerate(n_text)]

    def yes_probability(self, user_messages: Sequence[str], yes: Sequence[str] = ("Yes", "yes"),
                        no: Sequence[str] = ("No", "no")) -> list[float]:
        """P(yes) / (P(yes) + P(no)) for the first reply token after each user message (variants summed)."""
        import torch

        tok, model = self.load().tokenizer, self.model
        yes_ids = sorted({tok(w, add_special_tokens=False)["input_ids"][0] for w in yes})
        no_ids = sorted({tok(w, add_special_tokens=False)["input_ids"][0] for w in no})
        out: list[float] = []
        for i in range(0, len(user_messages), self.batch_size):
            seqs = [encode(tok, self.chat_prefix(m)) for m in user_messages[i : i + self.batch_size]]
            ids, mask = pad_rows(seqs, tok.pad_token_id, model.device)
            with torch.inference_mode():
                logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                               logits_to_keep=1).logits[:, -1].float()
            probs = torch.softmax(logits, -1)
            p_yes, p_no = probs[:, yes_ids].sum(-1), probs[:, no_ids].sum(-1)
            out += (p_yes / (p_yes + p_no)).tolist()
        return out


class MeanLogprob(Squashed):
    """Naturalness: x = lp(output | chat("")); sigma((x - center) / scale), 0 for an empty output."""

    def __init__(self, lm: CausalScorer, center: float | None = None, scale: float | None = None):
        self.lm, self.center, self.scale = lm, center, scale

    def raw(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[float]:
        return self.lm.mean_logprobs([self.lm.chat_prefix("")] * len(outputs), outputs)


class ConditionalLogprob(Squashed):
    """Reward-model stand-in: x = lp(output | chat(prompt)); sigma((x - center) / scale), 0 for an empty output."""

    def __init__(self, lm: CausalScorer, center: float | None = None, scale: float | None = None):
        self.lm, self.center, self.scale = lm, center, scale

    def raw(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[float]:
        prefixes = [self.lm.chat_prefix(join_prompt(i, x)) for i, x in zip(instructions, inputs, strict=True)]
        return self.lm.mean_logprobs(prefixes, outputs)


class PMI(Squashed):
    """Coherence: x = lp(output | chat(prompt)) - lp(output | chat("")); sigma((x - center) / scale), 0 for an empty
    output.

    Pointwise mutual information between the task and the output, per token: positive when the task makes the
    output more likely, 0.5 when the output ignores it.
    """

    def __init__(self, lm: CausalScorer, center: float | None = None, scale: float | None = None):
        self.lm, self.center, self.scale = lm, center, scale

    def raw(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[float]:
        prefixes = [self.lm.chat_prefix(join_prompt(i, x)) for i, x in zip(instructions, inputs, strict=True)]
        cond = self.lm.mean_logprobs(prefixes, outputs)
        free = self.lm.mean_logprobs([self.lm.chat_prefix("")] * len(outputs), outputs)
        return [c - f for c, f in zip(cond, free, strict=True)]  # nan for an empty output


class InputLogprob(Squashed):
    """Understandability: x = lp(input | instruction); sigma((x - center) / scale), `empty_input` for no input.

    The input continues the user's message after the instruction and a blank line, as a reader would meet it.
    """

    def __init__(self, lm: CausalScorer, center: float | None = None, scale: float | None = None,
                 empty_input: float = 0.5):
        self.lm, self.center, self.scale, self.empty = lm, center, scale, empty_input

    def raw(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[float]:
        return self.lm.mean_logprobs([self.lm.user_prefix(i + "\n\n") for i in instructions], list(inputs))


class Judge(Squashed):
    """An instruction-tuned causal LM asked `question` about the instance: x = P(yes) / (P(yes) + P(no)),
    squashed in log-odds (calibrated unless center and scale are given; center 0, scale 1 gives x itself).

    The user message is JUDGE_TEMPLATE filled with the instance and the question; the probabilities are those of the
    first reply token, summed over "Yes"/"yes" and "No"/"no".
    """

    log_odds = True

    def __init__(self, lm: CausalScorer, question: str, center: float | None = None, scale: float | None = None):
        self.lm, self.question, self.center, self.scale = lm, question, center, scale

    def messages(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[str]:
        return [JUDGE_TEMPLATE.format(instruction=i, input=x or "(none)", output=y, question=self.question)
                for i, x, y in zip(instructions, inputs, outputs, strict=True)]

    def raw(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[float]:
        return self.lm.yes_probability(self.messages(instructions, inputs, outputs))
