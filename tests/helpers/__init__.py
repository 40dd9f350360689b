"""What tests share besides fixtures (those are in conftest.py): paths, the real CLI in a subprocess, moto's S3
server, and a finished parent stage written into a store.

    from helpers import REPO, SHARED, cli, finished_stage

`helpers.argo_local` runs a rendered WorkflowTemplate the way Argo's controller would; `helpers.k8s` starts the real
Kubernetes API server of ../shared/k8s.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"


def finished_stage(store: Any, stage: str, outputs: dict[str, Any], fingerprint: str | None = None) -> str:
    """Write `outputs` (rel -> bytes, text, a JSON object, or a list of rows written as JSON Lines) under `stage/`
    with the manifest the runner reads a finished parent by; returns the parent's fingerprint."""
    fingerprint = fingerprint or f"fp-{stage}"
    for rel, value in outputs.items():
        if isinstance(value, str):
            value = value.encode()
        elif isinstance(value, list):
            value = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in value).encode()
        elif not isinstance(value, bytes):
            value = json.dumps(value, ensure_ascii=False).encode()
        store.write_bytes(f"{stage}/{rel}", value)
    store.write_bytes(f"{stage}/manifest.json", json.dumps({"stage": stage, "fingerprint": fingerprint}).encode())
    return fingerprint


INSTRUCTIONS = [  # what an instructions stage writes: instructions.jsonl rows
    {"id": "i0", "instruction": "Give the capital city of the country.", "is_classification": False},
    {"id": "i1", "instruction": "Is the number even or odd?", "is_classification": True},
    {"id": "i2", "instruction": "Write a sentence that uses the given word.", "is_classification": False},
]


def instances_run(tmp_path: Path, model: str | Path, *overrides: str, instructions: list[dict] = INSTRUCTIONS):
    """(config, store) of a run whose instructions and rl stages are finished, ready for an instances stage."""
    from refine_af.config import load_config
    from refine_af.store import open_store

    config = load_config(None, [f"run={tmp_path}", f"model={model}", "instances.max_new_tokens=40", *overrides])
    store = open_store(config.run)
    finished_stage(store, "instructions", {"instructions.jsonl": instructions})
    finished_stage(store, "rl", {})
    return config, store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(env_extra: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """moto's S3 server on a free loopback port: a real HTTP endpoint that boto3 talks to as to MinIO."""
    port = _free_port()
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], env={**os.environ, **(env_extra or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto_server did not start")


def refine_af_exe() -> str:
    """The installed `refine-af` console script of this interpreter's environment."""
    return shutil.which("refine-af", path=str(Path(sys.executable).parent)) or "refine-af"


def cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 900
        ) -> subprocess.CompletedProcess:
    """Run the real `refine-af` entry point in a subprocess."""
    return subprocess.run([refine_af_exe(), *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


WORDS = ["<pad>", "<unk>", "</s>"] + list("abcdefghijklmnopqrst")
POOL = ["b c d", "e f g h", "i j", "k l m n o", "p q", "r s t"]  # prompts of the word-level policy


def word_policy():
    """A random 2-layer Llama over a 23-word vocabulary with a word-level tokenizer: fast, and a reward that counts
    the word "a" is dense enough to learn from in a few dozen RL steps."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
                         initializer_range=0.1)  # logits wide enough for a LoRA to move them
    return LlamaForCausalLM(config).eval(), tok
