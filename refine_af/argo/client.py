"""Submit the rendered Workflow, read its status back, and pull a finished stage's outputs.

Two transports reach a cluster:

- `via="argo"`: the Argo Server's REST API through Hera's `WorkflowsService` (what the Argo UI and CLI use). The
  token is `--token` or `$ARGO_TOKEN` (as `argo auth token` prints it; a bare token gets the `Bearer ` scheme);
  TLS is verified unless `insecure` (a self-signed server certificate); `$REQUESTS_CA_BUNDLE` names a private CA.
- `via="kube"`: the Kubernetes API directly (`CustomObjectsApi`, `argoproj.io/v1alpha1`), with the credentials of
  `$KUBECONFIG` / `~/.kube/config`, or a pod's service account in the cluster. No Argo Server is needed; `server`
  then only makes the UI link.

The Workflow references the WorkflowTemplate by name, which the Helm chart installs. `submit` leaves that template
alone unless it is handed one (`refine-af submit --with-template`): then it creates or replaces it first, so a
cluster without the chart, or a cluster whose template is older than this config's cluster section, runs exactly
what was rendered. Replacing is opt-in because every later run in the namespace gets the replaced template.

Every failure a user can cause (no route to the server, a refused token, a missing namespace, workflow or template,
a certificate that does not verify, no kubeconfig) is a one-line `RefineError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from refine_af.errors import RefineError

log = logging.getLogger("refine_af")

Via = Literal["argo", "kube"]
GROUP, VERSION = "argoproj.io", "v1alpha1"
FINAL_PHASES = ("Succeeded", "Failed", "Error")
_KINDS = {"workflows": "Workflow", "workflowtemplates": "WorkflowTemplate"}
_TIMEOUT = (10, 60)  # connect, read (seconds): an unreachable server fails in seconds, not minutes


# -- the two transports -----------------------------------------------------------------------------------------------


def _bearer(token: str | None) -> str | None:
    token = (token or os.environ.get("ARGO_TOKEN") or "").strip()
    if not token:
        return None
    return token if " " in token else f"Bearer {token}"  # `argo auth token` prints "Bearer ..." already


def _host(server: str | None) -> str:
    if not server:
        raise RefineError("--argo-server is required with --via argo (or set ARGO_SERVER)")
    if "://" not in server:  # ARGO_SERVER is host:port in Argo's own CLI, and the server speaks TLS by default
        server = f"https://{server}"
    return server.rstrip("/") + "/"  # Hera urljoins its paths: a base path (…/argo/) must end with a slash


def ui_link(server: str | None, namespace: str, name: str) -> str | None:
    """The workflow's page in the Argo UI, served by the Argo Server."""
    return f"{_host(server).rstrip('/')}/workflows/{namespace}/{name}" if server else None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The user chose --insecure; and Hera's request models call pydantic's deprecated .json()."""
    import urllib3

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        warnings.filterwarnings("ignore", message=".*`json` method is deprecated.*")
        yield


def _what(kind: str, name: str | None) -> str:
    return f"{_KINDS[kind]} '{name}'" if name else f"the {_KINDS[kind]}"


class _Argo:
    """The Argo Server's REST API (Hera's WorkflowsService)."""

    def __init__(self, server: str | None, namespace: str, token: str | None, insecure: bool):
        import requests
        from hera.workflows.service import WorkflowsService

        class _Session(requests.Session):
            last: requests.Response | None = None

            def request(self, method, url, **kwargs):  # Hera passes no timeout; requests' default is none
                kwargs.setdefault("timeout", _TIMEOUT)
                self.last = super().request(method, url, **kwargs)
                return self.last

        self.server, self.namespace = _host(server).rstrip("/"), namespace
        self.session = _Session()
        self.service = WorkflowsService(host=_host(server), token=_bearer(token), verify_ssl=not insecure,
                                        namespace=namespace, session=self.session)

    @contextlib.contextmanager
    def _errors(self, action: str, kind: str, name: str | None = None) -> Iterator[None]:
        import requests
        from hera.exceptions import HeraException

        where = f"the Argo Server {self.server}"
        self.session.last = None
        try:
            with _quiet():
                yield
        except requests.exceptions.SSLError as e:
            raise RefineError(f"TLS verification of {where} failed ({_reason(e)}); pass --insecure to skip it (a "
                              "self-signed certificate), or point REQUESTS_CA_BUNDLE at its CA") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
            raise RefineError(f"cannot reach {where}: {_reason(e)}") from None
        except (HeraException, KeyError, ValueError):
            # Hera raises HeraException for an error answer, KeyError when its JSON has no "message", ValueError
            # when a 200 is not JSON; the response itself says which
            resp = self.session.last
            if resp is None:
                raise
            try:
                answer = resp.json()
            except ValueError:
                answer = None
            message = " ".join(str(answer.get("message", "")).split()) if isinstance(answer, dict) else ""
            if resp.status_code in (401, 403):  # also from a proxy in front of the server, in its own format
                raise _http_error(resp.status_code, message, where, action, kind, name, self.namespace) from None
            if not isinstance(answer, dict) or (not resp.ok and "message" not in answer):
                raise RefineError(f"{where} did not answer as the Argo API ({resp.status_code} for "
                                  f"{resp.request.method} {resp.request.path_url}): is the URL right?") from None
            if resp.ok:
                raise
            raise _http_error(resp.status_code, message, where, action, kind, name, self.namespace) from None

    def create(self, kind: str, body: dict) -> dict:
        from hera.workflows.models import (
            Workflow,
            WorkflowCreateRequest,
            WorkflowTemplate,
            WorkflowTemplateCreateRequest,
        )

        with self._errors("create", kind, body.get("metadata", {}).get("name")):
            if kind == "workflows":
                out = self.service.create_workflow(WorkflowCreateRequest(workflow=Workflow(**body)), self.namespace)
            else:
                out = self.service.create_workflow_template(
                    WorkflowTemplateCreateRequest(template=WorkflowTemplate(**body)), self.namespace)
        return _dump(out)

    def get(self, kind: str, name: str) -> dict:
        with self._errors("get", kind, name):
            if kind == "workflows":
                return _dump(self.service.get_workflow(name, self.namespace))
            return _dump(self.service.get_workflow_template(name, self.namespace))

    def replace(self, kind: str, name: str, body: dict) -> dict:
        from hera.workflows.models import WorkflowTemplate, WorkflowTemplateUpdateRequest

        assert kind == "workflowtemplates"
        with self._errors("replace", kind, name):
            req = WorkflowTemplateUpdateRequest(name=name, namespace=self.namespace,
                                                template=WorkflowTemplate(**body))
            return _dump(self.service.update_workflow_template(name, req, self.namespace))


def _dump(model: Any) -> dict:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


class _Kube:
    """The Kubernetes API: Argo's custom resources, credentials from a kubeconfig or the pod's service account.
    Writes use strict field validation: a field the cluster's CRDs do not know is an error, not silently dropped."""

    def __init__(self, server: str | None, namespace: str, token: str | None, insecure: bool):
        import yaml
        from kubernetes import client, config

        cfg = client.Configuration()
        paths = [p for p in (os.environ.get("KUBECONFIG") or "~/.kube/config").split(os.pathsep) if p]
        try:
            if any(Path(p).expanduser().is_file() for p in paths):
                config.load_kube_config(config_file=os.pathsep.join(paths), client_configuration=cfg)
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=cfg)
            else:
                raise RefineError(f"no kubeconfig ({', '.join(paths)} not found; set KUBECONFIG) and not in a "
                                  "pod: --via kube needs Kubernetes credentials")
        except (config.ConfigException, yaml.YAMLError, OSError) as e:
            why = getattr(e, "problem", None) or _reason(e)  # a YAML error's own text spans lines
            raise RefineError(f"cannot load the kubeconfig {os.pathsep.join(paths)}: {why}") from None
        if insecure:
            cfg.verify_ssl = False
        if token:  # an explicit --token replaces the kubeconfig's credentials
            cfg.api_key = {"authorization": _bearer(token)}
            cfg.api_key_prefix = {}
        cfg.retries = 1  # urllib3 would retry a refused connection three times
        self.server, self.namespace = cfg.host, namespace
        self.api = client.CustomObjectsApi(client.ApiClient(cfg))

    @contextlib.contextmanager
    def _errors(self, action: str, kind: str, name: str | None = None) -> Iterator[None]:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        where = f"the Kubernetes API server {self.server}"
        try:
            with _quiet():
                yield
        except ApiException as e:
            if not e.status:  # urllib3's SSLError, raised without a response
                if "SSL" in str(e.reason):
                    raise _tls_error(where, e.reason) from None
                raise RefineError(f"cannot reach {where}: {_reason(e.reason)}") from None
            try:
                status = json.loads(e.body or "{}")
            except ValueError:
                status = {"message": e.body}
            if not isinstance(status, dict):
                status = {"message": str(status)}
            message = " ".join(str(status.get("message") or e.reason or "").split())
            # a missing object or namespace names itself in details; a resource type nobody serves does not
            if e.status == 404 and not (status.get("details") or {}).get("name"):
                raise RefineError(f"{where} does not serve {GROUP}/{VERSION} {kind} ({message}): Argo Workflows' "
                                  "CRDs are not installed in this cluster") from None
            raise _http_error(e.status, message, where, action, kind, name, self.namespace) from None
        except urllib3.exceptions.HTTPError as e:
            reason = getattr(e, "reason", None) or e
            if isinstance(reason, urllib3.exceptions.SSLError):
                raise _tls_error(where, reason) from None
            raise RefineError(f"cannot reach {where}: {_reason(reason)}") from None

    def create(self, kind: str, body: dict) -> dict:
        with self._errors("create", kind, body.get("metadata", {}).get("name")):
            return self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, kind, body,
                                                            field_validation="Strict", _request_timeout=_TIMEOUT)

    def get(self, kind: str, name: str) -> dict:
        with self._errors("get", kind, name):
            return self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, kind, name,
                                                         _request_timeout=_TIMEOUT)

    def replace(self, kind: str, name: str, body: dict) -> dict:
        with self._errors("replace", kind, name):
            return self.api.replace_namespaced_custom_object(GROUP, VERSION, self.namespace, kind, name, body,
                                                             field_validation="Strict", _request_timeout=_TIMEOUT)


class NotFound(RefineError):
    """A 404 on a read: the caller decides whether that is an error (a template to create) or not."""


def _tls_error(where: str, reason: Any) -> RefineError:
    return RefineError(f"TLS verification of {where} failed ({_reason(reason)}); pass --insecure to skip it "
                       "(a self-signed certificate), or fix the kubeconfig's certificate-authority")


def _reason(e: Any) -> str:
    """The innermost cause of a requests/urllib3 failure, on one line (their reprs nest three deep)."""
    text = " ".join(str(e.args[0] if isinstance(e, BaseException) and e.args else e).split())
    for pattern in (r"\[SSL: \w+\] ([^'\"(]*)", r"Failed to establish a new connection: ([^'\"]*)",
                    r"(Failed to resolve '[^']*')", r"([^'\"(]*timed out[^'\"]*)"):
        match = re.search(pattern, text)
        if match:
            return match.group(1).strip()
    return text.removeprefix("SSLError ")


def _http_error(status: int, message: str, where: str, action: str, kind: str, name: str | None,
                namespace: str) -> RefineError:
    """One line for an HTTP error answer; 404 means the namespace on create and the object otherwise."""
    what = _what(kind, name)
    if status == 401:
        hint = ("check the kubeconfig's credentials, or pass --token" if "Kubernetes" in where else
                "pass --token or set ARGO_TOKEN (`argo auth token` prints one)")
        return RefineError(f"{where} refused the token (401 Unauthorized): {hint}")
    if status == 403:
        return RefineError(f"{where} refused the token (403 Forbidden) to {action} {_KINDS[kind]}s in namespace "
                           f"'{namespace}'" + (f": {message}" if message else ""))
    if status == 404 and action == "create":
        return RefineError(f"namespace '{namespace}' does not exist at {where}" + (f" ({message})" if message else ""))
    if status == 404:
        return NotFound(f"{what} not found in namespace '{namespace}' at {where}")
    if "workflowtemplate" in message.lower() and "not found" in message.lower():
        return RefineError(f"{where} cannot find the WorkflowTemplate in namespace '{namespace}' ({message}): "
                           "install the Helm chart there, or pass --with-template")
    return RefineError(f"{where} refused to {action} {what} ({status}): {message}")


def _transport(via: Via, server: str | None, namespace: str, token: str | None, insecure: bool) -> _Argo | _Kube:
    if via == "argo":
        return _Argo(server, namespace, token, insecure)
    if via == "kube":
        return _Kube(server, namespace, token, insecure)
    raise RefineError(f"--via {via}: expected argo or kube")


# -- submit, status, wait ---------------------------------------------------------------------------------------------


def ensure_template(template: dict, *, via: Via = "argo", server: str | None = None, namespace: str,
                    token: str | None = None, insecure: bool = False) -> str:
    """Create the WorkflowTemplate, or replace the one of that name. Returns "created" or "replaced"."""
    t = _transport(via, server, namespace, token, insecure)
    return _ensure_template(t, template)


def _ensure_template(t: _Argo | _Kube, template: dict) -> str:
    name = template["metadata"]["name"]
    body = {**template, "metadata": {**template["metadata"], "namespace": t.namespace}}
    try:
        current = t.get("workflowtemplates", name)
    except NotFound:
        t.create("workflowtemplates", body)
        log.info("created WorkflowTemplate %s in %s", name, t.namespace)
        return "created"
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]  # an update must name it
    t.replace("workflowtemplates", name, body)
    log.info("replaced WorkflowTemplate %s in %s", name, t.namespace)
    return "replaced"


def submit(workflow: dict, *, via: Via = "argo", server: str | None = None, namespace: str,
           token: str | None = None, insecure: bool = False, template: dict | None = None) -> str:
    """Create the Workflow; returns its name (the server completes `generateName`). With `template`, create or
    replace the WorkflowTemplate first (see the module docstring)."""
    t = _transport(via, server, namespace, token, insecure)
    if template is not None:
        _ensure_template(t, template)
    elif via == "kube":  # no Argo Server validates the reference here: a missing template would only show in the UI
        ref = workflow.get("spec", {}).get("workflowTemplateRef", {}).get("name")
        if ref:
            try:
                t.get("workflowtemplates", ref)
            except NotFound:
                raise RefineError(f"no WorkflowTemplate '{ref}' in namespace '{namespace}' (is that the namespace?): "
                                  "install the Helm chart there, or pass --with-template") from None
    body = {**workflow, "metadata": {**workflow.get("metadata", {}), "namespace": namespace}}
    created = t.create("workflows", body)
    return created["metadata"]["name"]


def status(name: str, *, via: Via = "argo", server: str | None = None, namespace: str, token: str | None = None,
           insecure: bool = False) -> dict:
    """The workflow's phase and, per DAG task in task order, its phase, progress, message, times and outputs."""
    wf = _transport(via, server, namespace, token, insecure).get("workflows", name)
    return summarize(wf)


def summarize(wf: dict) -> dict:
    """`status` of a Workflow object as the controller leaves it (`status.nodes` keyed by node id)."""
    st = wf.get("status") or {}
    nodes: dict[str, dict] = st.get("nodes") or {}
    name = wf["metadata"]["name"]
    root = nodes.get(name) or next((n for n in nodes.values() if not n.get("boundaryID") and n.get("type") == "DAG"),
                                   None)
    tasks: dict[str, dict] = {}
    if root:
        for node in nodes.values():
            # a task's own node is "<root>.<task>"; its shards "<task>(0:1)" and attempts "<task>(2)" are its children
            display = node.get("displayName") or ""
            own = "(" not in display and node.get("name") == f"{root['name']}.{display}"
            if own and node.get("boundaryID") == root["id"]:
                tasks[display] = node
    order = _task_order(wf)
    names = [t for t in order if t in tasks] + sorted(
        (t for t in tasks if t not in order), key=lambda t: (tasks[t].get("startedAt") or "~", t))
    names += [t for t in order if t not in tasks]  # not reached yet: no node
    stages = [_stage(t, tasks.get(t), nodes) for t in names]
    return {
        "name": name,
        "namespace": wf["metadata"].get("namespace"),
        "phase": st.get("phase") or "Pending",
        "progress": st.get("progress"),
        "message": st.get("message"),
        "startedAt": st.get("startedAt"),
        "finishedAt": st.get("finishedAt"),
        "run": next((s["outputs"].get("run") for s in stages if s["name"] == "init" and s["outputs"].get("run")),
                    None),
        "stages": stages,
    }


def _task_order(wf: dict) -> list[str]:
    """Task names as the DAG lists them: from the template the controller stored, or the Workflow's own spec."""
    for spec in ((wf.get("status") or {}).get("storedWorkflowTemplateSpec"), wf.get("spec")):
        if not spec:
            continue
        entry = spec.get("entrypoint") or "pipeline"
        for tpl in spec.get("templates") or []:
            if tpl.get("name") == entry and tpl.get("dag"):
                return [task["name"] for task in tpl["dag"].get("tasks", [])]
    return []


def _stage(task: str, node: dict | None, nodes: dict[str, dict]) -> dict:
    if node is None:
        return {"name": task, "template": None, "phase": None, "progress": None, "message": None,
                "startedAt": None, "finishedAt": None, "outputs": {}}
    out = {
        "name": task,
        "template": node.get("templateName") or (node.get("templateRef") or {}).get("template"),
        "phase": node.get("phase"),
        "progress": node.get("progress"),
        "message": node.get("message"),
        "startedAt": node.get("startedAt"),
        "finishedAt": node.get("finishedAt"),
        "outputs": {p["name"]: p.get("value") for p in (node.get("outputs") or {}).get("parameters") or []},
    }
    children = [nodes[c] for c in node.get("children") or [] if c in nodes]
    if node.get("type") == "TaskGroup":  # withSequence: one child per shard
        out["shards"] = {"total": len(children), "succeeded": sum(c.get("phase") == "Succeeded" for c in children)}
    elif node.get("type") == "Retry" and len(children) > 1:
        out["retries"] = len(children) - 1
    return out


def wait(name: str, *, via: Via = "argo", server: str | None = None, namespace: str, token: str | None = None,
         insecure: bool = False, timeout: float = float("inf"), poll: float = 10.0) -> dict:
    """Poll `status` until the workflow reaches a final phase; returns that status."""
    deadline = time.monotonic() + timeout
    seen = None
    while True:
        d = status(name, via=via, server=server, namespace=namespace, token=token, insecure=insecure)
        if d["phase"] in FINAL_PHASES:
            return d
        now = (d["phase"], d["progress"])
        if now != seen:
            log.info("%s: %s %s", name, d["phase"], d["progress"] or "")
            seen = now
        if time.monotonic() + poll > deadline:
            raise RefineError(f"workflow '{name}' is still {d['phase']} after {timeout:g} s; "
                              f"`refine-af status {name}` shows it later")
        time.sleep(poll)


_PLUMBING = ("run", "key")  # the graph's wiring, not results: init's run/key and enabled-*/shards-* flags


def format_status(d: dict, now: datetime | None = None) -> str:
    """The CLI's view: a header (workflow, phase, progress, run) and one row per stage."""
    now = now or datetime.now(UTC)
    head = f"workflow {d['name']}  {d['phase']}"
    if d.get("progress"):
        head += f"  {d['progress']}"
    if d.get("startedAt"):
        head += f"  started {d['startedAt']}  ({_duration(d['startedAt'], d.get('finishedAt'), now)})"
    lines = [head]
    if d.get("message"):
        lines.append(f"message: {d['message']}")
    if d.get("run"):
        lines.append(f"run: {d['run']}")
    rows = [("STAGE", "PHASE", "PROGRESS", "STARTED", "DURATION", "DETAIL")]
    for s in d["stages"]:
        detail = []
        if s.get("shards"):
            detail.append(f"shards {s['shards']['succeeded']}/{s['shards']['total']} done")
        if s.get("retries"):
            detail.append(f"retried {s['retries']}x")
        if s.get("message"):
            detail.append(s["message"])
        detail += [f"{k}={v}" for k, v in s["outputs"].items()
                   if v not in (None, "") and k not in _PLUMBING and not k.startswith(("enabled-", "shards-"))]
        rows.append((s["name"], s["phase"] or "-", s["progress"] or "-", s["startedAt"] or "-",
                     _duration(s["startedAt"], s["finishedAt"], now) if s["startedAt"] else "-", "  ".join(detail)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + ("  " + r[5] if r[5] else "") for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _duration(start: str, end: str | None, now: datetime) -> str:
    def parse(t: str) -> datetime:
        return datetime.fromisoformat(t.replace("Z", "+00:00"))

    try:
        seconds = int(((parse(end) if end else now) - parse(start)).total_seconds())
    except ValueError:
        return "?"
    h, rest = divmod(max(seconds, 0), 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


# -- pull -------------------------------------------------------------------------------------------------------------


def pull(run_uri: str, stage: str, to_dir: str | Path, s3_config: Any = None) -> list[Path]:
    """Download the files a finished stage's manifest lists into `to_dir/<stage>/` (with the manifest itself),
    checking each against its sha256. Without a manifest the stage is not finished: an error, nothing written."""
    from refine_af.pipeline import stage as known_stage
    from refine_af.runner import MANIFEST, read_manifest
    from refine_af.store import FileStore, open_store

    known_stage(stage)
    store = open_store(run_uri, s3_config, check=False)
    if isinstance(store, FileStore) and not store.root.is_dir():
        raise RefineError(f"run directory {store.root} does not exist")
    manifest = read_manifest(store, stage)
    if manifest is None:
        raise RefineError(f"stage '{stage}' of run {store.uri} has no {MANIFEST}: it has not finished "
                          f"(`refine-af show --run {run_uri}` lists the finished stages)")
    files = manifest.get("files") or {}
    for rel in files:
        parts = PurePosixPath(rel).parts
        if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
            raise RefineError(f"{store.uri}/{stage}/{MANIFEST} lists the path '{rel}', outside the stage")
    dest = Path(to_dir) / stage
    made = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    # everything lands in a scratch folder first: a missing or altered file leaves the destination as it was
    scratch = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{stage}.pull-"))
    try:
        for rel, meta in files.items():
            try:
                data = store.read_bytes(f"{stage}/{rel}")
            except FileNotFoundError:
                raise RefineError(f"{store.uri}/{stage}/{rel} is listed in the stage's manifest but missing") from None
            if meta.get("sha256") and hashlib.sha256(data).hexdigest() != meta["sha256"]:
                raise RefineError(f"{store.uri}/{stage}/{rel} does not match the sha256 in the stage's manifest "
                                  "(rewritten after the stage finished?)")
            (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
            (scratch / rel).write_bytes(data)
            del data
        (scratch / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        written = []
        for rel in [*files, MANIFEST]:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(scratch / rel, target)
            written.append(target)
        return written
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        for p in made:  # innermost first: only the folders this call created, and only if still empty
            with contextlib.suppress(OSError):
                p.rmdir()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
