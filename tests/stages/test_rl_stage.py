"""Stage `rl` through the runner: outputs, the manifest's summary, exact resume from a store checkpoint, bad input."""

from __future__ import annotations

import json

import pytest
from helpers import finished_stage

from refine_af import ppo
from refine_af.config import load_config
from refine_af.errors import RefineError
from refine_af.runner import read_manifest, run_stage
from refine_af.store import open_store

pytestmark = pytest.mark.usefixtures("one_thread")

INSTRUCTIONS = [
    {"instruction": "Name a fruit that is yellow.", "is_classification": False},
    {"instruction": "Is the sentence a question or a statement?", "is_classification": True},
    {"instruction": "Write a short greeting for a friend.", "is_classification": False},
    {"instruction": "Translate the word into French.", "is_classification": False},
]



def make_run(tmp_path, model, *overrides, instructions=INSTRUCTIONS):
    config = load_config(None, [f"run={tmp_path}", f"model={model}", "rl.steps=4", "rl.batch_size=4",
                                "rl.max_new_tokens=8", "rl.checkpoint_every=2", "rl.learning_rate=1e-3", *overrides])
    store = open_store(config.run)
    finished_stage(store, "instructions", {"instructions.jsonl": instructions})
    return config, store


@pytest.mark.slow
def test_ppo_stage_writes_adapter_metrics_plot_and_summary(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config, store = make_run(tmp_path, tiny_model_dir)
    assert run_stage(config, "rl", store) == "done"
    keys = set(store.list("rl"))
    assert {"rl/adapter/adapter_config.json", "rl/adapter/adapter_model.safetensors", "rl/metrics.jsonl",
            "rl/rewards.png", "rl/samples.jsonl", "rl/manifest.json"} <= keys
    assert not any(k.startswith("rl/checkpoints/") for k in keys)  # only needed until the adapter is final
    assert store.read_bytes("rl/rewards.png")[:8] == b"\x89PNG\r\n\x1a\n"

    rows = [json.loads(line) for line in store.read_bytes("rl/metrics.jsonl").decode().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for term in ("reward_model", "naturalness", "coherence", "understandability", "length"):
        assert {f"reward/{term}/mean", f"reward/{term}/weighted"} <= rows[0].keys()
    assert all(set(r) >= {"kl", "policy_loss", "value_loss", "response_length", "seconds"} for r in rows)

    manifest = read_manifest(store, "rl")
    m = manifest["metrics"]
    assert m["reward_first5"] == pytest.approx(sum(r["reward/total"] for r in rows) / 4, abs=1e-4)
    assert m["kl_final"] == pytest.approx(rows[-1]["kl"], abs=1e-4)
    assert set(m["terms_last5"]) == set(manifest["provenance"]["reward"])
    assert manifest["provenance"]["reward"]["coherence"] == {"scorer": "pmi", "model": str(tiny_model_dir),
                                                              "weight": 1.0}
    assert manifest["files"]["adapter/adapter_model.safetensors"]["bytes"] > 0

    probe = [json.loads(line) for line in store.read_bytes("rl/probe.jsonl").decode().splitlines()]
    assert sorted(r["instruction"] for r in probe) == sorted(i["instruction"] for i in INSTRUCTIONS)
    p = m["probe"]
    assert p["prompts"] == 4 and set(p["terms_policy"]) == set(m["terms_last5"])
    assert p["base"] == pytest.approx(sum(r["reward_base"] for r in probe) / 4, abs=1e-4)
    assert p["delta"] == pytest.approx(p["policy"] - p["base"], abs=1e-3)
    assert p["delta_ci"][0] <= p["delta"] <= p["delta_ci"][1]

    adapter = tmp_path / "rl" / "adapter"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter)
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora and any(p.abs().sum() > 0 for p in lora)  # trained: B starts at zero
    assert run_stage(config, "rl", store) == "skipped"


@pytest.mark.slow
def test_probe_pairs_base_and_policy_on_the_same_prompts_and_seeds(tmp_path, tiny_model_dir):
    # An adapter that barely moved must answer exactly as the base model: same instructions, same sampling seeds.
    config, store = make_run(tmp_path, tiny_model_dir, "rl.learning_rate=1e-12", "rl.steps=1", "rl.probe_prompts=3")
    assert run_stage(config, "rl", store) == "done"
    probe = [json.loads(line) for line in store.read_bytes("rl/probe.jsonl").decode().splitlines()]
    assert len(probe) == 3 and len({r["instruction"] for r in probe}) == 3
    assert all(r["base"] == r["policy"] and r["reward_base"] == r["reward_policy"] for r in probe)
    assert read_manifest(store, "rl")["metrics"]["probe"]["delta"] == 0

    off, off_store = make_run(tmp_path / "off", tiny_model_dir, "rl.steps=1", "rl.probe_prompts=0")
    run_stage(off, "rl", off_store)
    assert not off_store.exists("rl/probe.jsonl") and "probe" not in read_manifest(off_store, "rl")["metrics"]


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint_exactly(tmp_path, tiny_model_dir, monkeypatch):
    whole_config, whole_store = make_run(tmp_path / "whole", tiny_model_dir)
    run_stage(whole_config, "rl", whole_store)
    whole = whole_store.read_bytes("rl/metrics.jsonl").decode().splitlines()

    config, store = make_run(tmp_path / "killed", tiny_model_dir)
    real_step, calls = ppo.PPOTrainer.train_step, []

    def dies_at_step_3(self, records):
        calls.append(self.step)
        if self.step == 2 and len(calls) == 3:
            raise KeyboardInterrupt  # killed after the step-2 checkpoint
        return real_step(self, records)

    monkeypatch.setattr(ppo.PPOTrainer, "train_step", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_stage(config, "rl", store)
    assert any(k.endswith("checkpoints/step-00002/trainer_state.pt") for k in store.list("rl"))
    assert read_manifest(store, "rl") is None

    calls.clear()
    assert run_stage(config, "rl", store) == "done"
    assert calls == [2, 3]  # steps 1 and 2 were not redone
    assert read_manifest(store, "rl")["resumed"] is True
    resumed = store.read_bytes("rl/metrics.jsonl").decode().splitlines()
    strip = [{k: v for k, v in json.loads(r).items() if not k.startswith("seconds")} for r in resumed]
    expect = [{k: v for k, v in json.loads(r).items() if not k.startswith("seconds")} for r in whole]
    for got, want in zip(strip, expect, strict=True):
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-5), key


@pytest.mark.slow
def test_grpo_stage(tmp_path, tiny_model_dir):
    config, store = make_run(tmp_path, tiny_model_dir, "rl.algorithm=grpo", "rl.steps=2", "rl.checkpoint_every=1",
                             "rl.grpo.num_generations=2")
    assert run_stage(config, "rl", store) == "done"
    rows = [json.loads(line) for line in store.read_bytes("rl/metrics.jsonl").decode().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert store.exists("rl/adapter/adapter_config.json")
    assert read_manifest(store, "rl")["provenance"]["algorithm"] == "grpo"


@pytest.mark.parametrize("instructions,overrides,message", [
    ([], [], "holds no instructions"),
    ([{"instruction": " "}], [], "instructions.jsonl:1:instruction: empty"),
    (INSTRUCTIONS, ["rl.reward.reward_model.scorer=sequence_classifier",
                    "rl.reward.reward_model.model=/nonexistent/rm"], "/nonexistent/rm"),
])
def test_bad_input_writes_nothing(tmp_path, tiny_model_dir, instructions, overrides, message):
    config, store = make_run(tmp_path, tiny_model_dir, *overrides, instructions=instructions)
    with pytest.raises(RefineError, match=message):
        run_stage(config, "rl", store)
    assert store.list("rl") == []


def test_a_directory_that_is_no_model_is_a_clear_error(tmp_path, tiny_model_dir):
    config, store = make_run(tmp_path, tiny_model_dir, "rl.reward.reward_model.scorer=sequence_classifier",
                             f"rl.reward.reward_model.model={tmp_path}")  # a directory without a model
    with pytest.raises(RefineError, match="has no config.json"):
        run_stage(config, "rl", store)
    assert store.list("rl") == []


@pytest.mark.parametrize("override,message", [
    ("rl.reward.helpfulness.weight=1", "'helpfulness' is not a key of rl.reward"),
    ("rl.reward.length.weight=heavy", "rl.reward.length.weight"),
])
def test_bad_reward_config(override, message):
    with pytest.raises(RefineError, match=message):
        load_config(None, [override])
