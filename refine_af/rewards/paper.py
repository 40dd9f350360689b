"""The paper's scorers (GPU pods with hub or S3 access; `refine_af.rewards.registry.CLUSTER_PRESET`):

    sequence_classifier  any AutoModelForSequenceClassification reward model (OpenAssistant's GPT-NeoX reward
                         model through `refine_af.rewards.oasst_rm`): x = logit_0 of the last real token;
                         OpenAssistant's format "<|prompter|>{prompt}<|endoftext|><|assistant|>{output}<|endoftext|>"
                         unless the tokenizer has a chat template
    unieval              UniEval boolean QA (MingZhong/unieval-dialog, T5): x = P(Yes) / (P(Yes) + P(No)) at the
                         first decoder step, with UniEval's dialogue questions; the dialogue history is the prompt.
                         Its three terms share one loaded model (`UniEvalModel`)

Both are calibrated (`refine_af.rewards.calibration`) unless the config gives center and scale. The reward model's
text is tokenised by `refine_af.generate.base.encode`; UniEval's T5 keeps its tokenizer's default, the EOS it was
trained with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from refine_af.errors import RefineError
from refine_af.generate.base import encode, has_chat_template, pad_rows
from refine_af.rewards.calibration import Squashed, join_prompt, pretrained

UNIEVAL_QUESTIONS = {  # UniEval's dialogue questions (utils.add_question, task="dialogue")
    "naturalness": "question: Is this a natural response in the dialogue? </s> response: {output}",
    "coherence": "question: Is this a coherent response given the dialogue history? </s> response: {output}"
                 " </s> dialogue history: {history}",
    "understandability": "question: Is this an understandable response in the dialogue? </s> response: {output}",
}


class SequenceClassifier(Squashed):
    """A reward model (AutoModelForSequenceClassification): x = logit_0, sigma((x - center) / scale) per instance
    (calibrated unless center and scale are given).

    Each text is tokenised alone by the one rule (`encode`), keeps its last `max_length` tokens (a reward model reads
    the end of the answer last) and is right-padded with an attention mask: a causal model's real tokens then see
    neither the padding nor their batch mates, at the positions they would have unpadded.
    """

    def __init__(self, ref: str | None = None, *, center: float | None = None, scale: float | None = None,
                 cache_dir: str | None = None, s3: Any = None, device: str = "auto", batch_size: int = 8,
                 max_length: int = 2048, model: Any = None, tokenizer: Any = None):
        self.ref, self.center, self.scale = ref, center, scale
        self.cache_dir, self.s3, self.device, self.batch_size = cache_dir, s3, device, batch_size
        self.max_length, self.model, self.tokenizer = max_length, model, tokenizer

    def __getstate__(self) -> dict:
        return {**self.__dict__, "model": None, "tokenizer": None}

    def load(self) -> SequenceClassifier:
        from refine_af.models import default_pad, resolve

        if self.model is None:
            import refine_af.rewards.oasst_rm  # noqa: F401 -- registers OpenAssistant's gpt_neox_reward_model

            self.tokenizer, self.model = pretrained("AutoModelForSequenceClassification",
                                                    resolve(self.ref, self.cache_dir, self.s3), self.device)
        default_pad(self.tokenizer)
        if getattr(self.model.config, "pad_token_id", 0) is None:  # stock classifiers refuse a batch without one
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        return self

    def texts(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[str]:
        tok = self.load().tokenizer
        prompts = [join_prompt(i, x) for i, x in zip(instructions, inputs, strict=True)]
        if has_chat_template(tok):
            return [tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": y}],
                                            tokenize=False) for p, y in zip(prompts, outputs, strict=True)]
        eos = tok.eos_token or ""  # OpenAssistant's reward-model format
        return [f"<|prompter|>{p}{eos}<|assistant|>{y}{eos}" for p, y in zip(prompts, outputs, strict=True)]

    def raw(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[float]:
        import torch

        texts, tok, out = self.texts(instructions, inputs, outputs), self.tokenizer, []
        for i in range(0, len(texts), self.batch_size):
            seqs = [encode(tok, t)[-self.max_length :] for t in texts[i : i + self.batch_size]]
            ids, mask = pad_rows(seqs, tok.pad_token_id, self.model.device, side="right")
            with torch.inference_mode():
                out += self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float().tolist()
        return out


class UniEvalModel:
    """UniEval's T5 (boolean QA), loaded once for every dimension that names it; pickles without its weights."""

    def __init__(self, ref: str | None = None, *, cache_dir: str | None = None, s3: Any = None, device: str = "auto",
                 batch_size: int = 8, model: Any = None, tokenizer: Any = None):
        self.ref, self.cache_dir, self.s3, self.device, self.batch_size = ref, cache_dir, s3, device, batch_size
        self.model, self.tokenizer = model, tokenizer

    def __getstate__(self) -> dict:
        return {**self.__dict__, "model": None, "tokenizer": None}

    def load(self) -> UniEvalModel:
        if self.model is None:
            from refine_af.models import resolve

            self.tokenizer, self.model = pretrained("AutoModelForSeq2SeqLM", resolve(self.ref, self.cache_dir, self.s3),
                                                    self.device)
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
