"""The composite reward: the configured terms' scorers (`refine_af.rewards.registry`) and their combination.

The terms combine in one of two ways (`rl.reward.combination`):

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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from refine_af import instance_format
from refine_af.errors import RefineError
from refine_af.rewards import registry
from refine_af.rewards.calibration import Squashed

TERMS = ("reward_model", "naturalness", "coherence", "understandability", "length", "repetition")


class RewardBreakdown(NamedTuple):
    """Scores of one batch of n instances."""

    total: list[float]  # (n,) the combination of the terms
    raw: dict[str, list[float]]  # term -> (n,) term values, before weighting (instructmining: the raw indicators)
    weighted: dict[str, list[float]]  # term -> (n,) weight * raw


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
        shared = registry.Shared(cache_dir, s3, device, batch_size)  # one model per reference, for every term
        rule = getattr(reward, "combination", "weighted_sum") == "instructmining"
        scorers, weights, info = {}, {}, {}
        for term in TERMS:
            cfg = getattr(reward, term)
            if cfg.weight == 0:
                continue
            scorer, model = registry.build(term, cfg, run_model, shared)
            weight = -INSTRUCTMINING[term] if rule and term in INSTRUCTMINING else float(cfg.weight)
            scorers[term], weights[term] = scorer, weight
            info[term] = {"scorer": cfg.scorer, "model": model, "weight": weight}
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
