"""The instruction format fine-tuning trains on (stage sft) and user-oriented evaluation prompts with.

prompts/instruction_prompt.txt, or instruction_prompt_input.txt when there is an input; the prompt ends with "Output:"
for the model to continue (the completion sft trains on starts with its separating space).
"""

from __future__ import annotations

from refine_af.prompts import template


def instruction_prompt(instruction: str, input: str = "") -> str:
    if input.strip():
        return template("instruction_prompt_input").substitute(instruction=instruction.strip(), input=input.strip())
    return template("instruction_prompt").substitute(instruction=instruction.strip())
