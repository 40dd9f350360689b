"""SuperNI and user-oriented evaluation sets: loading, errors, prompts, and the official metric's numbers."""

import json
from pathlib import Path

import pytest
from helpers import SHARED

from refine_af.errors import RefineError
from refine_af.evalsets import metrics, superni, user_oriented

DATA = SHARED / "data"
SAMPLE = DATA / "superni_test"


def write_task(root: Path, name: str, data, split=None):
    (root / "tasks").mkdir(parents=True, exist_ok=True)
    text = data if isinstance(data, str) else json.dumps(data)
    (root / "tasks" / f"{name}.json").write_text(text)
    (root / "splits" / "default").mkdir(parents=True, exist_ok=True)
    (root / "splits" / "default" / "test_tasks.txt").write_text("\n".join(split or [name]) + "\n")


def task_data(**override):
    data = {
        "Definition": ["Answer yes or no"],
        "Categories": ["Textual Entailment"],
        "Positive Examples": [{"input": "A dog runs", "output": "yes", "explanation": "because"}],
        "Instances": [{"id": f"i{k}", "input": f"q{k}", "output": ["yes"]} for k in range(5)],
    }
    data.update(override)
    return data


# -- metric: the official numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("The Cat.", "the cat", 1.0),  # case and punctuation are normalised
        ("  the   cat!  ", "The cat", 1.0),  # whitespace collapsed
        ("The Cat.", "cat", 0.0),  # SuperNI keeps articles (its normaliser comments the article step out)
        ("yes", "Yes.", 1.0),
        ("don't", "dont", 1.0),  # apostrophe is ASCII punctuation
        ("cats", "cat", 0.0),  # no stemming in exact match
        ("", "", 1.0),
    ],
)
def test_exact_match_normalisation(prediction, reference, expected):
    assert metrics.exact_match(prediction, [reference]) == expected


def test_exact_match_takes_any_reference():
    assert metrics.exact_match("Tokyo", ["Kyoto", "tokyo."]) == 1.0
    assert metrics.exact_match("Osaka", ["Kyoto", "Tokyo"]) == 0.0


@pytest.mark.parametrize(("prediction", "references", "expected"), [
    # stemmed: [the, cat, are, run, in, the, park] vs [a, cat, run, in, a, park]: LCS 4, P 4/7, R 4/6
    ("The cats are running in the park.", "A cat runs in a park", 2 * 4 / (7 + 6)),
    # the best reference counts, not the first nor the mean
    ("The cats are running in the park.", ["dogs sleep", "A cat runs in a park"], 2 * 4 / (7 + 6)),
    ("Paris", ["paris", "Paris, France"], 1.0),
    # SuperNI's tokenizer: lowercase, ASCII letters and digits only; nothing left scores 0, even when identical
    ("Yes.", ["YES"], 1.0),
    ("你好", ["你好"], 0.0),
    ("", ["something"], 0.0),
    # stemming on: running and run are one token, dogs and dog too
    ("running quickly", ["run quickly"], 1.0),
    ("the 3 dogs", ["3 dog"], 2 * 2 / (3 + 2)),
])
def test_rouge_l_by_hand(prediction, references, expected):
    assert metrics.rouge_l(prediction, references) == pytest.approx(expected)


def test_score_task_is_compute_metrics():
    preds = ["the cat", "no", "A cat runs"]
    refs = [["The cat."], ["yes"], ["a cat runs fast", "dog"]]
    got = metrics.score_task(preds, refs)
    assert got["exact_match"] == pytest.approx(100 / 3)  # only "the cat" = "The cat." after normalising
    assert got["rougeL"] == pytest.approx(100 * (1 + 0 + 6 / 7) / 3)  # 3 of 3 and 3 of 4 tokens: F = 6/7
    assert got["n"] == 3
    with pytest.raises(ValueError):
        metrics.score_task(["a"], [])


def test_score_tasks_groups_and_missing():
    tasks = superni.load_tasks()
    preds = {i.id: i.outputs[0] for t in tasks[:3] for i in t.instances}
    result = superni.score_tasks(tasks[:4], preds)
    assert [result["per_task"][t.name]["rougeL"] for t in tasks[:3]] == [100.0] * 3
    assert result["per_task"][tasks[3].name]["rougeL"] == 0.0  # missing predictions count as ""
    assert result["missing"] == len(tasks[3].instances)
    n = sum(len(t.instances) for t in tasks[:4])
    assert result["overall"]["n"] == n
    assert result["overall"]["exact_match"] == pytest.approx(100 * (n - len(tasks[3].instances)) / n)
    assert result["per_category"][tasks[0].category]["n_tasks"] == 1


def test_clean_prediction():
    assert superni.clean_prediction(" yes\n\nNow complete the following example -\nInput: x") == "yes"
    assert superni.clean_prediction("Tokyo.\nInput: next one") == "Tokyo."
    assert superni.clean_prediction("  plain answer  ") == "plain answer"


# -- prompts ----------------------------------------------------------------------------------------------------------


def test_task_prompt_zero_and_few_shot():
    task = superni.parse_task("t", task_data(), "t.json")
    inst = task.instances[0]
    assert superni.task_prompt(task, inst) == (
        "Definition: Answer yes or no.\n\nNow complete the following example -\nInput: q0.\nOutput:"
    )
    shot = superni.task_prompt(task, inst, num_pos_examples=2)  # only one example exists
    assert "Positive Example 1 -\nInput: A dog runs.\nOutput: yes.\n\nNow complete" in shot
    assert "Positive Example 2" not in shot
    with pytest.raises(ValueError):
        superni.task_prompt(task, inst, num_pos_examples=-1)


# -- loading ----------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/data/superni_test is absent")
def test_real_sample_loads():
    tasks = superni.load_tasks(SAMPLE)
    assert len(tasks) == 106
    official = set((DATA / "superni_test_tasks.txt").read_text().split())
    assert {t.name for t in tasks} <= official
    assert all(t.definition and t.instances for t in tasks)
    assert all(inst.outputs for t in tasks for inst in t.instances)
    assert len({i.id for t in tasks for i in t.instances}) == sum(len(t.instances) for t in tasks)
    few = superni.load_tasks(f"file://{SAMPLE}", max_tasks=3, max_instances=2)
    assert [t.name for t in few] == [t.name for t in tasks[:3]]
    assert [len(t.instances) for t in few] == [2, 2, 2]
    assert few[0].instances == tasks[0].instances[:2]  # first N, deterministically


def test_embedded_superni_set_is_valid():
    tasks = superni.load_tasks()
    assert len(tasks) == 12
    assert len({t.category for t in tasks}) == 12
    for t in tasks:
        assert t.name.startswith("task_refine_")
        assert len(t.positive_examples) == 2 and 6 <= len(t.instances) <= 8
        assert all(e.explanation for e in t.positive_examples)
        assert superni.task_prompt(t, t.instances[0]).endswith("Output:")
    # a perfect prediction scores 100 on both metrics
    preds = {i.id: i.outputs[-1] for t in tasks for i in t.instances}
    assert superni.score_tasks(tasks, preds)["overall"]["exact_match"] == 100.0


def test_embedded_user_oriented_set_is_valid():
    items = user_oriented.load_user_oriented()
    assert len(items) == 12
    assert all(i.motivation_app and i.instruction and i.instances for i in items)
    preds = {inst.id: inst.outputs[0] for i in items for inst in i.instances}
    assert user_oriented.score_user_oriented(items, preds)["overall"]["rougeL"] == 100.0
    no_input = next(i for i in items if not i.instances[0].input)
    assert (
        user_oriented.build_user_prompt(no_input, no_input.instances[0])
        == f"Instruction: {no_input.instruction}\n\nOutput:"
    )


def test_definition_string_and_optional_fields(tmp_path):
    write_task(tmp_path, "t1", {"Definition": "Say hi", "Instances": [{"input": "x", "output": "hi"}]})
    (task,) = superni.load_tasks(tmp_path)
    assert task.definition == "Say hi" and task.category == "Uncategorized"
    assert task.instances[0] == metrics.Instance("t1-0", "x", ("hi",))


def test_error_invalid_json_names_file_and_line(tmp_path):
    write_task(tmp_path, "bad", '{\n  "Definition": ["x"],\n  "Instances": [\n}')
    with pytest.raises(RefineError, match=r"tasks/bad\.json:4: not valid JSON \(Expecting value at column 1\)"):
        superni.load_tasks(tmp_path)


@pytest.mark.parametrize("field", ["Definition", "Instances"])
def test_error_missing_field(tmp_path, field):
    data = task_data()
    del data[field]
    write_task(tmp_path, "t", data)
    with pytest.raises(RefineError, match=rf"tasks/t\.json:{field}: missing"):
        superni.load_tasks(tmp_path)


def test_error_bad_instance_output(tmp_path):
    write_task(
        tmp_path, "t", task_data(Instances=[{"input": "a", "output": ["ok"]}, {"input": "b", "output": []}])
    )
    with pytest.raises(RefineError, match=r"tasks/t\.json:Instances\.1\.output: empty"):
        superni.load_tasks(tmp_path)


def test_error_split_names_missing_task(tmp_path):
    write_task(tmp_path, "t", task_data(), split=["t", "", "ghost"])
    with pytest.raises(RefineError, match=r"test_tasks\.txt line 3: task 'ghost' does not exist"):
        superni.load_tasks(tmp_path)


def test_error_empty_split_and_missing_root(tmp_path):
    write_task(tmp_path, "t", task_data(), split=["", "  "])
    with pytest.raises(RefineError, match="lists no tasks"):
        superni.load_tasks(tmp_path)
    with pytest.raises(RefineError, match=r"splits/default/test_tasks\.txt: file not found"):
        superni.load_tasks(tmp_path / "nowhere")


USER_OK = {
    "id": "u1",
    "motivation_app": "Mail",
    "instruction": "Be polite",
    "instances": [{"input": "x", "output": "y"}],
}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r":2: not valid JSON \(.* at column 2\)"),
        (json.dumps({**USER_OK, "id": "u2", "instruction": None}), r":2:instruction: must be a string, got null"),
        (
            json.dumps({k: v for k, v in USER_OK.items() if k != "instances"} | {"id": "u2"}),
            r":2:instances: missing",
        ),
        (
            json.dumps({**USER_OK, "id": "u2", "instances": [{"input": "x"}]}),
            r":2:instances\.0\.output: missing",
        ),
        (json.dumps(USER_OK), r":2:id: repeats 'u1' from line 1"),
    ],
)
def test_user_oriented_errors_name_line_and_field(tmp_path, line, message):
    path = tmp_path / "user.jsonl"
    path.write_text(json.dumps(USER_OK) + "\n" + line + "\n")
    with pytest.raises(RefineError, match=r"user\.jsonl" + message):
        user_oriented.load_user_oriented(path)


def test_user_oriented_from_store_key(tmp_path):
    from refine_af.store import open_store

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "u.jsonl").write_text(json.dumps(USER_OK) + "\n\n")
    (item,) = user_oriented.load_user_oriented("eval/u.jsonl", store=open_store(str(tmp_path), check=False))
    assert item.instances[0].id == "u1-0" and item.instances[0].outputs == ("y",)


def test_loads_from_s3_prefix(s3_env):
    bucket = s3_env()
    s3 = s3_env.client
    for path in superni.DEFAULT_SUPERNI_ROOT.rglob("*"):
        if path.is_file():
            key = path.relative_to(superni.DEFAULT_SUPERNI_ROOT).as_posix()
            s3.put_object(Bucket=bucket, Key=f"superni/{key}", Body=path.read_bytes())
    s3.put_object(Bucket=bucket, Key="user.jsonl", Body=user_oriented.DEFAULT_USER_ORIENTED.read_bytes())
    assert superni.load_tasks(f"s3://{bucket}/superni") == superni.load_tasks()
    assert user_oriented.load_user_oriented(f"s3://{bucket}/user.jsonl") == user_oriented.load_user_oriented()
    with pytest.raises(RefineError, match=rf"s3://{bucket}/nothing/splits/default/test_tasks\.txt: file not found"):
        superni.load_tasks(f"s3://{bucket}/nothing")
