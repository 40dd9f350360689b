"""Reward scorers: config validation, scorer mechanics on tiny models, discrimination with the builtin model."""

from __future__ import annotations

import doctest
import math
import pickle
import random

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
)


def test_doctests():
    assert doctest.testmod(rewards).failed == 0


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
    assert "minibatches: Value error, must divide batch_size" in _error({"batch_size": 8, "minibatches": 3})
    assert "reward.length.max" in _error({"reward": {"length": {"min": 10, "max": 5}}})
    assert "grpo" in _error({"algorithm": "grpo", "batch_size": 6, "grpo": {"num_generations": 4}})


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


@pytest.fixture(scope="module")
def builtin_tokenizer(builtin_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(builtin_dir)
    tok.padding_side = "left"
    return tok


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
    got = judge(instr, inputs, outputs)
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
    scorer = UniEval("coherence", model=model, tokenizer=tok)
    q = scorer.questions(["Translate to French."], ["Hello"], ["Bonjour"])[0]
    assert q == ("question: Is this a coherent response given the dialogue history? </s> response: Bonjour"
                 " </s> dialogue history: Translate to French.\n\nHello")
    got = scorer(["Translate to French."], ["Hello"], ["Bonjour"])[0]
    enc = tok([q], return_tensors="pt")
    logits = model(**enc, decoder_input_ids=torch.tensor([[tok.pad_token_id]])).logits[0, 0]
    probs = torch.softmax(logits, -1)
    yes, no = probs[tok("Yes")["input_ids"][0]], probs[tok("No")["input_ids"][0]]
    assert got == pytest.approx((yes / (yes + no)).item(), abs=1e-5)
    assert UniEval("naturalness", model=model, tokenizer=tok).questions(["i"], [""], ["o"]) == [
        "question: Is this a natural response in the dialogue? </s> response: o"]


# -- discrimination with the builtin model --------------------------------------------------------------------------

EXAMPLES = [  # (instruction, input, a good output)
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
