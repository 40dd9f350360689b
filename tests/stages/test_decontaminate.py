"""Decontamination: training rows that reproduce an evaluation text are dropped and named, clean ones kept."""

from __future__ import annotations

import json

import pytest
from helpers import finished_stage

from refine_af.config import load_config
from refine_af.decontaminate import Decontaminator, eval_texts, load_eval_texts
from refine_af.dedup import rouge_l_f
from refine_af.errors import RefineError
from refine_af.evalsets import superni, user_oriented
from refine_af.generate.base import Completion
from refine_af.runner import read_manifest, run_stage
from refine_af.store import open_store, read_json, read_jsonl

TASKS = superni.load_tasks(max_instances=4)
USER = user_oriented.load_user_oriented()
ANALOGY = next(t for t in TASKS if t.name == "task_refine_006_word_analogy")
TITLES = next(t for t in TASKS if t.name == "task_refine_010_title_generation")
CLEAN = ("Give the capital city of the country.", "France", "Paris")


def test_eval_texts_cover_definitions_instances_and_every_reference():
    texts = eval_texts(TASKS, USER)
    kinds = {(t.set, t.kind) for t in texts}
    assert kinds == {("superni", "instruction"), ("superni", "instance"), ("user_oriented", "instruction"),
                     ("user_oriented", "instance")}
    refs = sum(len(i.outputs) for t in TASKS for i in t.instances)
    assert sum(t.kind == "instance" and t.set == "superni" for t in texts) == refs
    assert sum(t.kind == "instruction" for t in texts) == len(TASKS) + len(USER)


def test_planted_rows_are_dropped_and_named_clean_ones_kept():
    d = Decontaminator(eval_texts(TASKS, USER), 0.7)
    inst = TITLES.instances[0]
    copied = {"instruction": "Write a headline for this paragraph.", "input": inst.input, "output": inst.outputs[1]}
    reworded = {"instruction": ANALOGY.definition.replace("Complete", "Finish"), "input": "cat : kitten :: dog : ?",
                "output": "puppy"}
    clean = dict(zip(("instruction", "input", "output"), CLEAN))
    kept, dropped = d.split([clean, copied, reworded])
    assert kept == [clean]
    m_copy, m_def = dropped[0]["match"], dropped[1]["match"]
    # the instance matched its own reference exactly; which of the two references is the nearest is rouge_score's call
    assert (m_copy["set"], m_copy["task"], m_copy["kind"], m_copy["id"]) == ("superni", TITLES.name, "instance",
                                                                               inst.id)
    assert m_copy["rouge_l"] == 1.0 and m_copy["text"] == f"{inst.input}\n{inst.outputs[1]}"
    assert (m_def["task"], m_def["kind"], m_def["id"]) == (ANALOGY.name, "instruction", None)
    assert m_def["rouge_l"] == round(rouge_l_f(ANALOGY.definition, reworded["instruction"]), 4) > 0.7
    user = USER[0]
    hit = d.match(user.instruction, "", "")
    assert (hit["set"], hit["task"], hit["kind"]) == ("user_oriented", user.id, "instruction")


def test_threshold_is_strict_and_decides():
    texts = eval_texts(TASKS, [])
    row = ("Complete the analogy. Answer with one word.", "", "")  # well below 0.7 against the analogy definition
    score = rouge_l_f(ANALOGY.definition, row[0])
    assert 0 < score < 0.7
    assert Decontaminator(texts, 0.7).match(*row) is None
    assert Decontaminator(texts, score - 1e-9).match(*row)["task"] == ANALOGY.name
    assert Decontaminator(texts, score).match(*row) is None  # at the threshold: kept, as the near-duplicate test


def test_load_eval_texts_follows_the_evaluate_section():
    cfg = load_config(None, ["evaluate.max_tasks=3", "evaluate.max_instances_per_task=2",
                             "evaluate.user_oriented=null"])
    texts, summary = load_eval_texts(cfg.evaluate)
    assert summary == {"superni": {"location": "builtin", "split": "default", "tasks": 3, "instances": 6},
                       "user_oriented": None}
    assert {t.task for t in texts} == {t.name for t in TASKS[:3]}
    with pytest.raises(RefineError, match="evaluate.superni: /nonexistent is not a directory"):
        load_eval_texts(load_config(None, ["evaluate.superni=/nonexistent"]).evaluate)


# -- the instances stage ----------------------------------------------------------------------------------------------

INSTRUCTIONS = [
    {"id": "i0", "instruction": CLEAN[0], "is_classification": False},
    {"id": "i1", "instruction": "Write a short headline for the news paragraph.", "is_classification": False},
    {"id": "i2", "instruction": ANALOGY.definition, "is_classification": False},  # a test task's definition
]


class Scripted:
    """Answers each instance prompt with a fixed completion per instruction."""

    tokenizer = None

    def __init__(self, by_instruction: dict[str, str]):
        self.by_instruction = by_instruction

    def generate(self, prompts, params, desc=None, seeds=None):
        return [Completion(text=next(v for k, v in self.by_instruction.items() if f"Task: {k}\n" in p),
                           finish_reason="stop") for p in prompts]


def _run(tmp_path, *overrides):
    config = load_config(None, [f"run={tmp_path}", "instances.per_instruction=1", *overrides])
    store = open_store(config.run)
    finished_stage(store, "instructions", {"instructions.jsonl": INSTRUCTIONS})
    inst = TITLES.instances[0]
    backend = Scripted({CLEAN[0]: f" {CLEAN[1]}\nOutput: {CLEAN[2]}",
                        INSTRUCTIONS[1]["instruction"]: f" {inst.input}\nOutput: {inst.outputs[0]}",  # a test item
                        ANALOGY.definition: " hot : cold :: up : ?\nOutput: down"})
    assert run_stage(config, "instances-self-instruct", store, backend=backend) == "done"
    return store


def test_stage_drops_planted_contamination_and_says_against_which_task(tmp_path):
    store = _run(tmp_path)
    rows = read_jsonl(store, "instances-self-instruct/dataset.jsonl")
    assert [(r["instruction"], r["input"], r["output"]) for r in rows] == [CLEAN]
    report = read_json(store, "instances-self-instruct/decontamination.json")
    assert report["enabled"] and report["threshold"] == 0.7 and report["checked"] == 3 and report["dropped"] == 2
    assert report["by_task"] == {f"superni/{ANALOGY.name}": 1, f"superni/{TITLES.name}": 1}
    assert report["eval_sets"]["superni"] == {"location": "builtin", "split": "default", "tasks": 12, "instances": 48}
    assert report["eval_sets"]["user_oriented"]["instructions"] == len(USER)
    assert [(r["instruction_id"], r["match"]["kind"]) for r in report["rows"]] == [("i1", "instance"),
                                                                                  ("i2", "instruction")]
    counts = read_manifest(store, "instances-self-instruct")["counts"]
    assert counts["kept"] == 1 and counts["dropped_by_reason"]["contaminated"] == 2
    assert counts["contaminated_by_task"] == report["by_task"]
    card = store.read_bytes("instances-self-instruct/README.md").decode()
    assert "contaminated: 2" in card
    assert (f"- Decontamination: 2 of 3 instances dropped for ROUGE-L F > 0.7 against 12 SuperNI tasks (48 instances) "
            f"and {len(USER)} user-oriented instructions (by evaluation task: superni/{ANALOGY.name}: 1, "
            f"superni/{TITLES.name}: 1; rows in decontamination.json)") in card


def test_stage_switch_off_keeps_everything(tmp_path):
    store = _run(tmp_path, "instances.decontaminate=false")
    assert len(read_jsonl(store, "instances-self-instruct/dataset.jsonl")) == 3
    report = json.loads(store.read_bytes("instances-self-instruct/decontamination.json"))
    assert report == {"enabled": False, "threshold": 0.7, "eval_sets": None, "checked": 0}
    assert "- Decontamination: off" in store.read_bytes("instances-self-instruct/README.md").decode()


def test_stage_refuses_a_bad_eval_set_before_generating(tmp_path):
    config = load_config(None, [f"run={tmp_path}", "evaluate.superni=/nonexistent"])
    store = open_store(config.run)
    finished_stage(store, "instructions", {"instructions.jsonl": INSTRUCTIONS})
    with pytest.raises(RefineError, match="evaluate.superni"):
        run_stage(config, "instances-self-instruct", store, backend=None)
    assert store.list("instances-self-instruct") == []


def test_the_eval_set_is_in_the_fingerprint():
    from refine_af.pipeline import stage
    from refine_af.runner import fingerprint

    def fp(*o):
        return fingerprint(stage("instances-self-instruct"), load_config(None, list(o)), {"instructions": "x"})

    assert fp("evaluate.max_tasks=3") != fp() and fp("instances.decontaminate=false") != fp()
    assert fp("evaluate.max_new_tokens=7") == fp()  # how answers are generated has no bearing on the training data
