"""Shared fixtures: the shared data folder, a real S3 endpoint (moto's server), tiny and builtin models."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from k8s_fixtures import k8s_api  # noqa: F401  (a session fixture: the real API server, started once)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED


@pytest.fixture(scope="session")
def seed_file(shared: Path) -> Path:
    return shared / "data" / "seed_tasks.jsonl"


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


@pytest.fixture(scope="session")
def s3_endpoint():
    proc, url = start_moto()
    yield url
    proc.terminate()
    proc.wait(5)


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """Standard AWS variables pointing at moto; returns a helper that creates a fresh bucket."""
    import uuid

    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=s3_endpoint)

    def bucket() -> str:
        name = f"b-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=name)
        return name

    bucket.client = client  # type: ignore[attr-defined]
    bucket.endpoint = s3_endpoint  # type: ignore[attr-defined]
    return bucket


@pytest.fixture(scope="session")
def builtin_dir() -> Path:
    """The builtin model as a cached HF directory (converted from its GGUF once per machine)."""
    from refine_af.models import resolve

    return resolve("builtin")


@pytest.fixture(scope="session")
def builtin_tokenizer(builtin_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(builtin_dir)
    tok.padding_side = "left"
    return tok


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, builtin_dir) -> Path:
    """A tiny random Llama with the builtin tokenizer: real code paths, milliseconds per step."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(builtin_dir)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def refine_af_exe() -> str:
    """The installed `refine-af` console script of this interpreter's environment."""
    return shutil.which("refine-af", path=str(Path(sys.executable).parent)) or "refine-af"


def cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 900
        ) -> subprocess.CompletedProcess:
    """Run the real `refine-af` entry point in a subprocess."""
    return subprocess.run([refine_af_exe(), *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def one_thread():
    """Tiny matrices: one torch thread is faster than two fighting over them."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def bos_tokenizer():
    """A word-level tokenizer whose post-processor puts <s> before every text (as LLaMA-2's and Mistral's do)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "<pad>", "Yes", "yes", "No", "no", "Say", "hi", "Hi", "there", "!", ".",
             "[INST]", "[/INST]", "Output", ":", "a", "b"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


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
