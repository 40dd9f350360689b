"""refine_af.schemas: one error line per bad file (file, line, field path), and the models the stages hand on."""

import json

import pytest

from refine_af import schemas
from refine_af.errors import RefineError
from refine_af.readers import read_dataset
from refine_af.runner import read_manifest
from refine_af.store import FileStore, write_json


def _lines(*rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def test_jsonl_skips_blank_lines_and_a_byte_order_mark():
    data = b"\xef\xbb\xbf" + _lines({"instruction": "a", "input": "", "output": "b"}, "", " ",
                                     {"instruction": "c", "input": "x", "output": "d", "arm": "kept out"})
    rows = list(schemas.parse_jsonl(data, "d.jsonl", schemas.DatasetRow))
    assert [n for n, _ in rows] == [1, 4]
    assert rows[1][1].model_dump() == {"instruction": "c", "input": "x", "output": "d"}


@pytest.mark.parametrize("data, message", [
    (b"\xff\n", "d.jsonl: not UTF-8 text (byte 0)"),
    (_lines({"instruction": "a", "input": 3, "output": "b"}), "d.jsonl:1:input: must be a string, got a number"),
    (_lines({"instruction": "a"}), "d.jsonl:1:input: missing (and 1 more)"),
    (_lines({"instruction": "a", "input": "", "output": " "}), "d.jsonl:1:output: empty"),
    (_lines("null"), "d.jsonl:1: expected a JSON object, got null"),
])
def test_one_line_naming_file_line_and_field(data, message):
    with pytest.raises(RefineError) as err:
        list(schemas.parse_jsonl(data, "d.jsonl", schemas.DatasetRow))
    assert str(err.value) == message


def test_nested_paths_and_seed_ids():
    bad = {"Definition": ["Say it."], "Instances": [{"input": "a", "output": "b"}, {"input": "c", "output": [1]}]}
    with pytest.raises(RefineError, match=r"^t\.json:Instances\.1\.output\.0: must be a string, got a number$"):
        schemas.validate(schemas.SuperNITaskFile, bad, "t.json")
    task = schemas.validate(schemas.SeedTask, {"id": 7, "name": "n", "instruction": " Hi. ", "instances": [],
                                               "is_classification": False}, "s")
    assert (task.id, task.instruction) == ("7", "Hi.")


def test_dataset_reader_names_the_row(tmp_path):
    store = FileStore(str(tmp_path))
    store.write_bytes("instances-x/dataset.jsonl", _lines({"instruction": "a", "input": "", "output": "b"},
                                                          {"instruction": "a", "input": None, "output": "b"}))
    with pytest.raises(RefineError, match=r"instances-x/dataset\.jsonl:2:input: must be a string, got null$"):
        read_dataset(store, "instances-x/dataset.jsonl")


def test_manifests_are_checked_when_read(tmp_path):
    store = FileStore(str(tmp_path))
    assert read_manifest(store, "rl") is None
    write_json(store, "rl/manifest.json", {"stage": "rl", "fingerprint": "f", "files": {"a": {"sha256": "x"}}})
    with pytest.raises(RefineError, match=r"rl/manifest\.json:files\.a\.bytes: missing$"):
        read_manifest(store, "rl")
    store.write_bytes("rl/manifest.json", b'{"fingerprint": ')
    with pytest.raises(RefineError, match=r"rl/manifest\.json:1: not valid JSON"):
        read_manifest(store, "rl")
    write_json(store, "rl/manifest.json", {"fingerprint": "f", "counts": {"steps": 2}})  # the rest has defaults
    assert read_manifest(store, "rl") == {"fingerprint": "f", "counts": {"steps": 2}}  # as written


def test_task_scores_are_finite_numbers():
    assert schemas.TASK_SCORES.validate_python({"t": 1, "u": 2.5}) == {"t": 1.0, "u": 2.5}
    for bad in ({"t": float("nan")}, {"t": "1"}, {"t": True}):
        with pytest.raises(ValueError):
            schemas.TASK_SCORES.validate_python(bad)


def test_compare_reports_fit_the_report_schema_and_a_bad_one_is_named(tmp_path):
    from refine_af.compare import compare_arms

    report = compare_arms({"a": {"t1": 50.0, "t2": 10.0}, "b": {"t1": 40.0, "t2": 20.0}, "base": {"t1": 5.0}},
                          "a", "b", base="base", n_boot=50)
    checked = schemas.ReportFile.model_validate(report)
    assert checked.wins == {"a": 1, "b": 1, "tie": 0} and checked.means["base"].n == 1
    report.pop("sign_test")
    report["means"]["a"]["mean"] = "high"
    with pytest.raises(RefineError, match=r"^r.json:sign_test: missing \(and 1 more\)$"):
        schemas.parse_json(json.dumps(report).encode(), "r.json", schemas.ReportFile)
