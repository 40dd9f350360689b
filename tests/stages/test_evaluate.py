"""Stage evaluate-<arm>: a tiny Llama with fake SFT adapters, real prompts and scoring; bad input writes nothing."""

import json

import pytest
from helpers import finished_stage

from refine_af.config import load_config
from refine_af.errors import RefineError
from refine_af.evalsets import metrics, superni, user_oriented
from refine_af.generate import Completion
from refine_af.runner import read_manifest, run_stage
from refine_af.store import FileStore, read_json, read_jsonl, write_json

ARMS = ("refine-af", "self-instruct")
SMALL = ["evaluate.max_tasks=3", "evaluate.max_instances_per_task=2", "evaluate.max_new_tokens=8",
         "evaluate.max_user_oriented=2", "generation.device=cpu"]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_model_dir):
    """A LoRA adapter per arm on the tiny model, with random (non-zero) B matrices so that it changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = {}
    for i, arm in enumerate(ARMS):
        torch.manual_seed(i)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                               LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "up_proj"]))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 1.0)
        path = tmp_path_factory.mktemp(f"adapter-{arm}")
        model.save_pretrained(path)
        out[arm] = path
    return out


def _run(tmp_path, adapters=None, arms=ARMS):
    """A run store where stage sft-<arm> is done: its manifest and (when given) its adapter."""
    store = FileStore(str(tmp_path / "run"))
    for arm in arms:
        files = {f"adapter/{p.name}": p.read_bytes() for p in adapters[arm].iterdir()} if adapters else {}
        finished_stage(store, f"sft-{arm}", files, fingerprint=f"fake-{arm}")
    return store


def _config(store, model, *extra):
    return load_config(None, [f"model={model}", f"run={store.root}", *SMALL, *extra])


def _check_recomputable(store, arm):
    """Every number in scores.json follows from predictions.jsonl with superni's per-instance metrics."""
    rows = read_jsonl(store, f"evaluate-{arm}/predictions.jsonl")
    scores = read_json(store, f"evaluate-{arm}/scores.json")
    for r in rows:
        assert r["rougeL"] == pytest.approx(metrics.rouge_l(r["prediction"], r["references"]))
        assert r["exact_match"] == metrics.exact_match(r["prediction"], r["references"])
        assert r["prediction"] == superni.clean_prediction(r["generation"])
    for set_name in ("superni", "user_oriented"):
        mine = [r for r in rows if r["set"] == set_name]
        if scores[set_name] is None:
            assert not mine
            continue
        for task, s in scores[set_name]["per_task"].items():
            vals = [r["rougeL"] for r in mine if r["task"] == task]
            assert s["n"] == len(vals) and s["rougeL"] == pytest.approx(100 * sum(vals) / len(vals))
        overall = scores[set_name]["overall"]
        assert overall["n"] == len(mine)
        assert overall["rougeL"] == pytest.approx(100 * sum(r["rougeL"] for r in mine) / len(mine))
        assert overall["exact_match"] == pytest.approx(100 * sum(r["exact_match"] for r in mine) / len(mine))
    return rows, scores


@pytest.mark.slow
def test_arms_with_adapters_and_base(tmp_path, tiny_model_dir, adapters):
    store = _run(tmp_path, adapters)
    config = _config(store, tiny_model_dir)
    generations = {}
    for arm in (*ARMS, "base"):
        assert run_stage(config, f"evaluate-{arm}", store) == "done"
        rows, scores = _check_recomputable(store, arm)
        assert [r["set"] for r in rows] == ["superni"] * 6 + ["user_oriented"] * len(rows[6:])
        assert len({r["task"] for r in rows[:6]}) == 3 and len({r["task"] for r in rows[6:]}) == 2
        assert scores["arm"] == arm and scores["model"] == str(tiny_model_dir)
        assert scores["adapter"] == (None if arm == "base" else f"{store.uri}/sft-{arm}/adapter")
        assert scores["evaluate"]["max_tasks"] == 3 and scores["superni"]["missing"] == 0
        manifest = read_manifest(store, f"evaluate-{arm}")
        assert manifest["counts"] == {"tasks": 3, "instances": 6, "user_oriented": len(rows) - 6}
        assert manifest["metrics"]["superni_rougeL"] == round(scores["superni"]["overall"]["rougeL"], 2)
        assert set(manifest["metrics"]) == {"superni_rougeL", "superni_exact_match", "user_oriented_rougeL"}
        assert set(manifest["files"]) == {"predictions.jsonl", "scores.json"}
        generations[arm] = [r["generation"] for r in rows]
    # the adapters are applied: each arm answers differently from the untuned model
    assert generations["refine-af"] != generations["base"] and generations["self-instruct"] != generations["base"]
    assert run_stage(config, "evaluate-refine-af", store) == "skipped"


class EchoBackend:
    """Answers each prompt with its first reference, then runs on into the next prompt block; records the calls."""

    def __init__(self, answers):
        self.answers, self.calls, self.tokenizer = answers, [], None

    def generate(self, prompts, params, desc=None, seeds=None):
        self.calls.append((list(prompts), params, desc))
        return [Completion(text=f" {self.answers[p]}\n\nInput: more", finish_reason="stop") for p in prompts]


def test_greedy_raw_prompts_one_call_per_shard(tmp_path, tiny_model_dir):
    store = _run(tmp_path, arms=())
    tasks = superni.load_tasks(max_tasks=3, max_instances=2)
    users = user_oriented.load_user_oriented(max_items=2)
    answers = {superni.task_prompt(t, i): i.outputs[0] for t in tasks for i in t.instances}
    answers |= {user_oriented.build_user_prompt(u, i): i.outputs[0] for u in users for i in u.instances}
    backend = EchoBackend(answers)
    assert run_stage(_config(store, tiny_model_dir), "evaluate-base", store, backend=backend) == "done"

    assert len(backend.calls) == 1  # one batched call for both sets (one shard)
    prompts, params, desc = backend.calls[0]
    sn_prompts, user_prompts = prompts[:6], prompts[6:]
    assert params.temperature == 0 and params.max_new_tokens == 8
    assert params.stop == superni.GENERATION_STOP and "\n\n" not in params.stop
    assert desc == "evaluate base" and user_prompts
    assert all(isinstance(p, str) and p.startswith("Definition: ") and p.endswith("\nOutput:") for p in sn_prompts)
    assert all(p.startswith("Instruction: ") and p.endswith("\n\nOutput:") for p in user_prompts)

    rows, scores = _check_recomputable(store, "base")
    assert all(r["prediction"] == r["references"][0] for r in rows)  # cut at the blank line, stripped
    assert scores["superni"]["overall"] == {"exact_match": 100.0, "rougeL": 100.0, "n": 6}
    assert scores["user_oriented"]["overall"]["rougeL"] == 100.0
    assert {t: s["category"] for t, s in scores["superni"]["per_task"].items()} == {t.name: t.category for t in tasks}


def _superni_dir(tmp_path, tasks: dict[str, str], split: list[str]):
    root = tmp_path / "superni"
    (root / "tasks").mkdir(parents=True)
    (root / "splits" / "default").mkdir(parents=True)
    for name, text in tasks.items():
        (root / "tasks" / f"{name}.json").write_text(text)
    (root / "splits" / "default" / "test_tasks.txt").write_text("\n".join(split) + "\n")
    return root


GOOD_TASK = json.dumps({"Definition": ["Answer yes or no."], "Categories": ["Yes/No"],
                        "Instances": [{"id": "g-1", "input": "Is water wet?", "output": ["yes"]}]})


@pytest.mark.parametrize("bad, split, fragments", [
    ('{"Definition": ["x"], "Instances": [', ["good", "bad"], ["bad.json:1: not valid JSON"]),
    (json.dumps({"Instances": [{"input": "a", "output": ["b"]}]}), ["good", "bad"], ["bad.json:Definition: missing"]),
    (json.dumps({"Definition": "Do it."}), ["good", "bad"], ["bad.json:Instances: missing"]),
    (None, ["good", "absent"], ["test_tasks.txt line 2", "'absent' does not exist"]),
], ids=["invalid-json", "no-definition", "no-instances", "missing-task"])
def test_bad_superni_writes_nothing(tmp_path, tiny_model_dir, bad, split, fragments):
    tasks = {"good": GOOD_TASK} | ({"bad": bad} if bad else {})
    root = _superni_dir(tmp_path, tasks, split)
    store = _run(tmp_path, arms=())
    with pytest.raises(RefineError) as err:
        run_stage(_config(store, tiny_model_dir, f"evaluate.superni={root}"), "evaluate-base", store)
    message = str(err.value)
    assert "\n" not in message and all(f in message for f in fragments), message
    assert store.list("evaluate-base") == []


def test_bad_locations_and_user_file_write_nothing(tmp_path, tiny_model_dir):
    store = _run(tmp_path, arms=())
    with pytest.raises(RefineError, match="evaluate.superni: .*nowhere is not a directory"):
        run_stage(_config(store, tiny_model_dir, f"evaluate.superni={tmp_path / 'nowhere'}"), "evaluate-base", store)
    user = tmp_path / "user.jsonl"
    user.write_text('{"id": "u1", "instruction": "Say hi.", "instances": [{"input": ""}]}\n')
    with pytest.raises(RefineError, match=r"user.jsonl:1:instances\.0\.output: missing"):
        run_stage(_config(store, tiny_model_dir, f"evaluate.user_oriented={user}"), "evaluate-base", store)
    assert store.list("evaluate-base") == []


def test_missing_adapter_says_run_sft(tmp_path, tiny_model_dir, adapters):
    store = _run(tmp_path, arms=("self-instruct",))  # sft "done" but its adapter is gone
    with pytest.raises(RefineError, match="sft-self-instruct/adapter/: run stage sft-self-instruct first"):
        run_stage(_config(store, tiny_model_dir), "evaluate-self-instruct", store)
    assert store.list("evaluate-self-instruct") == []
    # a stale claim from an earlier attempt is left alone too
    write_json(store, "evaluate-self-instruct/started.json", {"fingerprint": "old"})
    with pytest.raises(RefineError):
        run_stage(_config(store, tiny_model_dir), "evaluate-self-instruct", store)
    assert store.list("evaluate-self-instruct") == ["evaluate-self-instruct/started.json"]


def test_real_superni_sample(tmp_path, shared, tiny_model_dir):
    root = shared / "data" / "superni_test"
    store = _run(tmp_path, arms=())
    config = _config(store, tiny_model_dir, f"evaluate.superni={root}", "evaluate.max_tasks=2",
                     "evaluate.user_oriented=null", "evaluate.num_pos_examples=1")
    assert run_stage(config, "evaluate-base", store) == "done"
    rows, scores = _check_recomputable(store, "base")
    names = [line.strip() for line in (root / "splits" / "default" / "test_tasks.txt").read_text().splitlines()]
    assert list(scores["superni"]["per_task"]) == names[:2]
    assert scores["user_oriented"] is None and {r["set"] for r in rows} == {"superni"}
    assert all(s["category"] != "Uncategorized" for s in scores["superni"]["per_task"].values())
    assert len(rows) == sum(s["n"] for s in scores["superni"]["per_task"].values()) == 4
    manifest = read_manifest(store, "evaluate-base")
    assert "user_oriented_rougeL" not in manifest["metrics"] and manifest["counts"]["user_oriented"] == 0
    assert manifest["provenance"]["superni"] == f"file://{root}"

