"""A real Kubernetes API server with Argo's CRDs (../shared/k8s), for strict server-side validation in tests.

`k8s_api` is a session fixture (conftest.py imports it to share it): one server per test session, about 20 s to
start. It yields the env vars that point kubectl at it; `server_dry_run` asks it to validate documents the way a
cluster would (unknown fields, types, enums, CEL rules) without storing anything.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO.parent / "shared" / "k8s"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited; its parent just has not reaped it
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def _stop(workdir: Path) -> None:
    """Stop the processes the start script recorded in <workdir>/*.pid (and only those)."""
    pids = []
    for pid_file in workdir.glob("*.pid"):
        try:
            pids.append(int(pid_file.read_text().strip()))
        except (OSError, ValueError):
            continue
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@pytest.fixture(scope="session")
def k8s_api(tmp_path_factory):
    """{"KUBECONFIG": ..., "KUBECACHEDIR": ...} of a running apiextensions-apiserver with Argo's CRDs."""
    script = K8S / "start-apiserver.sh"
    if not script.is_file():
        pytest.skip(f"{script} is not present (../shared/k8s)")
    missing = [tool for tool in ("kubectl", "xz", "curl", "python3") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the test API server needs {', '.join(missing)} on PATH")
    workdir = tmp_path_factory.mktemp("k8s-api")
    try:
        proc = subprocess.run(["bash", str(script), str(workdir)], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as e:
        _stop(workdir)
        raise RuntimeError(f"start-apiserver.sh did not finish; apiserver.log:\n{_tail(workdir / 'apiserver.log')}"
                           ) from e
    exports = [line for line in proc.stdout.splitlines() if line.startswith("export ")]
    if proc.returncode != 0 or not exports:
        _stop(workdir)
        raise RuntimeError(f"start-apiserver.sh failed ({proc.returncode}):\n{proc.stderr[-2000:]}\n"
                           f"apiserver.log:\n{_tail(workdir / 'apiserver.log')}")
    env = dict(word.split("=", 1) for word in shlex.split(exports[-1])[1:])
    try:
        yield env
    finally:
        _stop(workdir)


def server_dry_run(documents: str | os.PathLike | Iterable[os.PathLike] | Iterable[dict], env: dict[str, str],
                   timeout: float = 60) -> subprocess.CompletedProcess:
    """`kubectl create --dry-run=server --validate=strict` of YAML text, files, or parsed documents.

    `create` (not `apply`) so `metadata.generateName` works as it does on submit. Check `.returncode` and
    `.stderr` (e.g. 'strict decoding error: unknown field "spec.podGCC"').
    """
    argv = ["kubectl", "create", "--dry-run=server", "--validate=strict", "-o", "name"]
    text = None
    if isinstance(documents, str):
        text = documents
    elif isinstance(documents, os.PathLike):
        argv += ["-f", os.fspath(documents)]
    else:
        items = list(documents)
        if all(isinstance(d, dict) for d in items):
            text = yaml.safe_dump_all(items, sort_keys=False)
        else:
            for path in items:
                argv += ["-f", os.fspath(path)]
    if text is not None:
        argv += ["-f", "-"]
    return subprocess.run(argv, input=text, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout)
