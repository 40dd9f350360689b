"""The instance-generation format shared by the rl and instances stages.

The policy reads an instruction and writes one instance. Classification tasks are written output-first (a label,
then an input for it) so that labels stay balanced and inputs fit them, as Self-Instruct does; other tasks
input-first. Both templates are few-shot prompt files that end on the first field, so the completion is
`<field>\\n<Other field>: <text>`, parsed back here. Unparseable completions become None, which the stages count.
"""

from __future__ import annotations

import re

from refine_af.prompts import template

NO_INPUT = "<none>"
_INPUT_FIRST = re.compile(r"^(?P<input>.*?)\n+\s*Output:(?P<output>.*?)(?:\n\s*\n|\n\s*Task:|$)", re.S)
_OUTPUT_FIRST = re.compile(r"^(?P<output>.*?)\n+\s*Input:(?P<input>.*?)(?:\n\s*\n|\n\s*Task:|$)", re.S)
STOP = ("\n\nTask:", "\nTask:", "\n\n\n")


def build(instruction: str, is_classification: bool) -> str:
    name = "instance_output_first" if is_classification else "instance_input_first"
    return template(name).substitute(instruction=instruction)


def parse(completion: str, is_classification: bool) -> tuple[str, str] | None:
    """(input, output) from a completion of `build(...)`; None when the second field is missing or empty."""
    match = (_OUTPUT_FIRST if is_classification else _INPUT_FIRST).match(completion.strip(" ") + "\n")
    if not match:
        return None
    text_input, output = match.group("input").strip(), match.group("output").strip()
    if text_input == NO_INPUT:
        text_input = ""
    return (text_input, output) if output else None
