"""Artifact store: one small interface over local directories and S3 (or MinIO).

Every stage reads and writes through a `Store` rooted at the run location, so the same code runs against
`file://./runs/<id>` on a laptop and `s3://bucket/runs/<id>` in the cluster. Layout of a run:

    <run>/config.yaml               the resolved run config (what `refine-af stage` reads in a pod)
    <run>/<stage>/...               the stage's outputs and checkpoints
    <run>/<stage>/manifest.json     written last: the commit marker (see `refine_af.runner`)

Keys are '/'-separated paths relative to the root. Local writes are atomic (temp file + rename); an S3 PUT is
atomic by itself. S3 settings come from the run config's `s3` section or the standard AWS variables
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`); transient errors are
retried by botocore's own retry modes, and every failure users can cause becomes a one-line `RefineError`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from refine_af.errors import RefineError
from refine_af.schemas import iter_jsonl


class Store(Protocol):
    uri: str

    def read_bytes(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError when it does not exist."""

    def write_bytes(self, key: str, data: bytes) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]:
        """Keys under `prefix` (recursively), sorted."""

    def delete(self, prefix: str) -> None:
        """Remove the key `prefix` and everything under `prefix/`."""

    def download(self, prefix: str, dest: Path) -> None:
        """Copy every object under `prefix/` into the local directory `dest`."""


def open_store(uri: str, s3: Any = None, *, check: bool = True) -> Store:
    """The store for `uri` (a path, `file://...` or `s3://bucket/prefix`); `check` verifies access up front."""
    store: Store
    if uri.startswith("s3://"):
        store = S3Store(uri, s3)
    else:
        store = FileStore(uri)
    if check:
        store.check()  # type: ignore[attr-defined]
    return store


# -- local directories ------------------------------------------------------------------------------------------------


class FileStore:
    def __init__(self, uri: str):
        path = uri.removeprefix("file://")
        self.root = Path(path).expanduser().absolute()
        self.uri = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / key

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):
                pass
        except OSError as e:
            raise RefineError(f"run directory {self.root} is not writable: {e.strerror or e}") from None

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}"
        # mode 0666 less the umask, as for any file a process creates (mkstemp's 0600 would hide outputs from the
        # other users of a shared run); the kernel applies the umask, so nothing reads or sets it
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if not Path(k).name.startswith("."))

    def delete(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def download(self, prefix: str, dest: Path) -> None:
        src = self._path(prefix)
        if not src.is_dir():
            raise FileNotFoundError(str(src))
        shutil.copytree(src, dest, dirs_exist_ok=True)



# -- S3 and MinIO -----------------------------------------------------------------------------------------------------


class S3Store:
    def __init__(self, uri: str, s3: Any = None):
        import boto3
        from botocore.config import Config

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise RefineError(f"'{uri}' names no bucket (expected s3://bucket/prefix)")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        endpoint = getattr(s3, "endpoint_url", None)
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint or None,  # None: boto3 reads AWS_ENDPOINT_URL(_S3) itself
            region_name=getattr(s3, "region", None) or None,
            config=Config(
                retries={"mode": "standard", "max_attempts": getattr(s3, "max_attempts", 5)},
                connect_timeout=getattr(s3, "connect_timeout", 5),
                read_timeout=60,
                s3={"addressing_style": getattr(s3, "addressing_style", "path")},
            ),
        )
        self.endpoint = self.client.meta.endpoint_url

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextlib.contextmanager
    def _errors(self, missing: str = "object") -> Iterator[None]:
        """Turn botocore failures into one-line errors; a 404 means a missing `missing` (object or bucket)."""
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        try:
            yield
        except (EndpointConnectionError, ConnectTimeoutError) as e:
            raise RefineError(f"cannot reach the S3 endpoint {self.endpoint}: {e}") from None
        except NoCredentialsError:
            raise RefineError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket" or (status == 404 and missing == "bucket"):
                raise RefineError(f"S3 bucket '{self.bucket}' does not exist at {self.endpoint}") from None
            if status == 404:
                raise FileNotFoundError(f"{self.uri}: object not found") from None
            if status == 403 or code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
                raise RefineError(
                    f"S3 refused access to s3://{self.bucket} at {self.endpoint} ({code}): check the credentials"
                ) from None
            raise RefineError(f"S3 error on s3://{self.bucket} at {self.endpoint}: {code or e}") from None

    def check(self) -> None:
        with self._errors(missing="bucket"):
            self.client.head_bucket(Bucket=self.bucket)

    def read_bytes(self, key: str) -> bytes:
        with self._errors():
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def write_bytes(self, key: str, data: bytes) -> None:
        with self._errors():
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def exists(self, key: str) -> bool:
        try:
            with self._errors():
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except FileNotFoundError:
            return False

    def _iter(self, prefix: str) -> Iterable[str]:
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors():
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix) + 1 :] if self.prefix else obj["Key"]
                    if key == prefix or not prefix or key.startswith(prefix.rstrip("/") + "/"):
                        yield key

    def list(self, prefix: str = "") -> list[str]:
        return sorted(self._iter(prefix))

    def delete(self, prefix: str) -> None:
        keys = self.list(prefix)
        with self._errors():
            for i in range(0, len(keys), 1000):
                batch = [{"Key": self._key(k)} for k in keys[i : i + 1000]]
                response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
                # S3 answers 200 even when it kept objects: the per-key failures are in `Errors`
                if errors := response.get("Errors"):
                    first = errors[0]
                    raise RefineError(f"S3 did not delete {len(errors)} object(s) under {self.uri}/{prefix}, e.g. "
                                      f"{first.get('Key')}: {first.get('Code')} {first.get('Message', '')}".rstrip())

    def download(self, prefix: str, dest: Path) -> None:
        keys = self.list(prefix)
        if not keys:
            raise FileNotFoundError(f"{self.uri}/{prefix}: no objects")
        with self._errors():
            for key in keys:
                target = Path(dest) / key[len(prefix.rstrip("/")) + 1 :]
                target.parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(self.bucket, self._key(key), str(target))


# -- typed helpers over any store -------------------------------------------------------------------------------------


def read_json(store: Store, key: str) -> Any:
    return json.loads(store.read_bytes(key))


def write_json(store: Store, key: str, obj: Any) -> None:
    store.write_bytes(key, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


def read_jsonl(store: Store, key: str) -> list[dict]:
    return [obj for _, obj in iter_jsonl(store.read_bytes(key), f"{store.uri}/{key}")]


def read_required(store: Store, key: str, missing: str = "file not found") -> bytes:
    """The bytes at `key`; a missing file is one RefineError naming it, then `missing` (what to do about it)."""
    try:
        return store.read_bytes(key)
    except FileNotFoundError:
        raise RefineError(f"{store.uri}/{key}: {missing}") from None


def jsonl_bytes(rows: Iterable[dict]) -> bytes:
    """JSON Lines, UTF-8, one object per line."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def local_files(directory: str | Path, last: str | None = None) -> list[tuple[str, Path]]:
    """(path relative to `directory`, posix; path) of each file in a local tree, sorted, with files named `last` at the
    end: a checkpoint's state file goes up last, so that its presence in the store means the rest is there."""
    root = Path(directory)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return [(p.relative_to(root).as_posix(), p) for p in sorted(files, key=lambda p: p.name == last)]


def split_uri(uri: str) -> tuple[str, str]:
    """('s3://bucket/a', 'b.jsonl') for 's3://bucket/a/b.jsonl'; local paths split the same way."""
    head, _, name = uri.rstrip("/").rpartition("/")
    return (head or ".", name)
