"""The stage graph: what it declares is consistent, `validate` catches each kind of mistake, stages stay apart."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from refine_af import pipeline
from refine_af.errors import RefineError
from refine_af.pipeline import STAGES, Output, Stage, input_key, stage, validate


def test_the_graph_validates_and_parents_follow_from_inputs():
    validate()
    assert stage("instances-refine-af").parents == ("instructions", "rl")
    assert stage("instances-self-instruct").parents == ("instructions",)
    assert stage("compare").parents == ("evaluate-refine-af", "evaluate-self-instruct", "evaluate-base",
                                        "instances-refine-af", "instances-self-instruct")  # their decontamination
    assert input_key(stage("instances-refine-af"), "adapter") == "rl/adapter"  # a directory: no trailing slash
    assert input_key(stage("sft-self-instruct"), "dataset") == "instances-self-instruct/dataset.jsonl"
    assert {s.name for s in STAGES if s.shards} == {"instances-refine-af", "instances-self-instruct",
                                                     "evaluate-refine-af", "evaluate-self-instruct", "evaluate-base"}
    assert {s.resources.role for s in STAGES} == {"generate", "train", "cpu"}


def _broken(**change) -> tuple[Stage, ...]:
    good = Stage("a", "refine_af.stages.compare:run", outputs={"x": Output("x.json"), "d": Output("d/")})
    child = Stage("b", "refine_af.stages.compare:run", inputs={"x": "a/x"}, config=("compare",))
    return (good, dataclasses.replace(child, **change))


@pytest.mark.parametrize("change,message", [
    ({"inputs": {"x": "zz/x"}}, "comes from 'zz', which is not declared before it"),
    ({"inputs": {"x": "a/nope"}}, "stage 'a' has no output 'nope'"),
    ({"config": ("compare.tie_tolerence",)}, "'compare.tie_tolerence' is not a RunConfig key"),
    ({"when": "compare.n_boot"}, "must be a bool"),
    ({"shards": "rl.steps"}, "must be operational"),
    ({"prompts": ("no_such_prompt",)}, "no_such_prompt.txt does not exist"),
    ({"metrics": {"bad name": "counts.x"}}, "not a valid Argo parameter name"),
    ({"outputs": {"d": Output("d/")}, "links": ("d",)}, "must name a file output"),
    ({"fn": "refine_af.stages.nonexistent:run"}, "not an importable module:function"),
    ({"name": "B_stage"}, "not a valid Kubernetes name"),
    ({"resources": pipeline.Resources(role="generate", gpus=0)}, "needs gpus >= 1"),
])
def test_validate_names_each_mistake(change, message):
    with pytest.raises(RefineError, match=message):
        validate(_broken(**change))


def test_every_written_path_belongs_to_one_output():
    for s in STAGES:
        paths = [o.path for o in s.outputs.values()]
        assert len(set(paths)) == len(paths), s.name
        assert all(n in s.outputs for n in s.links), s.name


def test_stages_never_import_each_other_nor_spell_other_stages_paths():
    """Stages talk only through the store, and learn where their inputs are from the graph."""
    names = {s.name for s in STAGES}
    for path in (Path(pipeline.__file__).parent / "stages").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("refine_af.stages"), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                literal = node.value
                assert not any(literal.startswith(f"{n}/") for n in names), f"{path.name} spells {literal!r}"
            if isinstance(node, ast.JoinedStr):  # f"sft-{arm}/adapter" and the like
                head = node.values[0]
                if isinstance(head, ast.Constant):
                    assert str(head.value).rstrip("-") not in {"sft", "instances", "evaluate", "rl"}, path.name
