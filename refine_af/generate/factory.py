"""Choosing and building a backend from the run config."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from refine_af.generate.base import Backend

log = logging.getLogger(__name__)


def choose(kind: str, device: str, vllm_installed: bool) -> tuple[str, str]:
    """The backend for `generation.backend` on this machine, and why."""
    if kind != "auto":
        return kind, f"generation.backend={kind}"
    if not device.startswith("cuda"):
        return "transformers", f"no GPU (device {device})"
    if not vllm_installed:
        return "transformers", "vllm is not installed (pip install 'refine-af[gpu]')"
    return "vllm", f"vllm is installed and {device} is present"


def make_backend(config: Any, adapter: str | None = None, lora: str | None = None) -> Backend:
    """The configured backend for the run's model, optionally with a LoRA adapter directory.

    `lora` overrides `generation.lora` for vLLM: "serve" keeps the base model answerable (`generate(adapter=False)`),
    which the rl probe needs; "merge" (the default for whole-dataset stages) merges the adapter into the weights
    first, because vLLM serves unmerged LoRA markedly slower.
    """
    from refine_af import models

    gen = config.generation
    device = models.pick_device(gen.device)
    kind, why = choose(gen.backend, device, importlib.util.find_spec("vllm") is not None)
    log.info("generation backend: %s (%s)", kind, why)
    if kind == "vllm":
        from refine_af.generate.vllm_backend import VLLMBackend, check_adapter

        gen = gen.model_copy(update={"lora": lora or gen.lora})
        if not adapter:
            return VLLMBackend(str(models.resolve(config.model, config.cache_dir, config.s3)), gen)
        peft = check_adapter(adapter, gen, config.model)
        if gen.lora == "merge":
            merged = models.merge_adapter(config.model, adapter, cache_dir=config.cache_dir, s3=config.s3)
            return VLLMBackend(str(merged), gen, merged=adapter)
        path = models.resolve(config.model, config.cache_dir, config.s3)
        return VLLMBackend(str(path), gen, adapter=adapter, adapter_rank=int(peft.get("r", 8)))
    from refine_af.generate.hf import TransformersBackend

    model_obj, tokenizer = models.load_causal_lm(
        config.model, cache_dir=config.cache_dir, s3=config.s3, device=device, dtype=gen.dtype
    )
    if adapter:
        from peft import PeftModel

        model_obj = PeftModel.from_pretrained(model_obj, adapter).eval()
    return TransformersBackend(model_obj, tokenizer, batch_size=gen.batch_size)
