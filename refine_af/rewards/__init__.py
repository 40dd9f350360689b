"""Automated-feedback rewards for the rl stage: scorers for each term and their combination.

An instance is a triple (instruction, input, output); the policy writes the input and the output. REFINE-AF
(arXiv 2505.06548) scores it with five terms, each filled by a named scorer (`rl.reward.<term>.scorer`), so the
manifest can say what filled it. Every scorer maps a batch to `list[float]` (trl's reward shape:
`scorer(instructions, inputs, outputs, **kwargs)`). By family:

    composite    CompositeReward: the terms' scorers and their combination (weighted_sum, instructmining)
    registry     SCORERS: each scorer's defaults (model, center, scale) and how it is built from its term's config
    calibration  the squash sigma((x - center) / scale) every model scorer shares, and its calibration set
    likelihood   a causal LM's likelihoods (the CPU defaults: mean_logprob, conditional_logprob, pmi, input_logprob)
                 and yes/no judgements (judge)
    paper        the paper's: OpenAssistant's reward model (sequence_classifier, architecture in oasst_rm) and
                 UniEval (unieval)
    independent  models that are not the policy (the cpu-independent preset): harper, edit_tagger, relevance
    shaping      no model: length_window, distinct_words

Models load on first use (or `load()`), so a `CompositeReward` can be built, described and pickled cheaply.
"""

from refine_af.rewards.calibration import CALIBRATION_EXAMPLES, Squashed, calibration_set, join_prompt
from refine_af.rewards.composite import INSTRUCTMINING, TERMS, CompositeReward, RewardBreakdown, task_of
from refine_af.rewards.likelihood import (
    JUDGE_QUESTIONS,
    JUDGE_TEMPLATE,
    PMI,
    CausalScorer,
    ConditionalLogprob,
    InputLogprob,
    Judge,
    MeanLogprob,
)
from refine_af.rewards.paper import UNIEVAL_QUESTIONS, SequenceClassifier, UniEval, UniEvalModel
from refine_af.rewards.registry import CLUSTER_PRESET, OASST_RM, SCORERS, UNIEVAL
from refine_af.rewards.shaping import DistinctWords, LengthWindow

__all__ = [
    "CALIBRATION_EXAMPLES", "CLUSTER_PRESET", "INSTRUCTMINING", "JUDGE_QUESTIONS", "JUDGE_TEMPLATE", "OASST_RM", "PMI",
    "SCORERS", "TERMS", "UNIEVAL", "UNIEVAL_QUESTIONS", "CausalScorer", "CompositeReward", "ConditionalLogprob",
    "DistinctWords", "InputLogprob", "Judge", "LengthWindow", "MeanLogprob", "RewardBreakdown", "SequenceClassifier",
    "Squashed", "UniEval", "UniEvalModel", "calibration_set", "join_prompt", "task_of",
]
