import json

import pytest

from refine_af.errors import RefineError
from refine_af.readers import load_seeds, parse_seeds

GOOD = {"id": "t1", "name": "n", "instruction": "Say hello to the user politely.",
        "instances": [{"input": "", "output": "Hello!"}], "is_classification": False}


def _jsonl(*rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def test_builtin_seeds_are_diverse_and_partly_classification():
    seeds = load_seeds("builtin")
    assert len(seeds) >= 60
    share = sum(s.is_classification for s in seeds) / len(seeds)
    assert 0.1 <= share <= 0.25
    assert len({s.instruction for s in seeds}) == len(seeds)


def test_self_instruct_seeds_drop_in(seed_file):
    seeds = load_seeds(str(seed_file))
    assert len(seeds) == 175
    assert sum(s.is_classification for s in seeds) > 0


@pytest.mark.parametrize(("rows", "message"), [
    ((GOOD, "{not json"), "seeds.jsonl:2: not valid JSON"),
    (({k: v for k, v in GOOD.items() if k != "instruction"},), "seeds.jsonl:1:instruction: missing"),
    (({**GOOD, "is_classification": "no"},), "seeds.jsonl:1:is_classification: must be a boolean, got a string"),
    (({**GOOD, "instances": [{"input": ""}]},), "seeds.jsonl:1:instances.0.output: missing"),
    (({**GOOD, "instruction": "  "},), "seeds.jsonl:1:instruction: empty"),
    (("[1, 2]",), "seeds.jsonl:1: expected a JSON object, got a list"),
    ((), "no seed tasks"),
])
def test_bad_seed_files_name_line_and_field(rows, message):
    with pytest.raises(RefineError) as err:
        parse_seeds(_jsonl(*rows), "seeds.jsonl")
    assert message in str(err.value)


def test_missing_seed_file(tmp_path):
    with pytest.raises(RefineError, match="cannot read"):
        load_seeds(str(tmp_path / "none.jsonl"))


def test_seeds_from_s3(s3_env):
    bucket = s3_env()
    s3_env.client.put_object(Bucket=bucket, Key="data/seeds.jsonl", Body=_jsonl(GOOD, {**GOOD, "id": "t2"}))
    assert [s.id for s in load_seeds(f"s3://{bucket}/data/seeds.jsonl")] == ["t1", "t2"]
    with pytest.raises(RefineError, match="no such object"):
        load_seeds(f"s3://{bucket}/data/absent.jsonl")
