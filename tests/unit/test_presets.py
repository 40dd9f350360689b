"""Presets: every packaged one loads and renders; the paper's backbones ask for the GPUs they need."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from refine_af.argo.compile import render
from refine_af.cli import app
from refine_af.config import RunConfig, dump_config, load_config, presets
from refine_af.errors import RefineError

PAPER = {"llama2-7b": ("hf:meta-llama/Llama-2-7b-hf", 1), "llama2-13b": ("hf:meta-llama/Llama-2-13b-hf", 2),
         "mistral-7b": ("hf:mistralai/Mistral-7B-v0.1", 1)}


def gpu_requests(template: dict) -> dict[str, str]:
    """GPU limit of every container template of a rendered WorkflowTemplate, by template name."""
    return {t["name"]: t["container"]["resources"]["limits"].get("nvidia.com/gpu", "0")
            for t in template["spec"]["templates"] if "container" in t}


def test_the_package_ships_the_paper_backbones_and_the_cpu_default():
    assert {"cpu", "llama2-7b", "llama2-13b", "mistral-7b"} <= set(presets())


@pytest.mark.parametrize("name", presets())
def test_every_preset_loads_and_renders(name):
    config = load_config(None, preset=name)
    template, workflow = render(config)
    assert template["kind"] == "WorkflowTemplate" and workflow["kind"] == "Workflow"
    requests = gpu_requests(template)
    if name in PAPER:
        model, gpus = PAPER[name]
        assert config.model == model and config.generation.tensor_parallel_size == gpus
        assert config.rl.reward.reward_model.scorer == "sequence_classifier"
        assert config.evaluate.max_tasks is None and config.evaluate.max_instances_per_task == 100
        assert config.instructions.target == 15000
        generate = {k: v for k, v in requests.items() if k.startswith(("instances", "evaluate", "instructions"))
                    and not k.endswith("-merge") and v != "0"}
        train = {k: v for k, v in requests.items() if k.startswith(("rl", "sft"))}
        assert generate and set(generate.values()) == {str(gpus)}, requests
        assert train and set(train.values()) == {str(gpus)}, requests
    assert requests.get("compare", "0") == "0" and requests.get("init", "0") == "0"  # cpu pods ask for none


def test_the_cpu_preset_is_the_default():
    assert dump_config(load_config(None, preset="cpu")) == dump_config(RunConfig())


def test_a_config_file_and_set_apply_over_a_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("generation: {max_num_seqs: 64}\ninstructions: {target: 100}\n")
    config = load_config(path, ["rl.steps=3"], preset="llama2-13b")
    assert (config.generation.max_num_seqs, config.generation.tensor_parallel_size) == (64, 2)  # merged, not replaced
    assert (config.instructions.target, config.instructions.prompts_per_round, config.rl.steps) == (100, 512, 3)
    with pytest.raises(RefineError, match=r"--preset llama3: no such preset \(known: cpu, .*llama2-13b"):
        load_config(None, preset="llama3")
    path.write_text("generation: {tensor_parallel_size: 4}\n")
    with pytest.raises(RefineError, match=r"llama2-13b.yaml \+ .*mine.yaml.*at least 4"):
        load_config(path, preset="llama2-13b")


def test_the_commands_take_a_preset(tmp_path):
    cli = CliRunner()
    out = cli.invoke(app, ["render", "--preset", "llama2-13b", "--template-only"])
    assert out.exit_code == 0, out.output
    assert "nvidia.com/gpu: '2'" in out.output and "Llama-2-13b-hf" not in out.output  # the config is an argument
    listed = cli.invoke(app, ["presets"])
    assert listed.exit_code == 0 and "llama2-13b" in listed.output and "pods of 2 x 80 GB" in listed.output
    bad = cli.invoke(app, ["render", "--preset", "nope"])
    assert bad.exit_code == 2 and "no such preset" in bad.output
