import pytest
from helpers import REPO

from refine_af.config import RunConfig, dump_config, load_config
from refine_af.errors import RefineError


def test_defaults_run_on_a_laptop():
    cfg = load_config()
    assert cfg.model == "builtin" and cfg.seeds == "builtin"
    assert cfg.instructions.prompt_instructions == 8 and cfg.instructions.seed_in_prompt == 6
    assert cfg.instructions.rouge_threshold == 0.7


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: /models/x\ninstructions:\n  target: 10\n")
    cfg = load_config(path, ["instructions.target=40", "instructions.rouge_threshold=0.5", "run=s3://b/r"])
    assert (cfg.model, cfg.instructions.target, cfg.instructions.rouge_threshold, cfg.run) == (
        "/models/x", 40, 0.5, "s3://b/r")


def test_dump_round_trips():
    cfg = load_config(None, ["instructions.target=7"])
    assert load_config(None, text=dump_config(cfg)) == cfg


@pytest.mark.parametrize(("text", "message"), [
    ("instructions:\n  targett: 3\n", "instructions.targett: unknown key"),
    ("instructions:\n  target: many\n", "instructions.target: input should be a valid integer"),
    ("modle: x\n", "modle: unknown key"),
    ("instructions:\n  seed_in_prompt: 9\n", "instructions.seed_in_prompt"),
    ("- a\n- b\n", "expected a mapping"),
    ("a: [\n", "line"),
])
def test_bad_file_names_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RefineError) as err:
        load_config(path)
    assert message in str(err.value) and "bad.yaml" in str(err.value)


@pytest.mark.parametrize(("item", "message"), [
    ("instructions.nope=1", "'nope' is not a key of instructions"),
    ("nope.target=1", "'nope' is not a key of the config"),
    ("model.x=1", "'model' is a value, not a section"),
    ("instructions.target=-1", "instructions.target"),
    ("novalue", "expected key=value"),
])
def test_bad_overrides(item, message):
    with pytest.raises(RefineError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_config(None, [item])


def test_missing_config_file(tmp_path):
    with pytest.raises(RefineError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")


def test_every_section_forbids_extra_keys():
    for section in RunConfig.model_fields.values():
        model = section.annotation
        if isinstance(model, type) and hasattr(model, "model_config"):
            assert model.model_config.get("extra") == "forbid", model


def test_readme_cluster_config_is_a_valid_config(tmp_path):
    """The scale-up config README shows must load: docs that drift from the schema fail here."""
    import re

    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    assert blocks, "README has no yaml block"
    for i, block in enumerate(blocks):
        path = tmp_path / f"readme-{i}.yaml"
        path.write_text(block)
        load_config(str(path), [])
