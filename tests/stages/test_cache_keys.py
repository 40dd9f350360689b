"""Cache keys that tell the truth: what a stage's fingerprint covers beyond its config slice (prompt files, code,
the package version), and what stays out (logging-only settings)."""

from __future__ import annotations

import shutil
from importlib.metadata import version
from pathlib import Path

import pytest

import refine_af
from refine_af import prompts, runner
from refine_af.config import load_config
from refine_af.generate import Completion
from refine_af.pipeline import stage
from refine_af.runner import code_digest, fingerprint, run_stage
from refine_af.store import FileStore

SMALL = ["evaluate.max_tasks=2", "evaluate.max_instances_per_task=1", "evaluate.max_user_oriented=1"]


def _fp(name: str, *overrides: str) -> str:
    return fingerprint(stage(name), load_config(None, list(overrides)), {"parent": "f" * 64})


@pytest.fixture
def prompt_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the prompt templates the fingerprints and prompts read from instead of the package's."""
    copy = tmp_path / "prompts"
    shutil.copytree(Path(prompts.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(prompts, "DIR", copy)
    prompts.template.cache_clear()
    yield copy
    prompts.template.cache_clear()


@pytest.fixture
def source_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the refine_af source tree the code digest reads instead of the package's."""
    copy = tmp_path / "refine_af"
    shutil.copytree(runner.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "data"))
    monkeypatch.setattr(runner, "PACKAGE", copy)
    return copy


class AnyBackend:
    """Answers every prompt with "yes"; counts the calls."""

    tokenizer = None

    def __init__(self):
        self.calls = 0

    def generate(self, prompts, params, desc=None, seeds=None):
        self.calls += 1
        return [Completion(text=" yes", finish_reason="stop") for _ in prompts]


def test_editing_the_superni_prompt_reruns_a_finished_evaluate_stage(tmp_path, prompt_copy):
    store = FileStore(str(tmp_path / "run"))
    config = load_config(None, [f"run={store.root}", *SMALL])
    backend = AnyBackend()
    before, instances = _fp("evaluate-base"), _fp("instances-refine-af")
    assert run_stage(config, "evaluate-base", store, backend=backend) == "done"
    assert run_stage(config, "evaluate-base", store, backend=backend) == "skipped"

    path = prompt_copy / "superni.txt"
    path.write_text(path.read_text().replace("Definition:", "Task definition:"))
    prompts.template.cache_clear()
    assert _fp("evaluate-base") != before
    assert _fp("instances-refine-af") == instances  # it uses no SuperNI prompt
    assert run_stage(config, "evaluate-base", store, backend=backend) == "done"
    assert backend.calls == 2
    assert store.read_bytes("evaluate-base/predictions.jsonl")  # answered again, with the new prompt


def test_the_sft_format_is_a_prompt_file_in_sft_and_evaluate(prompt_copy):
    from refine_af.instruction_format import instruction_prompt

    before = {n: _fp(n) for n in ("sft-refine-af", "evaluate-refine-af", "rl")}
    (prompt_copy / "instruction_prompt_input.txt").write_text("Do: $instruction\n\nWith: $input\n\nAnswer:\n")
    prompts.template.cache_clear()
    assert instruction_prompt("Add.", "2, 3") == "Do: Add.\n\nWith: 2, 3\n\nAnswer:"
    after = {n: _fp(n) for n in before}
    assert after["sft-refine-af"] != before["sft-refine-af"]
    assert after["evaluate-refine-af"] != before["evaluate-refine-af"]
    assert after["rl"] == before["rl"]


def test_a_changed_module_the_stage_imports_changes_its_fingerprint(source_copy):
    code_digest.cache_clear()
    before = {n: _fp(n) for n in ("sft-refine-af", "compare", "evaluate-base")}
    shared = source_copy / "instruction_format.py"  # imported by sft and evaluate, not by compare
    shared.write_text(shared.read_text() + "\n# a comment is a change too\n")
    code_digest.cache_clear()
    after = {n: _fp(n) for n in before}
    assert after["sft-refine-af"] != before["sft-refine-af"]
    assert after["evaluate-base"] != before["evaluate-base"]
    assert after["compare"] == before["compare"]
    code_digest.cache_clear()


@pytest.mark.slow
def test_an_unrelated_module_leaves_every_fingerprint_alone(source_copy):
    code_digest.cache_clear()
    names = ["instructions", "rl", "instances-refine-af", "sft-refine-af", "evaluate-base", "compare"]
    before = {n: _fp(n) for n in names}
    for unrelated in ("cli.py", "argo/compile.py"):  # no stage imports the CLI or the Argo compiler
        path = source_copy / unrelated
        path.write_text(path.read_text() + "\n# edited\n")
    code_digest.cache_clear()
    assert {n: _fp(n) for n in names} == before
    code_digest.cache_clear()


def test_the_digest_follows_lazy_imports_and_parent_packages():
    code_digest.cache_clear()
    root = runner.PACKAGE
    graph = runner._imports(root, "refine_af.stages.rl", root / "stages" / "rl.py")
    assert {"refine_af.ppo", "refine_af.grpo", "refine_af.runner"} <= graph  # imported inside functions
    assert "refine_af.generate" in runner._imports(root, "refine_af.ppo", root / "ppo.py")  # via generate.hf
    assert "refine_af.cli" not in graph


def test_logging_settings_stay_out_of_the_rl_fingerprint_and_output_settings_do_not():
    base = _fp("rl")
    assert _fp("rl", "rl.warn_kl=1.5", "rl.warn_entropy=0.9", "rl.warn_length_ratio=1.5") == base
    for changed in ("rl.learning_rate=0.01", "rl.steps=3", "rl.temperature=0.7", "seed=7"):
        assert _fp("rl", changed) != base, changed


def test_the_version_is_the_distributions():
    assert refine_af.__version__ == version("refine-af")
