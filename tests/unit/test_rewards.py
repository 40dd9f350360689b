"""Reward scorers: config validation, scorer mechanics on tiny models, discrimination with the builtin model."""

from __future__ import annotations

import doctest
import importlib
import math
import pickle
import random
from pathlib import Path
from typing import get_args

import pytest
import torch
from pydantic import ValidationError

from refine_af import rewards
from refine_af.config import RewardConfig, RLConfig, _format_errors
from refine_af.rewards import (
    CLUSTER_PRESET,
    JUDGE_TEMPLATE,
    CausalScorer,
    CompositeReward,
    Judge,
    LengthWindow,
    SequenceClassifier,
    UniEval,
    UniEvalModel,
)


def test_doctests():
    """Every example in the package's docstrings runs and holds; a module whose examples vanished fails here."""
    package = Path(rewards.__file__).parents[1]
    with_examples = {".".join(p.relative_to(package.parent).with_suffix("").parts): p.read_text().count(">>> ")
                     for p in package.rglob("*.py") if ">>> " in p.read_text()}
    assert {"refine_af.rewards.composite", "refine_af.stages.rl"} <= set(with_examples)
    for name, examples in with_examples.items():
        result = doctest.testmod(importlib.import_module(name))
        assert result.failed == 0 and result.attempted == examples, name


# -- config ---------------------------------------------------------------------------------------------------------


def _error(data: dict) -> str:
    with pytest.raises(ValidationError) as e:
        RLConfig.model_validate(data)
    return _format_errors(e.value, "config")


def test_unknown_term_names_its_path():
    assert "reward.fluency: unknown key" in _error({"reward": {"fluency": {"scorer": "pmi", "weight": 1}}})


def test_unknown_scorer_names_its_path():
    msg = _error({"reward": {"coherence": {"scorer": "bleu"}}})
    assert "reward.coherence.scorer" in msg and "pmi" in msg


def test_scorer_must_fit_its_term():
    assert "reward.naturalness.scorer" in _error({"reward": {"naturalness": {"scorer": "pmi"}}})


@pytest.mark.parametrize("weight", ["heavy", "1.0", True, None, [1]])
def test_weight_must_be_a_number(weight):
    assert "reward.length.weight" in _error({"reward": {"length": {"weight": weight}}})


def test_other_rl_checks():
    assert "minibatches: must divide batch_size (8)" in _error({"batch_size": 8, "minibatches": 3})
    assert "reward.length.max" in _error({"reward": {"length": {"min": 10, "max": 5}}})
    assert "grpo" in _error({"algorithm": "grpo", "batch_size": 6, "grpo": {"num_generations": 4}})


def test_the_registry_builds_every_scorer_the_config_accepts():
    accepted = {s for term in rewards.TERMS for s in get_args(RewardConfig.model_fields[term].annotation
                                                               .model_fields["scorer"].annotation)}
    assert accepted == set(rewards.SCORERS)  # and none is registered that no term can name


def test_cluster_preset_validates_and_describes():
    reward = RewardConfig.model_validate(CLUSTER_PRESET)
    described = CompositeReward.from_config(reward, run_model="builtin").describe()  # builds, loads nothing
    assert described["reward_model"] == {"scorer": "sequence_classifier", "model": rewards.OASST_RM, "weight": 1.0}
    assert {described[t]["model"] for t in ("naturalness", "coherence", "understandability")} == {rewards.UNIEVAL}


def test_composite_describes_skips_zero_weights_and_pickles():
    reward = RewardConfig.model_validate({"understandability": {"weight": 0}, "coherence": {"weight": 2}})
    composite = CompositeReward.from_config(reward, run_model="builtin")
    described = composite.describe()
    assert "understandability" not in described
    assert described["naturalness"] == {"scorer": "mean_logprob", "model": "builtin", "weight": 1.0}
    assert described["coherence"] == {"scorer": "pmi", "model": "builtin", "weight": 2.0}
    # the likelihood scorers of one model share one CausalScorer
    assert composite.scorers["naturalness"].lm is composite.scorers["coherence"].lm
    assert pickle.loads(pickle.dumps(composite)).describe() == described


# -- mechanics on tiny models ---------------------------------------------------------------------------------------


def test_length_window():
    score = LengthWindow(min=3, max=6)
    outs = ["", "a", "a b c", "a b c d e f", "a b c d e f g h i j k l"]
    assert score([""] * 5, [""] * 5, outs) == [0.0, 1 / 3, 1.0, 1.0, 0.5]


def _tiny_llama(tok, cls_name: str = "LlamaForCausalLM", **extra):
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id,
                                      initializer_range=0.5, **extra)
    return getattr(transformers, cls_name)(config).eval()


def test_judge_prompt_and_yes_probability_by_hand(builtin_tokenizer):
    tok = builtin_tokenizer
    model = _tiny_llama(tok)
    judge = Judge(CausalScorer(model=model, tokenizer=tok), "Is it good?")
    instr, inputs, outputs = ["Add the numbers.", "Name a colour."], ["2 and 3", ""], ["5", "Blue"]
    messages = judge.messages(instr, inputs, outputs)
    assert messages[1] == JUDGE_TEMPLATE.format(instruction="Name a colour.", input="(none)", output="Blue",
                                                question="Is it good?")
    got = judge.raw(instr, inputs, outputs)
    for message, p in zip(messages, got, strict=True):  # one prompt at a time, no padding: the number by hand
        text = tok.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                       add_generation_prompt=True)
        assert "Add the numbers." in text or "Name a colour." in text
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        probs = torch.softmax(model(input_ids=ids).logits[0, -1], -1)
        yes = probs[tok.convert_tokens_to_ids("Yes")] + probs[tok.convert_tokens_to_ids("yes")]
        no = probs[tok.convert_tokens_to_ids("No")] + probs[tok.convert_tokens_to_ids("no")]
        assert p == pytest.approx((yes / (yes + no)).item(), abs=1e-5)
    assert 0 < min(got) and max(got) < 1 and got[0] != got[1]
    # the term's value: log-odds squashed back, so center 0 / scale 1 is the probability itself
    assert Judge(judge.lm, "Is it good?", center=0.0, scale=1.0)(instr, inputs, outputs) == pytest.approx(got)


def test_sequence_classifier_by_hand(builtin_tokenizer):
    tok = builtin_tokenizer
    model = _tiny_llama(tok, "LlamaForSequenceClassification", num_labels=1)
    scorer = SequenceClassifier(model=model, tokenizer=tok, center=0.5, scale=2.0)
    got = scorer(["Say hi.", "Count to three."], ["", "quickly"], ["Hi!", "1 2 3"])
    texts = scorer.texts(["Say hi."], [""], ["Hi!"])
    assert "Say hi." in texts[0] and "Hi!" in texts[0]
    logit = model(**tok(texts, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
    assert got[0] == pytest.approx(1 / (1 + math.exp(-(logit - 0.5) / 2.0)), abs=1e-5)
    tok_plain = type(tok).from_pretrained(tok.name_or_path)
    tok_plain.chat_template = None  # OpenAssistant's format for a tokenizer without a template
    plain = SequenceClassifier(model=model, tokenizer=tok_plain).texts(["Say hi."], ["x"], ["Hi!"])
    assert plain == [f"<|prompter|>Say hi.\n\nx{tok.eos_token}<|assistant|>Hi!{tok.eos_token}"]


def test_unieval_questions_and_yes_no_by_hand(builtin_tokenizer):
    from transformers import T5Config, T5ForConditionalGeneration

    tok = builtin_tokenizer
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=16, d_ff=32, d_kv=8, num_layers=1,
                                                num_heads=2, pad_token_id=tok.pad_token_id,
                                                decoder_start_token_id=tok.pad_token_id)).eval()
    scorer = UniEval("coherence", UniEvalModel(model=model, tokenizer=tok))
    q = scorer.questions(["Translate to French."], ["Hello"], ["Bonjour"])[0]
    assert q == ("question: Is this a coherent response given the dialogue history? </s> response: Bonjour"
                 " </s> dialogue history: Translate to French.\n\nHello")
    got = scorer.raw(["Translate to French."], ["Hello"], ["Bonjour"])[0]
    enc = tok([q], return_tensors="pt")
    logits = model(**enc, decoder_input_ids=torch.tensor([[tok.pad_token_id]])).logits[0, 0]
    probs = torch.softmax(logits, -1)
    yes, no = probs[tok("Yes")["input_ids"][0]], probs[tok("No")["input_ids"][0]]
    assert got == pytest.approx((yes / (yes + no)).item(), abs=1e-5)
    assert UniEval("coherence", scorer.lm, center=0.0, scale=1.0)(["Translate to French."], ["Hello"],
                                                                  ["Bonjour"])[0] == pytest.approx(got)
    assert UniEval("naturalness", scorer.lm).questions(["i"], [""], ["o"]) == [
        "question: Is this a natural response in the dialogue? </s> response: o"]


# -- discrimination with the builtin model --------------------------------------------------------------------------

EXAMPLES = rewards.CALIBRATION_EXAMPLES  # (instruction, input, a good output)


def _shuffled(text: str, rng: random.Random) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


@pytest.fixture(scope="module")
def scored():
    """Every CPU-default term on good, word-shuffled, off-topic (another task's output) and empty outputs."""
    composite = CompositeReward.from_config(RewardConfig(), run_model="builtin", device="cpu")
    rng = random.Random(0)
    instr = [e[0] for e in EXAMPLES]
    inputs = [e[1] for e in EXAMPLES]
    good = [e[2] for e in EXAMPLES]
    variants = {"good": good, "shuffled": [_shuffled(g, rng) for g in good], "off_topic": good[6:] + good[:6],
                "empty": [""] * len(good)}
    out = {name: composite(instr, inputs, outputs) for name, outputs in variants.items()}
    with_input = [i for i, e in enumerate(EXAMPLES) if e[1]]
    und_instr = [instr[i] for i in with_input]
    und_good = [inputs[i] for i in with_input]
    understand = composite.scorers["understandability"]
    out["input"] = {
        "good": understand(und_instr, und_good, [""] * len(und_instr)),
        "shuffled": understand(und_instr, [_shuffled(x, rng) for x in und_good], [""] * len(und_instr)),
        "off_topic": understand(und_instr, und_good[2:] + und_good[:2], [""] * len(und_instr)),
        "empty": understand(und_instr, [""] * len(und_instr), [""] * len(und_instr)),
    }
    return out


def _wins(a: list[float], b: list[float]) -> int:
    return sum(x > y for x, y in zip(a, b, strict=True))


@pytest.mark.slow
def test_naturalness_prefers_fluent_text(scored):
    good, n = scored["good"].raw["naturalness"], len(EXAMPLES)
    assert _wins(good, scored["shuffled"].raw["naturalness"]) == n
    assert _wins(good, scored["empty"].raw["naturalness"]) == n
    # by design naturalness ignores the task: an off-topic fluent output scores the same
    assert scored["off_topic"].raw["naturalness"] == pytest.approx(good[6:] + good[:6])


@pytest.mark.slow
def test_coherence_prefers_on_topic_outputs(scored):
    good, n = scored["good"].raw["coherence"], len(EXAMPLES)
    assert _wins(good, scored["off_topic"].raw["coherence"]) == n
    assert _wins(good, scored["empty"].raw["coherence"]) == n
    # shuffling keeps the topical words, so PMI barely drops (measured: 11/12); fluency is naturalness' job
    assert _wins(good, scored["shuffled"].raw["coherence"]) >= 10


@pytest.mark.slow
def test_reward_model_stand_in_prefers_good_outputs(scored):
    good, n = scored["good"].raw["reward_model"], len(EXAMPLES)
    assert _wins(good, scored["shuffled"].raw["reward_model"]) == n
    assert _wins(good, scored["empty"].raw["reward_model"]) == n
    assert _wins(good, scored["off_topic"].raw["reward_model"]) >= 10  # measured 10/12: two generic outputs
    assert sum(good) > sum(scored["off_topic"].raw["reward_model"]) + 2


@pytest.mark.slow
def test_understandability_prefers_fitting_inputs(scored):
    inputs = scored["input"]
    n = len(inputs["good"])
    assert _wins(inputs["good"], inputs["shuffled"]) == n
    assert _wins(inputs["good"], inputs["off_topic"]) >= n - 1  # measured 4/5: a short sentence fits many tasks
    assert inputs["empty"] == [0.5] * n  # neutral


@pytest.mark.slow
def test_composite_total_orders_every_example(scored):
    good, n = scored["good"], len(EXAMPLES)
    for bad in ("shuffled", "off_topic", "empty"):
        assert _wins(good.total, scored[bad].total) == n, bad
    for name, values in good.raw.items():
        assert good.weighted[name] == pytest.approx([v * (0.5 if name in ("length", "understandability") else 1)
                                                     for v in values])
    assert good.total == pytest.approx([sum(col) for col in zip(*good.weighted.values(), strict=True)])
    assert all(0 <= v <= 1 for values in good.raw.values() for v in values)


# -- squash constants and calibration -------------------------------------------------------------------------------


def _squash(scorer):
    return scorer.center, scorer.scale


def test_cpu_default_squash_is_unchanged_and_overridable():
    composite = CompositeReward.from_config(RewardConfig(), run_model="builtin")
    s = composite.scorers
    assert (_squash(s["reward_model"]), _squash(s["naturalness"]), _squash(s["coherence"]),
            _squash(s["understandability"])) == ((-2.5, 1.0), (-4.0, 1.0), (0.0, 0.5), (-3.5, 1.0))
    assert "center" not in composite.describe()["naturalness"]  # documented constants, nothing calibrated
    custom = RewardConfig.model_validate({"naturalness": {"center": -3}, "coherence": {"scale": 2.0}})
    s = CompositeReward.from_config(custom, run_model="builtin").scorers
    assert _squash(s["naturalness"]) == (-3.0, 1.0) and _squash(s["coherence"]) == (0.0, 2.0)
    # a reward model gets no centre meant for the likelihood stand-in: it is calibrated
    rm = RewardConfig.model_validate({"reward_model": {"scorer": "sequence_classifier"}})
    assert _squash(CompositeReward.from_config(rm).scorers["reward_model"]) == (None, None)


def test_calibration_set_is_fixed_and_graded():
    instr, inputs, outputs = rewards.calibration_set()
    assert len(instr) == len(inputs) == len(outputs) == 4 * len(rewards.CALIBRATION_EXAMPLES)
    assert all(o.strip() for o in outputs)
    assert rewards.calibration_set() == (instr, inputs, outputs)
    good = [e[2] for e in rewards.CALIBRATION_EXAMPLES]
    assert outputs[: len(good)] == good and sorted(outputs[len(good) : 2 * len(good)][0].split()) == sorted(
        good[0].split())


def test_calibrated_reward_model_spreads_inside_the_unit_interval(builtin_tokenizer):
    import statistics

    tok = builtin_tokenizer
    model = _tiny_llama(tok, "LlamaForSequenceClassification", num_labels=1)
    scorer = SequenceClassifier(model=model, tokenizer=tok)
    calibration = rewards.calibration_set()
    logits = scorer.raw(*calibration)
    values = scorer(*calibration)  # calibrates on first use
    assert scorer.center == pytest.approx(statistics.fmean(logits))
    assert scorer.scale == pytest.approx(statistics.pstdev(logits))
    assert values == pytest.approx([1 / (1 + math.exp(-(x - scorer.center) / scorer.scale)) for x in logits])
    assert 0.02 < min(values) and max(values) < 0.98 and statistics.pstdev(values) > 0.1  # z-scores, squashed
    again = pickle.loads(pickle.dumps(scorer))  # the calibration travels with the scorer, the weights do not
    assert again.model is None and _squash(again) == _squash(scorer) and again.calibrated


# -- unieval: one model for its three terms ------------------------------------------------------------------------


def _tiny_t5(tok):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=16, d_ff=32, d_kv=8, num_layers=1,
                                               num_heads=2, pad_token_id=tok.pad_token_id,
                                               decoder_start_token_id=tok.pad_token_id)).eval()


@pytest.fixture(scope="module")
def scorer_dirs(tmp_path_factory, builtin_tokenizer):
    """A tiny UniEval-shaped T5 and a tiny sequence-classifier reward model, saved as local checkpoints."""
    root = tmp_path_factory.mktemp("scorers")
    tok = builtin_tokenizer
    _tiny_t5(tok).save_pretrained(root / "unieval")
    tok.save_pretrained(root / "unieval")
    _tiny_llama(tok, "LlamaForSequenceClassification", num_labels=1).save_pretrained(root / "rm")
    tok.save_pretrained(root / "rm")
    return {"unieval": str(root / "unieval"), "rm": str(root / "rm")}


def _paper_config(dirs: dict, **extra) -> RewardConfig:
    return RewardConfig.model_validate({
        "reward_model": {"scorer": "sequence_classifier", "model": dirs["rm"]},
        **{t: {"scorer": "unieval", "model": dirs["unieval"]} for t in ("naturalness", "coherence",
                                                                        "understandability")}, **extra})


@pytest.mark.slow
def test_unieval_loads_one_model_for_its_three_terms(scorer_dirs, monkeypatch):
    import transformers

    loads = []
    original = transformers.AutoModelForSeq2SeqLM.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForSeq2SeqLM, "from_pretrained",
                        lambda *a, **k: loads.append(a) or original(*a, **k))
    composite = CompositeReward.from_config(_paper_config(scorer_dirs), device="cpu").load()
    assert len(loads) == 1
    terms = ("naturalness", "coherence", "understandability")
    assert len({id(composite.scorers[t].lm) for t in terms}) == 1
    scored = composite(["Say hi."], [""], ["Hi there!"])
    assert all(0 < scored.raw[t][0] < 1 for t in terms)
    described = composite.describe()
    assert all({"center", "scale"} <= described[t].keys() for t in (*terms, "reward_model"))
    assert len(loads) == 1


# -- instructmining ------------------------------------------------------------------------------------------------


def test_instructmining_needs_the_papers_scorers(scorer_dirs):
    msg = _error({"reward": {"combination": "instructmining"}})
    assert "reward.combination" in msg and "sequence_classifier" in msg
    msg = _error({"reward": {**CLUSTER_PRESET, "combination": "instructmining", "coherence": {
        "scorer": "unieval", "weight": 0}}})
    assert "reward.combination" in msg and "coherence" in msg
    assert RewardConfig.model_validate({**CLUSTER_PRESET, "combination": "instructmining"}).combination == (
        "instructmining")
    assert "reward.combination" in _error({"reward": {"combination": "product"}})


@pytest.mark.slow
def test_instructmining_is_the_published_rule_on_raw_indicators(scorer_dirs):
    composite = CompositeReward.from_config(_paper_config(scorer_dirs, combination="instructmining"),
                                            device="cpu").load()
    instr, inputs, outputs = ["Say hi.", "Add the numbers."], ["", "2 and 3"], ["Hi there!", "5"]
    got = composite(instr, inputs, outputs)
    rm, und = composite.scorers["reward_model"], composite.scorers["understandability"]
    assert got.raw["reward_model"] == pytest.approx(rm.raw(instr, inputs, outputs))  # the logit itself
    assert got.raw["understandability"] == pytest.approx(und.raw(instr, inputs, outputs))  # a probability
    for i in range(2):
        rew, nat, coh, u = (got.raw[t][i] for t in ("reward_model", "naturalness", "coherence", "understandability"))
        expected_loss = 0.0274 - 0.0078 * rew + 0.4421 * u - 0.3212 * nat - 0.1520 * coh
        assert got.total[i] == pytest.approx(-expected_loss + 0.5 * got.raw["length"][i])
    described = composite.describe()
    assert described["understandability"] == {"scorer": "unieval", "model": scorer_dirs["unieval"],
                                              "weight": -0.4421, "combination": "instructmining"}
    assert described["length"]["weight"] == 0.5
    # the weighted sum of the same scorers squashes every model term into (0, 1)
    summed = CompositeReward.from_config(_paper_config(scorer_dirs), device="cpu")(instr, inputs, outputs)
    assert all(0 < v < 1 for t, values in summed.raw.items() if t != "length" for v in values)


# -- tokenisation: the one rule, with a tokenizer that adds BOS ----------------------------------------------------


def _seen_ids(model) -> list:
    seen: list = []
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["input_ids"]), with_kwargs=True)
    return seen


def _bos_rows(ids, tok) -> list[list[int]]:
    return [[t for t in row if t != tok.pad_token_id] for row in ids.tolist()]


def test_prefixes_get_exactly_one_bos(bos_tokenizer):
    from refine_af.generate.base import adds_bos

    tok = bos_tokenizer
    assert adds_bos(tok) and tok("hi")["input_ids"] == [1, 9]
    lm = CausalScorer(model=_tiny_llama(tok), tokenizer=tok)
    seen = _seen_ids(lm.model)
    # a plain prefix, one that already starts with the BOS (as a chat template may write it), and an empty one
    lm.mean_logprobs(["Say hi .", "<s> Say hi .", ""], ["Hi there !", "Hi !", "hi"])
    rows = _bos_rows(seen[-1], tok)
    assert all(row.count(tok.bos_token_id) == 1 and row[0] == tok.bos_token_id for row in rows)
    texts = {tuple(row[-3:]) for row in rows} | {tuple(row[-2:]) for row in rows} | {tuple(row[-1:]) for row in rows}
    for text in ("Hi there !", "Hi !", "hi"):  # the continuation carries no special token
        assert tuple(tok(text, add_special_tokens=False)["input_ids"]) in texts

    lm.yes_probability(["Say hi .", "<s> hi"])
    assert all(row.count(tok.bos_token_id) == 1 and row[0] == tok.bos_token_id for row in _bos_rows(seen[-1], tok))

    classifier = SequenceClassifier(model=_tiny_llama(tok, "LlamaForSequenceClassification", num_labels=1),
                                    tokenizer=tok, center=0.0, scale=1.0)
    seen = _seen_ids(classifier.model)
    classifier(["Say hi .", "Say"], ["", "hi"], ["Hi there !", "Hi"])
    assert all(row.count(tok.bos_token_id) == 1 and row[0] == tok.bos_token_id for row in _bos_rows(seen[-1], tok))
