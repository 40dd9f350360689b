"""Stage `instances-<arm>`: the instance format, the filters, the three exports, and bad input."""

from __future__ import annotations

import json

import pytest
from helpers import INSTRUCTIONS
from helpers import instances_run as make_run

from refine_af import instance_format
from refine_af.errors import RefineError
from refine_af.runner import read_manifest, run_stage
from refine_af.stages.instances import select


def test_parse_both_orders():
    assert instance_format.parse(" France\nOutput: Paris", False) == ("France", "Paris")
    assert instance_format.parse(" <none>\nOutput: Hello there!\n\nTask: next", False) == ("", "Hello there!")
    assert instance_format.parse(" odd\nInput: 37", True) == ("37", "odd")
    assert instance_format.parse(" France, and then nothing", False) is None
    assert instance_format.parse(" France\nOutput:   ", False) is None
    prompt = instance_format.build("Is it spam?", True)
    assert prompt.endswith("Task: Is it spam?\nOutput:") and "Input: <none>" not in prompt
    assert instance_format.build("Add 2 and 3.", False).endswith("Task: Add 2 and 3.\nInput:")


def test_select_drops_by_reason():
    jobs = [INSTRUCTIONS[0]] * 5 + [INSTRUCTIONS[1]] * 2
    texts = [" France\nOutput: Paris", " france\nOutput: paris", " Paris\nOutput: Paris", " Spain",
             " Italy\nOutput: Rome", " odd\nInput: 37", " even\nInput: 12"]
    rows, dropped = select(jobs, texts, "self-instruct")
    assert dropped == {"unparseable": 1, "empty_output": 0, "output_equals_input": 1, "duplicate": 1}
    assert [(r["input"], r["output"]) for r in rows] == [("France", "Paris"), ("Italy", "Rome"), ("37", "odd"),
                                                         ("12", "even")]
    assert rows[2] == {"instruction": INSTRUCTIONS[1]["instruction"], "input": "37", "output": "odd",
                       "is_classification": True, "instruction_id": "i1", "arm": "self-instruct"}


def test_self_instruct_arm_exports_load_back(tmp_path, builtin_dir):
    from datasets import load_dataset

    config, store = make_run(tmp_path, builtin_dir)
    assert run_stage(config, "instances-self-instruct", store) == "done"
    rows = [json.loads(line) for line in store.read_bytes("instances-self-instruct/dataset.jsonl").decode().split("\n")
            if line]
    manifest = read_manifest(store, "instances-self-instruct")
    counts = manifest["counts"]
    assert rows and counts["kept"] == len(rows) and counts["generated"] == 6
    assert counts["kept"] + counts["dropped"] == 6
    assert all(r["output"].strip() and r["input"].lower() != r["output"].lower() for r in rows)

    alpaca = json.loads(store.read_bytes("instances-self-instruct/alpaca.json"))
    assert alpaca == [{k: r[k] for k in ("instruction", "input", "output")} for r in rows]
    parquet = load_dataset("parquet", data_files=str(tmp_path / "instances-self-instruct" / "dataset.parquet"),
                           split="train")
    assert parquet.to_list() == rows
    card = store.read_bytes("instances-self-instruct/README.md").decode()
    assert f"Instances: {len(rows)}" in card and "data_files: dataset.parquet" in card
    decontamination = json.loads(store.read_bytes("instances-self-instruct/decontamination.json"))
    assert decontamination["enabled"] and decontamination["checked"] == counts["kept"] + decontamination["dropped"]
    assert "- Decontamination: " in card


def test_refine_af_arm_needs_the_rl_adapter(tmp_path, tiny_model_dir):
    config, store = make_run(tmp_path, tiny_model_dir)
    with pytest.raises(RefineError, match="needs the RL adapter .*run the rl stage first"):
        run_stage(config, "instances-refine-af", store)
    assert store.list("instances-refine-af") == []


def test_refine_af_arm_generates_with_the_adapter(tmp_path, tiny_model_dir):
    """A random tiny model writes nothing parseable: the stage says which filter removed what, and writes nothing."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config, store = make_run(tmp_path, tiny_model_dir, "instances.max_new_tokens=8")
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                            LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    policy.save_pretrained(tmp_path / "rl" / "adapter")
    with pytest.raises(RefineError, match=r"every instance was dropped \(unparseable: 6\) out of 6"):
        run_stage(config, "instances-refine-af", store)
    assert store.list("instances-refine-af") == []


@pytest.mark.parametrize("instructions,message", [
    ([], "holds no instructions"),
    ([{"instruction": ""}], "instructions.jsonl:1:instruction: empty"),
])
def test_bad_instruction_file(tmp_path, tiny_model_dir, instructions, message):
    config, store = make_run(tmp_path, tiny_model_dir, instructions=instructions)
    with pytest.raises(RefineError, match=message):
        run_stage(config, "instances-self-instruct", store)
    assert store.list("instances-self-instruct") == []
