"""Versioned prompt templates (`string.Template`, `$name` placeholders). Their bytes are part of every
fingerprint, so editing a prompt reruns the stages that use it (each stage names its templates in
`pipeline.Stage.prompts`). A prompt ends where the model continues, so the file's final newline is not part of it."""

from functools import cache
from importlib import resources
from string import Template

DIR = resources.files(__name__)  # where the templates are read from; tests point it at a copy


@cache
def template(name: str) -> Template:
    return Template(DIR.joinpath(f"{name}.txt").read_text().rstrip("\n"))


def exists(name: str) -> bool:
    return DIR.joinpath(f"{name}.txt").is_file()
