"""Choosing and building a backend from the run config."""

from __future__ import annotations

import importlib.util
from typing import Any

from refine_af.generate.base import Backend


def make_backend(config: Any, model: str | None = None, adapter: str | None = None, kind: str | None = None
                 ) -> Backend:
    """The configured backend for `model` (default: the run's model), optionally with a LoRA adapter directory.

    `kind` overrides `generation.backend`: "transformers" for a caller that needs the model object in-process (its
    `.model`, e.g. to switch the adapter off).
    """
    from refine_af import models

    gen = config.generation
    ref = model or config.model
    device = models.pick_device(gen.device)
    kind = kind or gen.backend
    if kind == "auto":
        kind = "vllm" if device.startswith("cuda") and importlib.util.find_spec("vllm") else "transformers"
    if kind == "vllm":
        from refine_af.generate.vllm_backend import VLLMBackend

        path = models.resolve(ref, config.cache_dir, config.s3)
        return VLLMBackend(str(path), adapter=adapter, dtype=gen.dtype, memory=gen.gpu_memory_utilization)
    from refine_af.generate.hf import TransformersBackend

    model_obj, tokenizer = models.load_causal_lm(
        ref, cache_dir=config.cache_dir, s3=config.s3, device=device, dtype=gen.dtype
    )
    if adapter:
        from peft import PeftModel

        model_obj = PeftModel.from_pretrained(model_obj, adapter).eval()
    return TransformersBackend(model_obj, tokenizer, batch_size=gen.batch_size)
