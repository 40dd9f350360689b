import os
import stat

import pytest

from conftest import start_moto
from refine_af.config import S3Config
from refine_af.errors import RefineError
from refine_af.store import open_store, read_jsonl, write_json, write_jsonl


def _exercise(store):
    store.write_bytes("a/x.txt", b"one")
    write_json(store, "a/b/m.json", {"k": 1})
    write_jsonl(store, "c.jsonl", [{"i": 1}, {"i": 2}])
    assert store.read_bytes("a/x.txt") == b"one"
    assert read_jsonl(store, "c.jsonl") == [{"i": 1}, {"i": 2}]
    assert store.list() == ["a/b/m.json", "a/x.txt", "c.jsonl"]
    assert store.list("a") == ["a/b/m.json", "a/x.txt"]
    assert store.list("a/b/m.json") == ["a/b/m.json"]
    assert store.list("ab") == [] and not store.exists("a/y.txt") and store.exists("a/x.txt")
    with pytest.raises(FileNotFoundError):
        store.read_bytes("nope")
    store.delete("a")
    assert store.list() == ["c.jsonl"]


def test_file_store(tmp_path):
    _exercise(open_store(f"file://{tmp_path}/run"))
    _exercise(open_store(str(tmp_path / "plain")))


def test_s3_store_against_a_real_endpoint(s3_env):
    bucket = s3_env()
    store = open_store(f"s3://{bucket}/runs/x")
    _exercise(store)
    keys = [o["Key"] for o in s3_env.client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["runs/x/c.jsonl"]


def test_download_and_upload(tmp_path, s3_env):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "sub" / "w.bin").write_bytes(b"\0" * 10)
    store = open_store(f"s3://{s3_env()}")
    store.upload(src, "models/m")
    store.download("models/m", tmp_path / "dst")
    assert (tmp_path / "dst" / "sub" / "w.bin").read_bytes() == b"\0" * 10


def test_unwritable_run_directory(tmp_path):
    if os.geteuid() == 0:
        target = "/proc/refine-af-run"  # root may write anywhere else
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
        target = str(ro / "run")
    with pytest.raises(RefineError, match="is not writable"):
        open_store(target)


def test_missing_bucket(s3_env):
    with pytest.raises(RefineError, match="bucket 'no-such-bucket' does not exist"):
        open_store("s3://no-such-bucket/runs/x")


def test_unreachable_endpoint(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    cfg = S3Config(endpoint_url="http://127.0.0.1:9", max_attempts=1, connect_timeout=1)
    with pytest.raises(RefineError, match="cannot reach the S3 endpoint http://127.0.0.1:9"):
        open_store("s3://bucket/runs/x", cfg)


def test_wrong_credentials(monkeypatch):
    # moto with authentication on from the first request: unknown keys are refused as by MinIO or AWS.
    proc, url = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        with pytest.raises(RefineError, match="refused access .* check the credentials"):
            open_store("s3://bucket/runs/x", S3Config(endpoint_url=url, max_attempts=1))
    finally:
        proc.terminate()
        proc.wait(5)
