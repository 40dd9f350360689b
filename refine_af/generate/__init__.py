"""Generation backends behind one small interface; stage code never asks which one it has.

    backend = make_backend(config)                       # vllm in GPU pods, transformers elsewhere
    outs = backend.generate(prompts, SamplingParams(temperature=0.7, max_new_tokens=128, stop=("\\n\\n",)))

A prompt is either raw text (sent as is) or a list of chat messages, rendered with the model's chat template; a
list ending in an assistant message is continued (the reply is pre-filled), otherwise a reply is started.
"""

from __future__ import annotations

from refine_af.generate.base import Backend, Completion, Prompt, SamplingParams, as_user_turn, truncate_at_stop
from refine_af.generate.factory import make_backend

__all__ = ["Backend", "Completion", "Prompt", "SamplingParams", "as_user_turn", "make_backend", "truncate_at_stop"]
