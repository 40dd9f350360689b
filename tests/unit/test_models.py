import pytest

from refine_af import models
from refine_af.errors import RefineError
from refine_af.models import load_causal_lm, resolve


def test_builtin_is_cached_as_a_plain_hf_directory(builtin_dir, monkeypatch):
    assert (builtin_dir / "config.json").is_file() and (builtin_dir / "model.safetensors").is_file()
    assert "quantization_config" not in (builtin_dir / "config.json").read_text()

    def no_conversion():
        raise AssertionError("the GGUF was converted again")

    monkeypatch.setattr(models, "builtin_gguf", no_conversion)
    model, tok = load_causal_lm("builtin")
    assert model.config.num_hidden_layers == 30 and tok.padding_side == "left"
    assert tok.chat_template


def test_local_directory(tiny_model_dir):
    assert resolve(str(tiny_model_dir)) == tiny_model_dir
    assert resolve(f"file://{tiny_model_dir}") == tiny_model_dir


@pytest.mark.parametrize("ref", ["/no/such/model", "relative/missing"])
def test_missing_reference_is_a_clear_error(ref):
    with pytest.raises(RefineError, match="does not exist"):
        resolve(ref)


def test_directory_without_config(tmp_path):
    with pytest.raises(RefineError, match="has no config.json"):
        resolve(str(tmp_path))


def test_s3_prefix_is_pulled_into_the_cache(tmp_path, s3_env, tiny_model_dir):
    from refine_af.store import open_store

    bucket = s3_env()
    store = open_store(f"s3://{bucket}")
    for path in (p for p in tiny_model_dir.rglob("*") if p.is_file()):
        store.write_bytes(f"models/tiny/{path.relative_to(tiny_model_dir).as_posix()}", path.read_bytes())
    path = resolve(f"s3://{bucket}/models/tiny", cache_dir=str(tmp_path / "cache"))
    assert path.is_relative_to(tmp_path / "cache") and (path / "config.json").is_file()
    model, _ = load_causal_lm(f"s3://{bucket}/models/tiny", cache_dir=str(tmp_path / "cache"))
    assert model.config.hidden_size == 32
    s3_env.client.delete_object(Bucket=bucket, Key="models/tiny/config.json")
    assert resolve(f"s3://{bucket}/models/tiny", cache_dir=str(tmp_path / "cache")) == path  # cached
    with pytest.raises(RefineError, match="no objects under that prefix"):
        resolve(f"s3://{bucket}/models/none", cache_dir=str(tmp_path / "cache"))
