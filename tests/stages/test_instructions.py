import random

import pytest
from rouge_score import rouge_scorer

from refine_af.readers import load_seeds
from refine_af.stages.instructions import (
    classify_examples,
    classify_prompt,
    parse_candidates,
    rule_violation,
    self_instruct_prompt,
)


def test_prompt_shows_seeds_then_accepted_ones():
    rng = random.Random(0)
    seeds = [f"seed task number {i}" for i in range(20)]
    prompt = self_instruct_prompt(rng, seeds, [], 8, 6)
    lines = prompt.splitlines()
    assert lines[0] == "Come up with a series of tasks:" and lines[-1] == "9."
    assert sum(line.split(". ", 1)[1] in seeds for line in lines[1:-1]) == 8
    accepted = [f"generated thing {i}" for i in range(5)]
    shown = [line.split(". ", 1)[1] for line in self_instruct_prompt(rng, seeds, accepted, 8, 6).splitlines()[1:-1]]
    assert sum(s in accepted for s in shown) == 2 and sum(s in seeds for s in shown) == 6
    one = [line.split(". ", 1)[1] for line in self_instruct_prompt(rng, seeds, accepted[:1], 8, 6).splitlines()[1:-1]]
    assert sum(s in seeds for s in one) == 7


def test_parse_numbered_continuation():
    text = " Tell me a joke about cats.\n10. Summarize the news.\n11 ) Explain rain to a child\n12. Half writ"
    assert parse_candidates(text, truncated=True) == [
        "Tell me a joke about cats.", "Summarize the news.", "Explain rain to a child"]
    assert parse_candidates(text, truncated=False)[-1] == "Half writ"
    assert parse_candidates("   \n10.  \n", truncated=False) == []
    assert parse_candidates(" lowercase start\nspans two lines", False) == ["Lowercase start spans two lines"]


@pytest.mark.parametrize(("text", "reason"), [
    ("Too short here", "too_short"),
    ("word " * 151, "too_long"),
    ("Describe the image in detail please.", "blocked_keyword"),
    ("Draw a cat with ASCII art.", "blocked_keyword"),
    ("Tell me how to go to the station.", "blocked_keyword"),
    ("Open the FILES folder and count them.", "blocked_keyword"),
    ("Write a program that adds two numbers.", "write_a_program"),
    ("- List three fruits you like.", "punctuation_start"),
    ("Élaborez un plan de voyage simple.", "non_ascii_start"),
    ("Suggest three names for a bakery.", None),
    ("Explain how mapping works in Python dicts.", None),  # 'mapping' is not the word 'map'
])
def test_self_instruct_rules(text, reason):
    assert rule_violation(text) == reason


def test_classification_shots_come_from_the_seeds(seed_file):
    seeds = load_seeds(str(seed_file))
    block = classify_examples(seeds)
    assert block.count("Classification: Yes") == 6 and block.count("Classification: No") == 6
    prompt = classify_prompt(block, "Is this review positive or negative?")
    assert prompt.rstrip().endswith("Task: Is this review positive or negative?\nClassification:")


def test_rouge_reference_agrees_on_a_known_pair():
    # Sanity check of the reference used by the end-to-end tests.
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    assert scorer.score("a b c d", "a b x d")["rougeL"].fmeasure == pytest.approx(0.75)
