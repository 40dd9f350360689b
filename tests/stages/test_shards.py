"""Sharded stages: any shard count gives the same bytes, shards resume, and bad shard use is a clear error."""

from __future__ import annotations

import pytest
from helpers import instances_run as make_run

from refine_af.errors import RefineError
from refine_af.generate import SamplingParams
from refine_af.generate.hf import TransformersBackend
from refine_af.runner import read_manifest, run_stage
from refine_af.store import open_store


@pytest.mark.slow
def test_sampling_depends_on_the_item_seed_not_the_batch(tiny_model_dir, one_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = ["Task: add two numbers\nInput:", "Hi", "A much longer prompt about the weather in the mountains",
               "Name a colour.", "Translate 'cat' into French:"]
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=12, stop=("\n\n",))
    seeds = [11, 22, 33, 44, 55]

    def texts(batch_size, order):
        backend = TransformersBackend(model, AutoTokenizer.from_pretrained(tiny_model_dir), batch_size=batch_size)
        outs = backend.generate([prompts[i] for i in order], params, seeds=[seeds[i] for i in order])
        return {i: o.text for i, o in zip(order, outs, strict=True)}

    one_by_one = texts(1, range(5))
    assert texts(5, range(5)) == one_by_one
    assert texts(2, [4, 2, 0, 3, 1]) == one_by_one
    assert len(set(one_by_one.values())) > 1
    other = TransformersBackend(model, AutoTokenizer.from_pretrained(tiny_model_dir), batch_size=5)
    assert [o.text for o in other.generate(prompts, params, seeds=[s + 1 for s in seeds])] != list(one_by_one.values())


def _dataset(tmp_path, model, shards, *extra):
    config, store = make_run(tmp_path, model, f"instances.shards={shards}", "instances.per_instruction=2",
                             "generation.batch_size=4", *extra)
    assert run_stage(config, "instances-self-instruct", store) == "done"
    return config, store, {k: store.read_bytes(f"instances-self-instruct/{k}")
                           for k in ("dataset.jsonl", "alpaca.json")}


def test_any_shard_count_gives_the_same_dataset(tmp_path, builtin_dir):
    runs = {n: _dataset(tmp_path / f"n{n}", builtin_dir, n) for n in (1, 2, 3)}
    assert b'"output"' in runs[1][2]["dataset.jsonl"]
    assert runs[1][2] == runs[2][2] == runs[3][2]
    manifests = {n: read_manifest(store, "instances-self-instruct") for n, (_, store, _) in runs.items()}
    assert manifests[1]["fingerprint"] == manifests[2]["fingerprint"] == manifests[3]["fingerprint"]
    assert manifests[1]["counts"] == manifests[3]["counts"] and manifests[1]["files"] == manifests[3]["files"]
    store = runs[3][1]
    assert store.list("instances-self-instruct/shards") == [
        f"instances-self-instruct/shards/{i:03d}-of-003.{ext}" for i in range(3) for ext in ("json", "jsonl")]
    # the batch size is operational too: it changes nothing
    assert _dataset(tmp_path / "b1", builtin_dir, 2, "generation.batch_size=1")[2] == runs[1][2]


def test_shard_pods_then_merge(tmp_path, builtin_dir):
    config, store = make_run(tmp_path, builtin_dir, "instances.shards=2")
    with pytest.raises(RefineError, match=r"shard 0/2 has not finished .* --shard 0/2"):
        run_stage(config, "instances-self-instruct", store, merge_only=True)
    with pytest.raises(RefineError, match="instances.shards is 2"):
        run_stage(config, "instances-self-instruct", store, shard=(0, 3))
    with pytest.raises(RefineError, match="is not sharded"):
        run_stage(config, "sft-self-instruct", store, shard=(0, 2))
    assert run_stage(config, "instances-self-instruct", store, shard=(1, 2)) == "shard done"
    assert read_manifest(store, "instances-self-instruct") is None  # a shard is not the stage
    marker = store.read_bytes("instances-self-instruct/shards/001-of-002.json")
    assert run_stage(config, "instances-self-instruct", store, shard=(0, 2)) == "shard done"
    assert run_stage(config, "instances-self-instruct", store, shard=(1, 2)) == "shard done"  # kept, not redone
    assert store.read_bytes("instances-self-instruct/shards/001-of-002.json") == marker
    assert run_stage(config, "instances-self-instruct", store, merge_only=True) == "done"
    assert run_stage(config, "instances-self-instruct", store, shard=(0, 2)) == "skipped"  # the stage is done


@pytest.mark.slow
def test_evaluate_predictions_do_not_depend_on_shards(tmp_path, tiny_model_dir, one_thread):
    from refine_af.config import load_config

    out = {}
    for n in (1, 3):
        config = load_config(None, [f"run={tmp_path / str(n)}", f"model={tiny_model_dir}", "evaluate.max_tasks=3",
                                    "evaluate.max_instances_per_task=2", "evaluate.max_new_tokens=6",
                                    "evaluate.max_user_oriented=2", f"evaluate.shards={n}"])
        store = open_store(config.run)
        assert run_stage(config, "evaluate-base", store) == "done"
        out[n] = [store.read_bytes(f"evaluate-base/{k}") for k in ("predictions.jsonl", "scores.json")]
    assert out[1] == out[3]
