"""Shared fixtures: the shared data folder, a real S3 endpoint (moto's server), tiny and builtin models.

Tests are laid out by what they need: `unit/` (functions and modules, tiny models), `stages/` (one stage through the
runner on a store holding finished parents, `helpers.finished_stage`), `cluster/` (the Argo workflow, the Helm chart
and the images, against the real API server, helm and docker), `e2e/` (the CLI and whole runs in subprocesses).
Markers: `slow` (seconds or more each: training, real scorer models, the API server, subprocesses, whole runs; every
test in e2e/), `builtin` (loads the builtin 135M model), `gpu`. CI runs them all; the quick loop:

    pytest -m "not slow and not builtin"
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SHARED, start_moto
from helpers.k8s import k8s_api  # noqa: F401  (a session fixture: the real API server, started once)


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED


@pytest.fixture(scope="session")
def seed_file(shared: Path) -> Path:
    return shared / "data" / "seed_tasks.jsonl"


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


def pytest_collection_modifyitems(items):
    for item in items:
        if "builtin_dir" in item.fixturenames:  # reaches the builtin model's weights, directly or through a fixture
            item.add_marker(pytest.mark.builtin)
        if "k8s_api" in item.fixturenames or item.path.parent.name == "e2e":  # a server to start, subprocesses
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def builtin_files() -> Path:
    """The builtin model as a cached HF directory (converted from its GGUF once per machine), for its tokenizer."""
    from refine_af.models import resolve

    return resolve("builtin")


@pytest.fixture(scope="session")
def builtin_dir(builtin_files) -> Path:
    """The same directory, for tests that load the 135M model itself: they are marked `builtin`."""
    return builtin_files


@pytest.fixture(scope="session")
def builtin_tokenizer(builtin_files):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(builtin_files)
    tok.padding_side = "left"
    return tok


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, builtin_files) -> Path:
    """A tiny random Llama with the builtin tokenizer: real code paths, milliseconds per step."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(builtin_files)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


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
