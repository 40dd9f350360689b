"""Automated-feedback rewards for the rl stage: scorers for each term and their weighted sum.

An instance is a triple (instruction, input, output); the policy writes the input and the output. REFINE-AF
(arXiv 2505.06548) scores it with five terms, summed with weights from the config (`rl.reward.<term>.weight`):

    total = sum_t weight_t * score_t(instruction, input, output)

Each term is filled by a named scorer (`rl.reward.<term>.scorer`), so the manifest can say what filled it.
Every scorer maps a batch to `list[float]` (trl's reward shape: `scorer(instructions, inputs, outputs, **kwargs)`).

CPU defaults. None of the paper's scorers ships offline, and the builtin 135M model is at chance as a yes/no judge,
but its likelihoods separate fluent from shuffled and on-topic from off-topic text (GPTScore / BARTScore / PMI
style). With `lp(y | c)` the mean per-token log-probability (nats) of text y after the prefix c, `chat(u)` the
model's chat template with user message u and the assistant turn opened, and `sigma` the logistic function:

    naturalness        mean_logprob         sigma((lp(output | chat(""))                   - center) / scale)
    coherence          pmi                  sigma((lp(output | chat(prompt)) - lp(output | chat(""))) / scale)
    understandability  input_logprob        sigma((lp(input | chat-user(instruction + "\\n\\n"))  - center) / scale)
                                            empty input -> `empty_input` (default 0.5 = sigma(0), neutral:
                                            many tasks rightly have no input, so none is neither rewarded
                                            nor penalised)
    reward_model       conditional_logprob  sigma((lp(output | chat(prompt))               - center) / scale)
    length             length_window        0 if n == 0, n / min if n < min, 1 in [min, max], max / n beyond

where prompt = instruction, plus "\\n\\n" + input when there is one, and n counts output words or tokens. An
empty output scores 0 on every likelihood term (the bottom of the squash). "No context" means the chat turn with an
empty user message, so PMI isolates what the instruction adds to the output's likelihood, format held fixed.

Defaults (`refine_af.config.RewardConfig`): center -4 (naturalness), -2.5 (reward_model), -3.5 (understandability),
0 (coherence); scale 1, 0.5 for coherence; length window [1, 100] words. The centers sit between the builtin model's
values for fluent text and for shuffled words (tests/test_rewards.py's examples: fluent outputs -1.3..-5.6
nats/token without context, the same words shuffled -4.3..-10.6).

Naturalness and the second PMI term are the same quantity: the likelihood scorers of one model share a cache, so a
batch costs one forward pass per distinct (prefix, text) set: outputs alone, outputs after their prompt, inputs
after their instruction.

Cluster scorers (the paper's; see `CLUSTER_PRESET`):

    sequence_classifier  any AutoModelForSequenceClassification reward model, sigma((logit_0 - center) / scale);
                         OpenAssistant's format "<|prompter|>{prompt}<|endoftext|><|assistant|>{output}<|endoftext|>"
                         unless the tokenizer has a chat template
    unieval              UniEval boolean QA (MingZhong/unieval-dialog, T5): P(Yes) / (P(Yes) + P(No)) at the first
                         decoder step, with UniEval's dialogue questions; the dialogue history is the prompt
    judge                an instruction-tuned causal LM asked a yes/no question about the instance:
                         sum P(yes variants) / sum P(yes and no variants) at the first reply token

Models load on first use (or `load()`), so a `CompositeReward` can be built, described and pickled cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from refine_af import instance_format
from refine_af.errors import RefineError

TERMS = ("reward_model", "naturalness", "coherence", "understandability", "length")

OASST_RM = "hf:OpenAssistant/oasst-rm-2.1-pythia-1.4b-epoch-2.5"
UNIEVAL = "hf:MingZhong/unieval-dialog"

# The paper's scorers, for GPU pods with hub or S3 access. The weights repeat the CPU defaults (the paper's own are
# not reproduced here); tune them per run. UniEval's understandability judges the output, input_logprob the input.
CLUSTER_PRESET: dict[str, dict[str, Any]] = {
    "reward_model": {"scorer": "sequence_classifier", "model": OASST_RM, "weight": 1.0},
    "naturalness": {"scorer": "unieval", "model": UNIEVAL, "weight": 1.0},
    "coherence": {"scorer": "unieval", "model": UNIEVAL, "weight": 1.0},
    "understandability": {"scorer": "unieval", "model": UNIEVAL, "weight": 0.5},
    "length": {"scorer": "length_window", "weight": 0.5},
}

UNIEVAL_QUESTIONS = {  # UniEval's dialogue questions (utils.add_question, task="dialogue")
    "naturalness": "question: Is this a natural response in the dialogue? </s> response: {output}",
    "coherence": "question: Is this a coherent response given the dialogue history? </s> response: {output}"
                 " </s> dialogue history: {history}",
    "understandability": "question: Is this an understandable response in the dialogue? </s> response: {output}",
}

JUDGE_QUESTIONS = {
    "reward_model": "Is the output a helpful and correct response to the instruction and input?",
    "naturalness": "Is the output natural, fluent text?",
    "coherence": "Does the output respond coherently to the instruction and input?",
    "understandability": "Is the output easy to understand?",
}
JUDGE_TEMPLATE = "Instruction: {instruction}\nInput: {input}\nOutput: {output}\n\n{question} Answer yes or no."


class RewardBreakdown(NamedTuple):
    """Scores of one batch of n instances."""

    total: list[float]  # (n,) weighted sum over the terms
    raw: dict[str, list[float]]  # term -> (n,) scorer values, before weighting
    weighted: dict[str, list[float]]  # term -> (n,) weight * raw


def join_prompt(instruction: str, input: str = "") -> str:
    """The task as a reader sees it: the instruction, then the input when there is one."""
    return f"{instruction}\n\n{input}" if input.strip() else instruction


def task_of(item: Any) -> tuple[str, bool]:
    """(instruction, is_classification) of an instruction record: a string, a mapping or an object.

    >>> task_of("Add 2 and 3."), task_of({"instruction": "Is it spam?", "is_classification": True})
    (('Add 2 and 3.', False), ('Is it spam?', True))
    """
    if isinstance(item, str):
        return item, False
    if isinstance(item, Mapping):
        return item["instruction"], bool(item.get("is_classification", False))
    return item.instruction, bool(getattr(item, "is_classification", False))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


# -- scoring models: loaded once, shared by the scorers that name the same model ----------------------------------


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
        if getattr(tok, "chat_template", None) is None:
            return f"{user}\n\n"
        return tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                       add_generation_prompt=True)

    def user_prefix(self, user: str) -> str:
        """The text before a continuation of the user's message `user` (its template's opening, no closing)."""
        tok = self.load().tokenizer
        if getattr(tok, "chat_template", None) is None:
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
            p = tok(prefix, add_special_tokens=False)["input_ids"]
            t = tok(text, add_special_tokens=False)["input_ids"]
            p = p or [tok.eos_token_id]  # the first text token needs something to be predicted from
            seqs.append(p + t)
            n_text.append(len(t))
        width, keep = max(map(len, seqs)), max(n_text)
        # left padding lines every text up against the end, so logits are needed for the last `keep` positions only
        ids = torch.tensor([[tok.pad_token_id] * (width - len(s)) + s for s in seqs], device=model.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=model.device)
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
            seqs = [tok(self.chat_prefix(m), add_special_tokens=False)["input_ids"]
                    for m in user_messages[i : i + self.batch_size]]
            width = max(map(len, seqs))
            ids = torch.tensor([[tok.pad_token_id] * (width - len(s)) + s for s in seqs], device=model.device)
            mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=model.device)
            with torch.inference_mode():
                logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                               logits_to_keep=1).logits[:, -1].float()
            probs = torch.softmax(logits, -1)
            p_yes, p_no = probs[:, yes_ids].sum(-1), probs[:, no_ids].sum(-1)
            out += (p_yes / (p_yes + p_no)).tolist()
        return out


# -- CPU default scorers: likelihoods under a causal LM -------------------------------------------------------------


class MeanLogprob:
    """Naturalness: sigma((lp(output | chat("")) - center) / scale); 0 for an empty output."""

    def __init__(self, lm: CausalScorer, center: float = -4.0, scale: float = 1.0):
        self.lm, self.center, self.scale = lm, center, scale

    def __call__(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str],
                 **kwargs: Any) -> list[float]:
        lp = self.lm.mean_logprobs([self.lm.chat_prefix("")] * len(outputs), outputs)
        return [0.0 if math.isnan(x) else _sigmoid((x - self.center) / self.scale) for x in lp]


class ConditionalLogprob:
    """Reward-model stand-in: sigma((lp(output | chat(prompt)) - center) / scale); 0 for an empty output."""

    def __init__(self, lm: CausalScorer, center: float = -2.5, scale: float = 1.0):
        self.lm, self.center, self.scale = lm, center, scale

    def __call__(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str],
                 **kwargs: Any) -> list[float]:
        prefixes = [self.lm.chat_prefix(join_prompt(i, x)) for i, x in zip(instructions, inputs, strict=True)]
        lp = self.lm.mean_logprobs(prefixes, outputs)
        return [0.0 if math.isnan(x) else _sigmoid((x - self.center) / self.scale) for x in lp]


class PMI:
    """Coherence: sigma((lp(output | chat(prompt)) - lp(output | chat(""))) / scale); 0 for an empty output.

    Pointwise mutual information between the task and the output, per token: positive when the task makes the
    output more likely, 0.5 when the output ignores it.
    """

    def __init__(self, lm: CausalScorer, center: float = 0.0, scale: float = 0.5):
        self.lm, self.center, self.scale = lm, center, scale

    def __call__(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str],
                 **kwargs: Any) -> list[float]:
        prefixes = [self.lm.chat_prefix(join_prompt(i, x)) for i, x in zip(instructions, inputs, strict=True)]
        cond = self.lm.mean_logprobs(prefixes, outputs)
        free = self.lm.mean_logprobs([self.lm.chat_prefix("")] * len(outputs), outputs)
        return [0.0 if math.isnan(c) else _sigmoid((c - f - self.center) / self.scale)
                for c, f in zip(cond, free, strict=True)]


class InputLogprob:
    """Understandability: sigma((lp(input | instruction) - center) / scale); `empty_input` for an empty input.

    The input continues the user's message after the instruction and a blank line, as a reader would meet it.
    """

    def __init__(self, lm: CausalScorer, center: float = -3.5, scale: float = 1.0, empty_input: float = 0.5):
        self.lm, self.center, self.scale, self.empty_input = lm, center, scale, empty_input

    def __call__(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str],
                 **kwargs: Any) -> list[float]:
        lp = self.lm.mean_logprobs([self.lm.user_prefix(i + "\n\n") for i in instructions], list(inputs))
        return [self.empty_input if math.isnan(x) else _sigmoid((x - self.center) / self.scale) for x in lp]


class LengthWindow:
    """Output length shaping: 0 when empty, ramps up to 1 at `min`, flat to `max`, then decays as max / n.

    n counts whitespace-separated words (unit="words") or tokenizer tokens (unit="tokens", needs `tokenizer`).

    >>> LengthWindow(min=2, max=4)(["t"] * 5, [""] * 5, ["", "one", "one two", "a b c d", "a b c d e f g h"])
    [0.0, 0.5, 1.0, 1.0, 0.5]
    """

    def __init__(self, min: int = 1, max: int = 100, unit: str = "words", tokenizer: Any = None):
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


# -- cluster scorers: the paper's models, and a generic LLM judge -------------------------------------------------


class Judge:
    """An instruction-tuned causal LM asked `question` about the instance: P(yes) / (P(yes) + P(no)).

    The user message is JUDGE_TEMPLATE filled with the instance and the question; the probabilities are those of the
    first reply token, summed over "Yes"/"yes" and "No"/"no".
    """

    def __init__(self, lm: CausalScorer, question: str):
        self.lm, self.question = lm, question

    def messages(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[str]:
        return [JUDGE_TEMPLATE.format(instruction=i, input=x or "(none)", output=y, question=self.question)
                for i, x, y in zip(instructions, inputs, outputs, strict=True)]

    def __call__(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str],
                 **kwargs: Any) -> list[float]:
        return self.lm.yes_probability(self.messages(instructions, inputs, outputs))


class SequenceClassifier:
    """A reward model (AutoModelForSequenceClassification): sigma((logit_0 - center) / scale) per instance."""

    def __init__(self, ref: str = OASST_RM, *, center: float = 0.0, scale: float = 1.0, cache_dir: str | None = None,
                 s3: Any = None, device: str = "auto", batch_size: int = 8, model: Any = None, tokenizer: Any = None):
        self.ref, self.center, self.scale = ref, center, scale
        self.cache_dir, self.s3, self.device, self.batch_size = cache_dir, s3, device, batch_size
        self.model, self.tokenizer = model, tokenizer

    def __getstate__(self) -> dict:
        return {**self.__dict__, "model": None, "tokenizer": None}

    def load(self) -> SequenceClassifier:
        if self.model is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            from refine_af.models import pick_device, resolve

            path = resolve(self.ref, self.cache_dir, self.s3)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path).to(pick_device(self.device)).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        return self

    def texts(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[str]:
        tok = self.load().tokenizer
        prompts = [join_prompt(i, x) for i, x in zip(instructions, inputs, strict=True)]
        if getattr(tok, "chat_template", None) is not None:
            return [tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": y}],
                                            tokenize=False) for p, y in zip(prompts, outputs, strict=True)]
        eos = tok.eos_token or ""  # OpenAssistant's reward-model format
        return [f"<|prompter|>{p}{eos}<|assistant|>{y}{eos}" for p, y in zip(prompts, outputs, strict=True)]

    def __call__(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str],
                 **kwargs: Any) -> list[float]:
        import torch

        texts, tok, out = self.texts(instructions, inputs, outputs), self.tokenizer, []
        for i in range(0, len(texts), self.batch_size):
            enc = tok(texts[i : i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                      max_length=2048, add_special_tokens=False).to(self.model.device)
            with torch.inference_mode():
                logits = self.model(**enc).logits[:, 0].float()
            out += [_sigmoid((x - self.center) / self.scale) for x in logits.tolist()]
        return out


class UniEval:
    """UniEval boolean QA (T5): P(Yes) / (P(Yes) + P(No)) at the first decoder step, for one dimension."""

    def __init__(self, dimension: str, ref: str = UNIEVAL, *, cache_dir: str | None = None, s3: Any = None,
                 device: str = "auto", batch_size: int = 8, model: Any = None, tokenizer: Any = None):
        if dimension not in UNIEVAL_QUESTIONS:
            raise RefineError(f"unieval has no '{dimension}' question (known: {', '.join(UNIEVAL_QUESTIONS)})")
        self.dimension, self.ref = dimension, ref
        self.cache_dir, self.s3, self.device, self.batch_size = cache_dir, s3, device, batch_size
        self.model, self.tokenizer = model, tokenizer

    def __getstate__(self) -> dict:
        return {**self.__dict__, "model": None, "tokenizer": None}

    def load(self) -> UniEval:
        if self.model is None:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            from refine_af.models import pick_device, resolve

            path = resolve(self.ref, self.cache_dir, self.s3)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(path).to(pick_device(self.device)).eval()
        return self

    def questions(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[str]:
        template = UNIEVAL_QUESTIONS[self.dimension]
        return [template.format(output=y, history=join_prompt(i, x))
                for i, x, y in zip(instructions, inputs, outputs, strict=True)]

    def __call__(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str],
                 **kwargs: Any) -> list[float]:
        import torch

        self.load()
        tok, model = self.tokenizer, self.model
        yes, no = tok("Yes")["input_ids"][0], tok("No")["input_ids"][0]
        questions, out = self.questions(instructions, inputs, outputs), []
        for i in range(0, len(questions), self.batch_size):
            enc = tok(questions[i : i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                      max_length=1024).to(model.device)
            start = torch.full((enc["input_ids"].shape[0], 1), model.config.decoder_start_token_id,
                               device=model.device)
            with torch.inference_mode():
                logits = model(**enc, decoder_input_ids=start).logits[:, 0].float()
            pair = torch.softmax(logits[:, [yes, no]], -1)  # = P(Yes) / (P(Yes) + P(No)) under the full softmax
            out += pair[:, 0].tolist()
        return out


# -- the composite --------------------------------------------------------------------------------------------------


class CompositeReward:
    """The weighted sum of the configured terms. Terms with weight 0 are neither loaded nor computed.

        reward = CompositeReward.from_config(config.rl.reward, run_model=config.model)
        scores = reward(instructions, inputs, outputs)          # RewardBreakdown(total, raw, weighted)
        scores = reward.score_completions(records, completions) # the same, from raw policy completions
        reward.describe()   # {"naturalness": {"scorer": "mean_logprob", "model": "builtin", "weight": 1.0}, ...}
    """

    def __init__(self, scorers: dict[str, Any], weights: dict[str, float], info: dict[str, dict[str, Any]]):
        self.scorers, self.weights, self.info = scorers, weights, info

    @classmethod
    def from_config(cls, reward: Any, *, run_model: str = "builtin", cache_dir: str | None = None, s3: Any = None,
                    device: str = "auto", batch_size: int = 16) -> CompositeReward:
        """Scorers for `reward` (a `refine_af.config.RewardConfig`); `run_model` fills terms with model None."""
        lms: dict[str, CausalScorer] = {}  # one causal LM per reference, shared by every scorer that names it

        def lm(ref: str) -> CausalScorer:
            if ref not in lms:
                lms[ref] = CausalScorer(ref, cache_dir=cache_dir, s3=s3, device=device, batch_size=batch_size)
            return lms[ref]

        scorers, weights, info = {}, {}, {}
        load = {"cache_dir": cache_dir, "s3": s3, "device": device}
        for term in TERMS:
            cfg = getattr(reward, term)
            if cfg.weight == 0:
                continue
            name = cfg.scorer
            if name in ("mean_logprob", "conditional_logprob", "pmi", "input_logprob", "judge"):
                model = cfg.model or run_model
            elif name == "sequence_classifier":
                model = cfg.model or OASST_RM
            elif name == "unieval":
                model = cfg.model or UNIEVAL
            else:
                model = cfg.model or (run_model if cfg.unit == "tokens" else None)
            if name == "mean_logprob":
                scorer: Any = MeanLogprob(lm(model), cfg.center, cfg.scale)
            elif name == "conditional_logprob":
                scorer = ConditionalLogprob(lm(model), cfg.center, cfg.scale)
            elif name == "pmi":
                scorer = PMI(lm(model), cfg.center, cfg.scale)
            elif name == "input_logprob":
                scorer = InputLogprob(lm(model), cfg.center, cfg.scale, cfg.empty_input)
            elif name == "judge":
                scorer = Judge(lm(model), cfg.question or JUDGE_QUESTIONS[term])
            elif name == "sequence_classifier":
                scorer = SequenceClassifier(model, center=cfg.center, scale=cfg.scale, **load)
            elif name == "unieval":
                scorer = UniEval(term, model, **load)
            elif name == "length_window":
                scorer = LengthWindow(cfg.min, cfg.max, cfg.unit, _Tokenizer(model, cache_dir, s3) if model else None)
            else:  # unreachable when `reward` was validated
                raise RefineError(f"rl.reward.{term}.scorer: unknown scorer '{name}'")
            scorers[term], weights[term] = scorer, float(cfg.weight)
            info[term] = {"scorer": name, "model": model, "weight": float(cfg.weight)}
        if not scorers:
            raise RefineError("rl.reward: every term has weight 0; give at least one a weight")
        return cls(scorers, weights, info)

    def describe(self) -> dict[str, dict[str, Any]]:
        """What filled each term, for the manifest."""
        return {term: dict(v) for term, v in self.info.items()}

    def load(self) -> CompositeReward:
        for scorer in self.scorers.values():
            target = getattr(scorer, "lm", scorer)
            if hasattr(target, "load"):
                target.load()
        return self

    def score_term(self, term: str, instructions: Sequence[str], inputs: Sequence[str],
                   outputs: Sequence[str]) -> list[float]:
        return [float(x) for x in self.scorers[term](list(instructions), list(inputs), list(outputs))]

    def __call__(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str],
                 **kwargs: Any) -> RewardBreakdown:
        raw = {t: self.score_term(t, instructions, inputs, outputs) for t in self.scorers}
        weighted = {t: [self.weights[t] * x for x in v] for t, v in raw.items()}
        total = [sum(col) for col in zip(*weighted.values(), strict=True)]
        return RewardBreakdown(total, raw, weighted)

    def score_completions(self, items: Sequence[Any], completions: Sequence[str],
                          parse: Callable[[str, bool], tuple[str, str] | None] = instance_format.parse,
                          **kwargs: Any) -> RewardBreakdown:
        """Score policy completions of `instance_format.build(...)` for instruction records `items` (see task_of).

        An unparseable completion is scored as an empty instance: 0 on every output term, so the policy learns the
        format the instances stage parses.
        """
        tasks = [task_of(item) for item in items]
        pairs = [parse(c, cls) or ("", "") for c, (_, cls) in zip(completions, tasks, strict=True)]
        return self([t[0] for t in tasks], [p[0] for p in pairs], [p[1] for p in pairs])


class _Tokenizer:
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
