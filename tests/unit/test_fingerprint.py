"""What a stage's fingerprint covers: its config slice, minus the operational keys that never change its outputs."""

import pytest

from refine_af.config import load_config
from refine_af.pipeline import OPERATIONAL, stage
from refine_af.runner import fingerprint


def _fp(name: str, *overrides: str) -> str:
    return fingerprint(stage(name), load_config(None, list(overrides)), {"parent": "f" * 64})


@pytest.mark.parametrize("name, operational, result", [
    ("rl", "rl.checkpoint_every=3", "rl.learning_rate=0.5"),
    ("sft-refine-af", "sft.checkpoint_every=3", "sft.epochs=5"),
    ("evaluate-self-instruct", "evaluate.include_base=false", "evaluate.max_new_tokens=7"),
])
def test_operational_keys_leave_the_fingerprint_alone(name, operational, result):
    assert operational.split("=")[0] in OPERATIONAL
    assert _fp(name, operational) == _fp(name)
    assert _fp(name, result) != _fp(name)


def test_other_sections_and_generation_settings_do_not_count():
    assert _fp("sft-refine-af", "instances.per_instruction=5", "generation.batch_size=2") == _fp("sft-refine-af")
    assert _fp("instances-refine-af", "instances.per_instruction=5") != _fp("instances-refine-af")
