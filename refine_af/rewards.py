"""Automated-feedback rewards for the rl stage: scorers for each term and their combination.

An instance is a triple (instruction, input, output); the policy writes the input and the output. REFINE-AF
(arXiv 2505.06548) scores it with five terms, each filled by a named scorer (`rl.reward.<term>.scorer`), so the
manifest can say what filled it. Every scorer maps a batch to `list[float]` (trl's reward shape:
`scorer(instructions, inputs, outputs, **kwargs)`), and the terms combine in one of two ways (`rl.reward.combination`):

    weighted_sum    total = sum_t weight_t * value_t                    (weights: `rl.reward.<term>.weight`)
    instructmining  total = -expected_loss + weight_length * value_length, with InstructMining's rule
                    (Cao et al. 2023, arXiv 2307.06290) fitted on exactly these indicators and models:
                    expected_loss = 0.0274 - 0.0078 Rew + 0.4421 Und - 0.3212 Nat - 0.1520 Coh

The REFINE-AF paper's own reward equation could not be checked here; weighted_sum with unit weights is this
project's reading of it. The rule takes each indicator on its raw scale: Rew is the reward model's raw logit, Und,
Nat and Coh are UniEval's probabilities P(Yes) / (P(Yes) + P(No)); so under instructmining those four terms report
their raw values (`RewardBreakdown.raw`) and their weights are the negated coefficients. The rule was fitted to
dataset means of the indicators; it is linear, so a dataset's mean reward is the rule at the dataset's means. (GRPO
sums the terms itself: its totals lack the constant -0.0274, which moves no advantage.)

Term values under weighted_sum. Each model scorer has a raw value x per instance (nats, a logit or a probability)
and the term's value is its squash into (0, 1):

    value = sigma((x - center) / scale)          (x is the log-odds log(p / (1 - p)) for the probability scorers)

so no term sits at a bound where its gradient signal is gone. center and scale are the scorer's own unless the
config gives them (`rl.reward.<term>.center`, `.scale`):

  - likelihood scorers (the CPU preset): documented constants, measured for the builtin model (below);
  - sequence_classifier, unieval, judge: calibrated. center and scale are the mean and standard deviation of x over
    a fixed calibration set (`calibration_set()`: 12 reference instances, each also with its output's words
    shuffled, with another task's output, and with the output cut to its first half -- 48 instances of graded
    quality), scored once when the scorer loads. A fixed set, not the first training batch, so the squash is the
    same in every run, every resumed run and the probe, and is a property of the scoring model alone. A centre
    tuned for one scorer puts another's values at one end: OpenAssistant's logits landed at 0.92..0.99 under the
    CPU stand-in's centre -2.5, and UniEval's probabilities of fluent text crowd near 1. The centre and scale used
    are in the manifest (`provenance.reward`), and the rl probe records each term's spread
    (`probe.terms_spread`: mean, std, min, p10, p90, max) to check that the values stay inside (0, 1).

CPU defaults. None of the paper's scorers ships offline, and the builtin 135M model is at chance as a yes/no judge,
but its likelihoods separate fluent from shuffled and on-topic from off-topic text (GPTScore / BARTScore / PMI
style). With `lp(y | c)` the mean per-token log-probability (nats) of text y after the prefix c, `chat(u)` the
model's chat template with user message u and the assistant turn opened:

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

The likelihood scorers' constants: center -4 (mean_logprob), -2.5 (conditional_logprob), -3.5 (input_logprob),
0 (pmi); scale 1, 0.5 for pmi; length window [1, 100] words. The centers sit between the builtin model's values for
fluent text and for shuffled words (tests/test_rewards.py's examples: fluent outputs -1.3..-5.6 nats/token without
context, the same words shuffled -4.3..-10.6).

Naturalness and the second PMI term are the same quantity: the likelihood scorers of one model share a cache, so a
batch costs one forward pass per distinct (prefix, text) set: outputs alone, outputs after their prompt, inputs
after their instruction.

Scorers independent of the policy (`refine_af.independent_scorers`, the `cpu-independent` preset): `harper`
(Harper's lints per word), `edit_tagger` (quire's grammatical-error tagger), `relevance` (MiniLM cosine of task and
output) and `distinct_words`, the `repetition` term's penalty (weight 0 unless a config turns it on), beside
relevance because keyword spam wins relevance. Formulas and constants are in that module.

Cluster scorers (the paper's; see `CLUSTER_PRESET`):

    sequence_classifier  any AutoModelForSequenceClassification reward model (OpenAssistant's GPT-NeoX reward
                         model through `refine_af.oasst_rm`): x = logit_0 of the last real token; OpenAssistant's
                         format "<|prompter|>{prompt}<|endoftext|><|assistant|>{output}<|endoftext|>" unless the
                         tokenizer has a chat template
    unieval              UniEval boolean QA (MingZhong/unieval-dialog, T5): x = P(Yes) / (P(Yes) + P(No)) at the
                         first decoder step, with UniEval's dialogue questions; the dialogue history is the prompt.
                         Its three terms share one loaded model
    judge                an instruction-tuned causal LM asked a yes/no question about the instance:
                         x = sum P(yes variants) / sum P(yes and no variants) at the first reply token

Tokenisation: a whole prompt or text a model reads is tokenised by `refine_af.generate.base.encode` (the tokenizer's
own BOS when it adds one, never twice, no EOS), the rule of every stage; a scored continuation is tokenised alone,
without special tokens, so its tokens are exactly its own. (UniEval's T5 keeps its tokenizer's default, the EOS it
was trained with.)

Models load on first use (or `load()`), so a `CompositeReward` can be built, described and pickled cheaply.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from refine_af import instance_format
from refine_af.errors import RefineError

TERMS = ("reward_model", "naturalness", "coherence", "understandability", "length", "repetition")
# scorers from models that are not the policy (refine_af.independent_scorers, the cpu-independent preset)
INDEPENDENT = ("harper", "edit_tagger", "relevance", "distinct_words")

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

    total: list[float]  # (n,) the combination of the terms
    raw: dict[str, list[float]]  # term -> (n,) term values, before weighting (instructmining: the raw indicators)
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


def _log_odds(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)  # a float softmax can give exactly 0 or 1
    return math.log(p / (1 - p))


def _encode(tokenizer: Any, text: str) -> list[int]:
    from refine_af.generate.base import encode

    return encode(tokenizer, text)


# -- calibration --------------------------------------------------------------------------------------------------

CALIBRATION_EXAMPLES = [  # (instruction, input, a good output): varied tasks, with and without an input
    ("Translate the sentence into French.", "Good morning, how are you?", "Bonjour, comment allez-vous ?"),
    ("Give three tips for staying healthy.", "",
     "Eat a balanced diet with plenty of vegetables, exercise regularly, and get enough sleep every night."),
    ("What is the capital of France?", "", "The capital of France is Paris."),
    ("Summarize the paragraph in one sentence.",
     ("The city council voted on Tuesday to expand the public library, adding a new wing for children and "
      "extending opening hours on weekends."),
     "The city council approved expanding the library with a children's wing and longer weekend hours."),
    ("Classify the sentiment of the review as positive or negative.",
     "I loved this movie, the acting was wonderful and the story kept me hooked.",
     "The sentiment of the review is positive."),
    ("Write a short poem about the ocean.", "",
     "The ocean waves roll in and out, whispering secrets to the sandy shore beneath the silver moon."),
    ("Convert the temperature from Celsius to Fahrenheit.", "25 degrees Celsius",
     "25 degrees Celsius is 77 degrees Fahrenheit."),
    ("Explain why the sky is blue.", "",
     "The sky looks blue because air molecules scatter short blue wavelengths of sunlight more than red ones."),
    ("List the first five prime numbers.", "", "The first five prime numbers are 2, 3, 5, 7, and 11."),
    ("Correct the grammar in the sentence.", "She go to school every days.", "She goes to school every day."),
    ("Suggest a name for a new coffee shop.", "", "A good name for a new coffee shop would be The Daily Grind."),
    ("Describe the main function of the heart.", "",
     "The heart pumps blood through the body, delivering oxygen and nutrients to the organs."),
]


def calibration_set() -> tuple[list[str], list[str], list[str]]:
    """(instructions, inputs, outputs) of the 48 calibration instances: each example as written, with its output's
    words shuffled (seeded), with another example's output, and with its output cut to its first half.

    Graded quality, so the spread of a scorer's values on it is the spread between good and poor instances; empty
    outputs are left out (an unparseable completion is an extreme, not part of the range a term should resolve).
    """
    import random

    rng = random.Random(0)
    instr = [e[0] for e in CALIBRATION_EXAMPLES]
    inputs = [e[1] for e in CALIBRATION_EXAMPLES]
    good = [e[2] for e in CALIBRATION_EXAMPLES]
    shuffled = []
    for text in good:
        words = text.split()
        rng.shuffle(words)
        shuffled.append(" ".join(words))
    half = len(good) // 2
    off_topic = good[half:] + good[:half]
    cut = [" ".join(text.split()[: max(1, len(text.split()) // 2)]) for text in good]
    return instr * 4, inputs * 4, good + shuffled + off_topic + cut


class Squashed:
    """A model scorer: `raw()` gives its natural value x per instance (nan: nothing to score), `__call__` the
    term's value sigma((x' - center) / scale) with x' = x, or log(x / (1 - x)) for a probability (`log_odds`).

    center / scale None: calibrated, the mean / standard deviation of x' over `calibration_set()`, computed once
    (`calibrate()`, on the first call or at `CompositeReward.load()`) and kept when pickled.
    """

    center: float | None
    scale: float | None
    empty = 0.0  # the value of an instance with nothing to score (an empty output)
    log_odds = False

    def raw(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[float]:
        raise NotImplementedError

    def _x(self, value: float) -> float:
        return _log_odds(value) if self.log_odds else value

    @property
    def calibrated(self) -> bool:
        """Whether center or scale comes from the calibration set."""
        return getattr(self, "_calibrated", False) or self.center is None or self.scale is None

    def calibrate(self) -> Squashed:
        if self.center is None or self.scale is None:
            xs = [self._x(v) for v in self.raw(*calibration_set()) if not math.isnan(v)]
            if self.center is None:
                self.center = statistics.fmean(xs)
            if self.scale is None:
                self.scale = statistics.pstdev(xs) or 1.0  # a constant scorer: any scale maps it to 0.5
            self._calibrated = True
        return self

    def __call__(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str],
                 **kwargs: Any) -> list[float]:
        self.calibrate()
        return [self.empty if math.isnan(v) else _sigmoid((self._x(v) - self.center) / self.scale)
                for v in self.raw(instructions, inputs, outputs)]


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
            p = _encode(tok, prefix)
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
            seqs = [_encode(tok, self.chat_prefix(m)) for m in user_messages[i : i + self.batch_size]]
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


class UniEvalModel:
    """UniEval's T5 (boolean QA), loaded once for every dimension that names it; pickles without its weights."""

    def __init__(self, ref: str = UNIEVAL, *, cache_dir: str | None = None, s3: Any = None, device: str = "auto",
                 batch_size: int = 8, model: Any = None, tokenizer: Any = None):
        self.ref, self.cache_dir, self.s3, self.device, self.batch_size = ref, cache_dir, s3, device, batch_size
        self.model, self.tokenizer = model, tokenizer

    def __getstate__(self) -> dict:
        return {**self.__dict__, "model": None, "tokenizer": None}

    def load(self) -> UniEvalModel:
        if self.model is None:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            from refine_af.models import pick_device, resolve

            path = resolve(self.ref, self.cache_dir, self.s3)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(path).to(pick_device(self.device)).eval()
        return self

    def yes_probability(self, questions: Sequence[str]) -> list[float]:
        """P(Yes) / (P(Yes) + P(No)) at the first decoder step for each question."""
        import torch

        self.load()
        tok, model = self.tokenizer, self.model
        yes, no = tok("Yes")["input_ids"][0], tok("No")["input_ids"][0]
        out: list[float] = []
        for i in range(0, len(questions), self.batch_size):
            # T5 keeps its tokenizer's own special tokens (the closing </s> UniEval was trained with)
            enc = tok(list(questions[i : i + self.batch_size]), return_tensors="pt", padding=True, truncation=True,
                      max_length=1024).to(model.device)
            start = torch.full((enc["input_ids"].shape[0], 1), model.config.decoder_start_token_id,
                               device=model.device)
            with torch.inference_mode():
                logits = model(**enc, decoder_input_ids=start).logits[:, 0].float()
            pair = torch.softmax(logits[:, [yes, no]], -1)  # = P(Yes) / (P(Yes) + P(No)) under the full softmax
            out += pair[:, 0].tolist()
        return out


# -- CPU default scorers: likelihoods under a causal LM -------------------------------------------------------------


class MeanLogprob(Squashed):
    """Naturalness: x = lp(output | chat("")); sigma((x - center) / scale), 0 for an empty output."""

    def __init__(self, lm: CausalScorer, center: float | None = -4.0, scale: float | None = 1.0):
        self.lm, self.center, self.scale = lm, center, scale

    def raw(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[float]:
        return self.lm.mean_logprobs([self.lm.chat_prefix("")] * len(outputs), outputs)


class ConditionalLogprob(Squashed):
    """Reward-model stand-in: x = lp(output | chat(prompt)); sigma((x - center) / scale), 0 for an empty output."""

    def __init__(self, lm: CausalScorer, center: float | None = -2.5, scale: float | None = 1.0):
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

    def __init__(self, lm: CausalScorer, center: float | None = 0.0, scale: float | None = 0.5):
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

    def __init__(self, lm: CausalScorer, center: float | None = -3.5, scale: float | None = 1.0,
                 empty_input: float = 0.5):
        self.lm, self.center, self.scale, self.empty = lm, center, scale, empty_input

    def raw(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[float]:
        return self.lm.mean_logprobs([self.lm.user_prefix(i + "\n\n") for i in instructions], list(inputs))


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


class SequenceClassifier(Squashed):
    """A reward model (AutoModelForSequenceClassification): x = logit_0, sigma((x - center) / scale) per instance
    (calibrated unless center and scale are given).

    Each text is tokenised alone by the one rule (`encode`), keeps its last `max_length` tokens (a reward model reads
    the end of the answer last) and is right-padded with an attention mask: a causal model's real tokens then see
    neither the padding nor their batch mates, at the positions they would have unpadded.
    """

    def __init__(self, ref: str = OASST_RM, *, center: float | None = None, scale: float | None = None,
                 cache_dir: str | None = None, s3: Any = None, device: str = "auto", batch_size: int = 8,
                 max_length: int = 2048, model: Any = None, tokenizer: Any = None):
        self.ref, self.center, self.scale = ref, center, scale
        self.cache_dir, self.s3, self.device, self.batch_size = cache_dir, s3, device, batch_size
        self.max_length, self.model, self.tokenizer = max_length, model, tokenizer

    def __getstate__(self) -> dict:
        return {**self.__dict__, "model": None, "tokenizer": None}

    def load(self) -> SequenceClassifier:
        if self.model is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            import refine_af.oasst_rm  # noqa: F401 -- registers OpenAssistant's gpt_neox_reward_model
            from refine_af.models import pick_device, resolve

            path = resolve(self.ref, self.cache_dir, self.s3)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path).to(pick_device(self.device)).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if getattr(self.model.config, "pad_token_id", 0) is None:  # stock classifiers refuse a batch without one
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        return self

    def texts(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[str]:
        tok = self.load().tokenizer
        prompts = [join_prompt(i, x) for i, x in zip(instructions, inputs, strict=True)]
        if getattr(tok, "chat_template", None) is not None:
            return [tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": y}],
                                            tokenize=False) for p, y in zip(prompts, outputs, strict=True)]
        eos = tok.eos_token or ""  # OpenAssistant's reward-model format
        return [f"<|prompter|>{p}{eos}<|assistant|>{y}{eos}" for p, y in zip(prompts, outputs, strict=True)]

    def raw(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[float]:
        import torch

        texts, tok, out = self.texts(instructions, inputs, outputs), self.tokenizer, []
        for i in range(0, len(texts), self.batch_size):
            seqs = [_encode(tok, t)[-self.max_length :] for t in texts[i : i + self.batch_size]]
            width = max(map(len, seqs))
            ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs], device=self.model.device)
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=self.model.device)
            with torch.inference_mode():
                out += self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float().tolist()
        return out


class UniEval(Squashed):
    """UniEval boolean QA for one dimension: x = P(Yes) / (P(Yes) + P(No)), squashed in log-odds (calibrated unless
    center and scale are given; center 0, scale 1 gives x itself). `lm` is the shared `UniEvalModel`."""

    log_odds = True

    def __init__(self, dimension: str, lm: UniEvalModel, center: float | None = None, scale: float | None = None):
        if dimension not in UNIEVAL_QUESTIONS:
            raise RefineError(f"unieval has no '{dimension}' question (known: {', '.join(UNIEVAL_QUESTIONS)})")
        self.dimension, self.lm, self.center, self.scale = dimension, lm, center, scale

    def questions(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[str]:
        template = UNIEVAL_QUESTIONS[self.dimension]
        return [template.format(output=y, history=join_prompt(i, x))
                for i, x, y in zip(instructions, inputs, outputs, strict=True)]

    def raw(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[float]:
        return self.lm.yes_probability(self.questions(instructions, inputs, outputs))


# -- the composite --------------------------------------------------------------------------------------------------

# InstructMining's rule (Cao et al. 2023) with OpenAssistant's reward model and UniEval-dialog: the expected loss
# of a model fine-tuned on the data, from the raw indicators (Rew a logit, the UniEval scores probabilities)
INSTRUCTMINING_INTERCEPT = 0.0274
INSTRUCTMINING = {"reward_model": -0.0078, "understandability": 0.4421, "naturalness": -0.3212, "coherence": -0.1520}


class CompositeReward:
    """The configured terms' combination. Terms with weight 0 are neither loaded nor computed.

        reward = CompositeReward.from_config(config.rl.reward, run_model=config.model)
        scores = reward(instructions, inputs, outputs)          # RewardBreakdown(total, raw, weighted)
        scores = reward.score_completions(records, completions) # the same, from raw policy completions
        reward.describe()   # {"naturalness": {"scorer": "mean_logprob", "model": "builtin", "weight": 1.0}, ...}

    total = offset + sum over terms of weights[term] * value, where `raw_terms` report their scorer's raw value
    (instructmining's indicators) and the others their squashed value; offset is 0 for the weighted sum.
    """

    def __init__(self, scorers: dict[str, Any], weights: dict[str, float], info: dict[str, dict[str, Any]],
                 raw_terms: frozenset[str] = frozenset(), offset: float = 0.0):
        self.scorers, self.weights, self.info, self.raw_terms, self.offset = scorers, weights, info, raw_terms, offset

    @classmethod
    def from_config(cls, reward: Any, *, run_model: str = "builtin", cache_dir: str | None = None, s3: Any = None,
                    device: str = "auto", batch_size: int = 16) -> CompositeReward:
        """Scorers for `reward` (a `refine_af.config.RewardConfig`); `run_model` fills terms with model None."""
        from refine_af import independent_scorers as indep  # cheap: its models load on first use
        lms: dict[tuple[str, str], Any] = {}  # one model per (kind, reference), shared by every scorer naming it
        load = {"cache_dir": cache_dir, "s3": s3, "device": device}

        def lm(ref: str) -> CausalScorer:
            if ("causal", ref) not in lms:
                lms["causal", ref] = CausalScorer(ref, batch_size=batch_size, **load)
            return lms["causal", ref]

        def unieval(ref: str) -> UniEvalModel:
            if ("unieval", ref) not in lms:
                lms["unieval", ref] = UniEvalModel(ref, **load)
            return lms["unieval", ref]

        def encoder(ref: str | None) -> Any:
            if ("encoder", ref) not in lms:
                lms["encoder", ref] = indep.SentenceEncoder(ref, **load)
            return lms["encoder", ref]

        rule = getattr(reward, "combination", "weighted_sum") == "instructmining"
        scorers, weights, info = {}, {}, {}
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
            elif name in INDEPENDENT:
                package = {"harper": indep.HARPER, "edit_tagger": indep.TAGGER, "relevance": indep.MINILM}
                model = cfg.model or (indep.package_ref(package[name]) if name in package else None)
            else:
                model = cfg.model or (run_model if cfg.unit == "tokens" else None)
            # None leaves the scorer's own centre / scale: its documented constants, or calibration
            squash = {k: v for k in ("center", "scale") if (v := getattr(cfg, k, None)) is not None}
            if name == "mean_logprob":
                scorer: Any = MeanLogprob(lm(model), **squash)
            elif name == "conditional_logprob":
                scorer = ConditionalLogprob(lm(model), **squash)
            elif name == "pmi":
                scorer = PMI(lm(model), **squash)
            elif name == "input_logprob":
                scorer = InputLogprob(lm(model), **squash, empty_input=cfg.empty_input)
            elif name == "judge":
                scorer = Judge(lm(model), cfg.question or JUDGE_QUESTIONS[term], **squash)
            elif name == "sequence_classifier":
                scorer = SequenceClassifier(model, **squash, **load)
            elif name == "unieval":
                scorer = UniEval(term, unieval(model), **squash)
            elif name == "harper":
                scorer = indep.Harper(**squash)
            elif name == "edit_tagger":
                scorer = indep.EditTagger(cfg.model, **squash)
            elif name == "relevance":
                scorer = indep.Relevance(encoder(cfg.model), **squash)
            elif name == "distinct_words":
                scorer = indep.DistinctWords()
            elif name == "length_window":
                scorer = LengthWindow(cfg.min, cfg.max, cfg.unit, _Tokenizer(model, cache_dir, s3) if model else None)
            else:  # unreachable when `reward` was validated
                raise RefineError(f"rl.reward.{term}.scorer: unknown scorer '{name}'")
            weight = -INSTRUCTMINING[term] if rule and term in INSTRUCTMINING else float(cfg.weight)
            scorers[term], weights[term] = scorer, weight
            info[term] = {"scorer": name, "model": model, "weight": weight}
            if rule and term in INSTRUCTMINING:
                info[term]["combination"] = "instructmining"
        if not scorers:
            raise RefineError("rl.reward: every term has weight 0; give at least one a weight")
        if rule:
            return cls(scorers, weights, info, frozenset(INSTRUCTMINING), -INSTRUCTMINING_INTERCEPT)
        return cls(scorers, weights, info)

    def describe(self) -> dict[str, dict[str, Any]]:
        """What filled each term, for the manifest; a calibrated term adds the centre and scale it got."""
        out = {term: dict(v) for term, v in self.info.items()}
        for term, scorer in self.scorers.items():
            if term not in self.raw_terms and isinstance(scorer, Squashed) and scorer.calibrated \
                    and scorer.center is not None and scorer.scale is not None:
                out[term].update(center=round(scorer.center, 4), scale=round(scorer.scale, 4))
        return out

    def load(self) -> CompositeReward:
        """Load every scoring model and calibrate the terms that need it (so failures come before any work)."""
        for term, scorer in self.scorers.items():
            target = getattr(scorer, "lm", scorer)
            if hasattr(target, "load"):
                target.load()
            if isinstance(scorer, Squashed) and term not in self.raw_terms:
                scorer.calibrate()
        return self

    def score_term(self, term: str, instructions: Sequence[str], inputs: Sequence[str],
                   outputs: Sequence[str]) -> list[float]:
        scorer, args = self.scorers[term], (list(instructions), list(inputs), list(outputs))
        return [float(x) for x in (scorer.raw(*args) if term in self.raw_terms else scorer(*args))]

    def __call__(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str],
                 **kwargs: Any) -> RewardBreakdown:
        raw = {t: self.score_term(t, instructions, inputs, outputs) for t in self.scorers}
        weighted = {t: [self.weights[t] * x for x in v] for t, v in raw.items()}
        total = [self.offset + sum(col) for col in zip(*weighted.values(), strict=True)]
        return RewardBreakdown(total, raw, weighted)

    def score_completions(self, items: Sequence[Any], completions: Sequence[str],
                          parse: Callable[[str, bool], tuple[str, str] | None] = instance_format.parse,
                          **kwargs: Any) -> RewardBreakdown:
        """Score policy completions of `instance_format.build(...)` for instruction records `items` (see task_of).

        An unparseable completion is scored as an empty instance: 0 on every likelihood output term, so the policy
        learns the format the instances stage parses.
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
