import os
import stat

import pytest
from helpers import start_moto

from refine_af.config import S3Config
from refine_af.errors import RefineError
from refine_af.store import FileStore, jsonl_bytes, open_store, read_jsonl, write_json


def _exercise(store):
    store.write_bytes("a/x.txt", b"one")
    write_json(store, "a/b/m.json", {"k": 1})
    store.write_bytes("c.jsonl", jsonl_bytes([{"i": 1}, {"i": 2}]))
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


def test_download(tmp_path, s3_env):
    store = open_store(f"s3://{s3_env()}")
    store.write_bytes("models/m/config.json", b"{}")
    store.write_bytes("models/m/sub/w.bin", b"\0" * 10)
    store.download("models/m", tmp_path / "dst")
    assert (tmp_path / "dst" / "sub" / "w.bin").read_bytes() == b"\0" * 10
    assert (tmp_path / "dst" / "config.json").read_bytes() == b"{}"


def test_a_delete_s3_refuses_is_an_error(s3_env):
    """delete_objects answers 200 with per-key `Errors` when it keeps objects: that must not pass for success."""
    from botocore.stub import Stubber

    store = open_store(f"s3://{s3_env()}/runs/x")
    store.write_bytes("st/a.json", b"{}")
    listing = store.client.list_objects_v2(Bucket=store.bucket, Prefix="runs/x/st")  # moto's real answer
    listing.pop("ResponseMetadata")
    refused = {"Errors": [{"Key": "runs/x/st/a.json", "Code": "AccessDenied", "Message": "Access Denied"}]}
    with Stubber(store.client) as stub:
        stub.add_response("list_objects_v2", listing)
        stub.add_response("delete_objects", refused, expected_params={
            "Bucket": store.bucket, "Delete": {"Objects": [{"Key": "runs/x/st/a.json"}], "Quiet": True}})
        with pytest.raises(RefineError, match=r"did not delete 1 object.*runs/x/st/a.json: AccessDenied Access Denied"):
            store.delete("st")
    assert store.exists("st/a.json")
    store.delete("st")  # a real delete answers with no Errors
    assert not store.exists("st/a.json")


def test_file_store_files_follow_the_umask(tmp_path):
    store = FileStore(str(tmp_path / "run"))
    old = os.umask(0o027)
    try:
        store.write_bytes("a/x.txt", b"one")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "run" / "a" / "x.txt").stat().st_mode) == 0o640
    store.write_bytes("a/y.txt", b"two")
    assert stat.S_IMODE((tmp_path / "run" / "a" / "y.txt").stat().st_mode) == 0o666 & ~old
    assert store.list("a") == ["a/x.txt", "a/y.txt"]  # no temporary files left


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
