"""The whole pipeline through the real CLI with the builtin model, at toy sizes: every stage runs in graph order, the
report and its headline come out, and a second run skips everything. Minutes on 2 cores, so marked slow."""

import json

import pytest
from helpers import cli

pytestmark = pytest.mark.slow

TOY = ["instructions.target=4", "instructions.prompts_per_round=2", "instructions.max_new_tokens=64",
       "rl.steps=2", "rl.batch_size=2", "rl.max_new_tokens=24", "rl.checkpoint_every=1",
       "instances.max_new_tokens=40", "sft.epochs=1", "sft.batch_size=4",
       "evaluate.max_tasks=3", "evaluate.max_instances_per_task=1", "evaluate.max_user_oriented=2",
       "evaluate.max_new_tokens=8", "compare.n_boot=200"]


def test_every_stage_then_everything_skipped(tmp_path, builtin_dir):
    run = tmp_path / "run"
    args = ["run", "--run", str(run)] + [a for item in TOY for a in ("--set", item)]
    first = cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    stages = ["instructions", "rl", "instances-refine-af", "sft-refine-af", "evaluate-refine-af",
              "instances-self-instruct", "sft-self-instruct", "evaluate-self-instruct", "evaluate-base", "compare"]
    assert all((run / s / "manifest.json").is_file() for s in stages)
    assert all(f"{s} done" in first.stdout for s in stages), first.stdout

    report = json.loads((run / "compare" / "report.json").read_text())
    assert report["arms"] == ["refine-af", "self-instruct"] and report["base"] == "base"
    assert report["n_tasks"] == 3 and sum(report["wins"].values()) == 3
    assert "SuperNI tasks" in first.stdout and f"report: {run}/compare/report.md" in first.stdout
    assert (run / "compare" / "report.png").read_bytes()[:4] == b"\x89PNG"

    # the refine-af arm's dataset came from the RL adapter, the self-instruct arm's from the base model
    manifest = json.loads((run / "instances-refine-af" / "manifest.json").read_text())
    assert manifest["provenance"]["adapter"].endswith("rl/adapter")
    assert json.loads((run / "instances-self-instruct" / "manifest.json").read_text())["provenance"]["adapter"] is None

    again = cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(f"{s} skipped" in again.stdout for s in stages), again.stdout
    assert "SuperNI tasks" in again.stdout

    show = cli("show", "--run", str(run))
    assert show.returncode == 0 and "rl" in show.stdout and "reward_last5" in show.stdout
