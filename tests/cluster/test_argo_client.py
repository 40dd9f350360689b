"""submit / status / pull: against a real Kubernetes API server (../shared/k8s), a local stand-in for the Argo
Server's REST API (HTTP and HTTPS with a self-signed certificate), moto's S3 and local run directories."""

from __future__ import annotations

import copy
import datetime
import hashlib
import ipaddress
import json
import re
import socket
import ssl
import threading
import types
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from refine_af.argo import client
from refine_af.cli import app
from refine_af.errors import RefineError

# the test API server's kubeconfig skips TLS verification; that is its point, not a finding
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

# -- the rendered pair ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> tuple[dict, dict]:
    """The WorkflowTemplate and Workflow of the default config, as `refine-af submit` renders them."""
    from refine_af.argo.compile import render
    from refine_af.config import load_config

    return render(load_config(None, []))


def dag_tasks(template: dict) -> list[dict]:
    [dag] = [t["dag"] for t in template["spec"]["templates"] if t["name"] == template["spec"]["entrypoint"]]
    return dag["tasks"]


@pytest.fixture(autouse=True)
def _no_argo_env(monkeypatch):
    for var in ("ARGO_SERVER", "ARGO_NAMESPACE", "ARGO_TOKEN", "ARGO_INSECURE_SKIP_VERIFY", "REQUESTS_CA_BUNDLE",
                "CURL_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def one_line_error(result, *needles: str) -> str:
    """A user error: exit 2, one line on stderr starting `error:`, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- a stand-in Argo Server -------------------------------------------------------------------------------------------


class FakeArgo:
    """The Argo Server's REST paths Hera uses for submit/status, on 127.0.0.1; records every request."""

    def __init__(self, tls: tuple[Path, Path] | None = None):
        self.requests: list[dict] = []
        self.force_status: int | None = None  # answer every request with this status
        self.finish_as: str | None = None  # the phase a created workflow has when first read
        self.workflows: dict[str, dict] = {}
        self.templates: dict[str, dict] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                fake.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                      "body": body})
                code, answer = fake.answer(self.command, self.path.split("?")[0], body)
                text = isinstance(answer, str)  # what a proxy or the UI answers where no API is
                data = answer.encode() if text else json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain" if text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*map(str, tls))
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, method: str, path: str, body: dict | None) -> tuple[int, dict | str]:
        if self.force_status:
            return self.force_status, {"code": 16, "message": f"forced {self.force_status}"}
        m = re.fullmatch(r"/api/v1/(workflows|workflow-templates)/([^/]+)(?:/([^/]+))?", path)
        if not m:
            return 404, "404 page not found\n"
        kind, ns, name = m.groups()
        store = self.workflows if kind == "workflows" else self.templates
        if method == "POST":
            obj = copy.deepcopy(body["workflow" if kind == "workflows" else "template"])
            meta = obj["metadata"]
            meta.setdefault("name", meta.get("generateName", "x-") + uuid.uuid4().hex[:5])
            meta.update(namespace=ns, resourceVersion="1")
            if kind == "workflows" and self.finish_as:  # as if the controller had run it already
                obj["status"] = {"phase": self.finish_as, "startedAt": "2025-03-01T10:00:00Z",
                                 "finishedAt": "2025-03-01T10:30:00Z"}
                if self.finish_as != "Succeeded":
                    obj["status"]["message"] = "child failed"
            store[meta["name"]] = obj
            return 200, obj
        if name not in store:
            return 404, {"code": 5, "message": f'{kind.replace("-", "")}.argoproj.io "{name}" not found'}
        if method == "PUT":
            store[name] = {**body["template"], "metadata": {**body["template"]["metadata"], "resourceVersion": "2"}}
        return 200, store[name]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no CA signed, and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return d / "cert.pem", d / "key.pem"


@pytest.fixture
def argo():
    server = FakeArgo()
    yield server
    server.close()


@pytest.fixture
def argo_tls(self_signed):
    server = FakeArgo(tls=self_signed)
    yield server
    server.close()


def test_submit_to_argo_server_sends_the_rendered_workflow(argo, rendered, monkeypatch):
    _, workflow = rendered
    monkeypatch.setenv("ARGO_TOKEN", "s3cret")
    r = invoke("submit", "--argo-server", argo.url, "--namespace", "ml")
    assert r.exit_code == 0, (r.output, r.exception)
    name = re.search(r"^submitted (refine-af-\w{5})$", r.stdout, re.M).group(1)
    assert f"ui: {argo.url}/workflows/ml/{name}" in r.stdout.splitlines()

    [req] = argo.requests  # no template request without --with-template
    assert (req["method"], req["path"]) == ("POST", "/api/v1/workflows/ml")
    assert req["headers"]["Authorization"] == "Bearer s3cret"
    assert req["body"]["workflow"] == {**workflow, "metadata": {**workflow["metadata"], "namespace": "ml"}}


def test_token_flag_with_its_own_scheme_and_a_base_path(argo, rendered):
    name = client.submit(rendered[1], via="argo", server=argo.url + "/", namespace="ml", token="Bearer abc")
    assert argo.requests[-1]["headers"]["Authorization"] == "Bearer abc"
    assert name in argo.workflows
    # a server under a path prefix keeps it (Hera urljoins its API paths onto the host)
    with pytest.raises(RefineError, match=r"did not answer as the Argo API \(404 for POST /argo/api/v1/workflows/ml\)"):
        client.submit(rendered[1], via="argo", server=argo.url + "/argo", namespace="ml")
    assert argo.requests[-1]["path"] == "/argo/api/v1/workflows/ml"


def test_with_template_creates_then_replaces_it(argo, rendered):
    template, workflow = rendered
    first = client.submit(workflow, via="argo", server=argo.url, namespace="ml", template=template)
    assert [(r["method"], r["path"]) for r in argo.requests] == [
        ("GET", "/api/v1/workflow-templates/ml/refine-af"), ("POST", "/api/v1/workflow-templates/ml"),
        ("POST", "/api/v1/workflows/ml")]
    assert argo.requests[1]["body"]["template"]["spec"] == template["spec"]
    argo.requests.clear()
    second = client.submit(workflow, via="argo", server=argo.url, namespace="ml", template=template)
    assert [r["method"] for r in argo.requests] == ["GET", "PUT", "POST"]
    assert argo.requests[1]["body"]["template"]["metadata"]["resourceVersion"] == "1"
    assert first != second and set(argo.workflows) == {first, second}


def test_https_verifies_the_certificate(argo_tls, rendered, self_signed, monkeypatch):
    r = invoke("submit", "--argo-server", argo_tls.url, "-n", "ml")
    one_line_error(r, "TLS verification", "--insecure")
    assert not argo_tls.workflows

    r = invoke("submit", "--argo-server", argo_tls.url, "-n", "ml", "--insecure")
    assert r.exit_code == 0, r.output
    assert "submitted refine-af-" in r.stdout and len(argo_tls.workflows) == 1

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(self_signed[0]))  # verification on, the CA trusted
    assert client.submit(rendered[1], via="argo", server=argo_tls.url, namespace="ml") in argo_tls.workflows


@pytest.mark.parametrize("status, needles", [
    (401, ["refused the token (401", "ARGO_TOKEN"]),
    (403, ["refused the token (403", "namespace 'ml'"]),
    (404, ["namespace 'ml' does not exist"]),
    (500, ["refused to create", "(500)", "forced 500"]),
])
def test_server_errors_are_one_line(argo, rendered, status, needles):
    argo.force_status = status
    one_line_error(invoke("submit", "--argo-server", argo.url, "-n", "ml", "--token", "t"), *needles)


def test_unreachable_server(rendered):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    line = one_line_error(invoke("submit", "--argo-server", f"http://127.0.0.1:{port}", "-n", "ml"),
                          f"cannot reach the Argo Server http://127.0.0.1:{port}")
    assert "Connection refused" in line
    one_line_error(invoke("status", "x", "-n", "ml"), "--argo-server is required")


# -- status -----------------------------------------------------------------------------------------------------------


def _controller_status(wf: dict, template: dict, phase: str = "Running") -> dict:
    """What Argo's controller keeps in status, over the rendered DAG: nodes keyed by id (a DAG root, a Retry node
    per task with its Pod attempts, a TaskGroup for the first fan-out, whose shards are still running), progress,
    output parameters, the stored template spec. Tasks after the fan-out have no node yet."""
    name = wf["metadata"]["name"]
    tasks = dag_tasks(template)
    fan = next(i for i, t in enumerate(tasks) if "withSequence" in t)
    first_output = _outputs(template, tasks[1]["template"])[0]

    def node(id_: str, display: str, type_: str, phase: str, template: str, **kw) -> dict:
        return {"id": id_, "name": f"{name}.{display}", "displayName": display, "type": type_, "phase": phase,
                "boundaryID": name, "templateName": template, **kw}

    nodes = {name: {"id": name, "name": name, "displayName": name, "type": "DAG", "phase": phase,
                    "templateName": template["spec"]["entrypoint"], "startedAt": "2025-03-01T10:00:00Z"}}
    for i, task in enumerate(tasks[:fan]):
        nodes[f"n{i}"] = node(f"n{i}", task["name"], "Retry", "Succeeded", task["template"], progress="1/1",
                              startedAt=f"2025-03-01T10:{i:02d}:00Z", finishedAt=f"2025-03-01T10:{i:02d}:09Z",
                              children=[f"n{i}-0"])
        nodes[f"n{i}-0"] = node(f"n{i}-0", f"{task['name']}(0)", "Pod", "Succeeded", task["template"])
    nodes["n0"]["outputs"] = {"parameters": [{"name": "run", "value": f"s3://refine-af/runs/{name}"},
                                             {"name": "key", "value": f"runs/{name}"},
                                             {"name": "shards-instances", "value": "2"}]}
    nodes["n1"].update(progress="40/40", finishedAt="2025-03-01T10:13:30Z", children=["n1-0", "n1-1"],
                       outputs={"parameters": [{"name": first_output, "value": "40"}]})
    nodes["n1-0"].update(phase="Failed", message="pod deleted")
    nodes["n1-1"] = node("n1-1", f"{tasks[1]['name']}(1)", "Pod", "Succeeded", tasks[1]["template"])
    shard = tasks[fan]
    nodes["fan"] = node("fan", shard["name"], "TaskGroup", phase, shard["template"], progress="5/8",
                        startedAt="2025-03-01T10:20:00Z", children=["fan-0", "fan-1"])
    nodes["fan-0"] = node("fan-0", f"{shard['name']}(0:0)", "Retry", "Succeeded", shard["template"], progress="4/4")
    nodes["fan-1"] = node("fan-1", f"{shard['name']}(1:1)", "Retry", phase, shard["template"], progress="1/4")
    return {"phase": phase, "startedAt": "2025-03-01T10:00:00Z", "progress": "3/4", "nodes": nodes,
            "storedWorkflowTemplateSpec": template["spec"],
            **({"finishedAt": "2025-03-01T11:00:00Z"} if phase in client.FINAL_PHASES else {})}


def _outputs(template: dict, name: str) -> list[str]:
    [tpl] = [t for t in template["spec"]["templates"] if t["name"] == name]
    return [p["name"] for p in (tpl.get("outputs") or {}).get("parameters") or []]


def check_status_output(text: str, name: str, template: dict) -> None:
    tasks = [t["name"] for t in dag_tasks(template)]
    fan = next(i for i, t in enumerate(dag_tasks(template)) if "withSequence" in t)
    lines = text.splitlines()
    assert re.match(rf"workflow {name}\s+Running\s+3/4\s+started 2025-03-01T10:00:00Z", lines[0])
    assert f"run: s3://refine-af/runs/{name}" in lines
    header = next(i for i, line in enumerate(lines) if re.match(r"STAGE\s+PHASE\s+PROGRESS", line))
    rows = [line for line in lines[header + 1:] if not line.startswith("ui: ")]
    # one row per task in DAG order: no rows for retry attempts "(0)" or shards "(0:0)"
    assert [r.split()[0] for r in rows] == tasks
    assert re.match(r"init\s+Succeeded\s+1/1\s+2025-03-01T10:00:00Z\s+9s\s*$", rows[0])  # wiring outputs hidden
    first_output = _outputs(template, dag_tasks(template)[1]["template"])[0]
    assert re.match(rf"{tasks[1]}\s+Succeeded\s+40/40\s+\S+\s+12m30s\s+retried 1x\s+{first_output}=40$", rows[1])
    assert re.match(rf"{tasks[fan]}\s+Running\s+5/8\s+.*shards 1/2 done$", rows[fan])
    assert all(re.match(rf"{t}(\s+-){{4}}$", row) for t, row in zip(tasks[fan + 1:], rows[fan + 1:]))  # not reached


def test_status_from_argo_server(argo, rendered):
    template, workflow = rendered
    name = client.submit(workflow, via="argo", server=argo.url, namespace="ml")
    argo.workflows[name]["status"] = _controller_status(argo.workflows[name], template)
    r = invoke("status", name, "--argo-server", argo.url, "-n", "ml")
    assert r.exit_code == 0, r.output
    check_status_output(r.stdout, name, template)
    assert r.stdout.splitlines()[-1] == f"ui: {argo.url}/workflows/ml/{name}"
    d = client.status(name, via="argo", server=argo.url, namespace="ml")
    first_output = _outputs(template, dag_tasks(template)[1]["template"])[0]
    assert d["stages"][1]["outputs"] == {first_output: "40"}
    assert d["stages"][1]["template"] == dag_tasks(template)[1]["template"]
    one_line_error(invoke("status", "refine-af-nope", "--argo-server", argo.url, "-n", "ml"),
                   "Workflow 'refine-af-nope' not found in namespace 'ml'")


@pytest.mark.parametrize("phase, code", [("Succeeded", 0), ("Failed", 1)])
def test_submit_wait_exits_with_the_outcome(argo, rendered, phase, code):
    argo.finish_as = phase
    r = invoke("submit", "--argo-server", argo.url, "-n", "ml", "--wait", "--timeout", "30")
    assert r.exit_code == code, (r.output, r.exception)
    name = re.search(r"^submitted (\S+)$", r.stdout, re.M).group(1)
    assert re.search(rf"^workflow {name}\s+{phase}\s+started 2025-03-01T10:00:00Z\s+\(30m00s\)$", r.stdout, re.M)
    assert ("message: child failed" in r.stdout) == (phase == "Failed")


def test_summarize_before_the_controller_started_it(rendered):
    template, workflow = rendered
    wf = {**workflow, "metadata": {"name": "w"}, "status": {"storedWorkflowTemplateSpec": template["spec"]}}
    d = client.summarize(wf)
    assert d["phase"] == "Pending"
    assert [s["name"] for s in d["stages"]] == [t["name"] for t in dag_tasks(template)]
    assert {s["phase"] for s in d["stages"]} == {None}
    assert client.format_status(d).startswith("workflow w  Pending\n")


# -- the Kubernetes API -----------------------------------------------------------------------------------------------


@pytest.fixture
def kube(k8s_api, monkeypatch):
    """KUBECONFIG of the test API server, a fresh namespace (the server does not enforce them), and its API."""
    from kubernetes import client as k
    from kubernetes import config

    monkeypatch.setenv("KUBECONFIG", k8s_api["KUBECONFIG"])
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cfg = k.Configuration()
    config.load_kube_config(config_file=k8s_api["KUBECONFIG"], client_configuration=cfg)
    return types.SimpleNamespace(ns=f"t-{uuid.uuid4().hex[:8]}", api=k.CustomObjectsApi(k.ApiClient(cfg)),
                                 kubeconfig=Path(k8s_api["KUBECONFIG"]))


def test_submit_via_kube_and_status(kube, rendered):
    template, workflow = rendered
    one_line_error(invoke("submit", "--via", "kube", "-n", kube.ns), "no WorkflowTemplate 'refine-af'",
                   "--with-template")

    r = invoke("submit", "--via", "kube", "-n", kube.ns, "--with-template", "--argo-server", "https://argo.example")
    assert r.exit_code == 0, (r.output, r.exception)
    name = re.search(r"^submitted (refine-af-\w+)$", r.stdout, re.M).group(1)
    assert f"ui: https://argo.example/workflows/{kube.ns}/{name}" in r.stdout

    stored = kube.api.get_namespaced_custom_object("argoproj.io", "v1alpha1", kube.ns, "workflows", name)
    assert stored["spec"] == workflow["spec"] and stored["metadata"]["generateName"] == "refine-af-"
    tpl = kube.api.get_namespaced_custom_object("argoproj.io", "v1alpha1", kube.ns, "workflowtemplates",
                                                "refine-af")
    assert tpl["spec"] == template["spec"]

    # --with-template again replaces the template (no AlreadyExists); a second workflow of its own name
    assert client.ensure_template(template, via="kube", namespace=kube.ns) == "replaced"
    again = client.submit(workflow, via="kube", namespace=kube.ns, template=template)
    assert again != name

    # a controller's status, patched in as Argo keeps it (no status subresource: the object itself)
    stored["status"] = _controller_status(stored, template)
    kube.api.replace_namespaced_custom_object("argoproj.io", "v1alpha1", kube.ns, "workflows", name, stored)
    r = invoke("status", name, "--via", "kube", "-n", kube.ns)
    assert r.exit_code == 0, (r.output, r.exception)
    check_status_output(r.stdout, name, template)
    assert "ui:" not in r.stdout  # no --argo-server: no link

    with pytest.raises(RefineError, match="still Running after 0.2 s"):
        client.wait(name, via="kube", namespace=kube.ns, timeout=0.2, poll=0.1)
    stored = kube.api.get_namespaced_custom_object("argoproj.io", "v1alpha1", kube.ns, "workflows", name)
    stored["status"] = _controller_status(stored, template, phase="Succeeded")
    kube.api.replace_namespaced_custom_object("argoproj.io", "v1alpha1", kube.ns, "workflows", name, stored)
    assert client.wait(name, via="kube", namespace=kube.ns, timeout=5, poll=0.1)["phase"] == "Succeeded"

    one_line_error(invoke("status", "refine-af-nope", "--via", "kube", "-n", kube.ns),
                   f"Workflow 'refine-af-nope' not found in namespace '{kube.ns}'")


def test_kube_rejects_what_the_crd_does_not_know(kube, rendered):
    template, workflow = rendered
    bad = copy.deepcopy(workflow)
    bad["spec"]["podGCC"] = {"strategy": "OnPodSuccess"}
    with pytest.raises(RefineError, match=r'refused to create.*unknown field "spec.podGCC"'):
        client.submit(bad, via="kube", namespace=kube.ns, template=template)


def test_kube_without_argo_crds(kube, monkeypatch):
    monkeypatch.setattr(client, "VERSION", "v9")  # a version no CRD serves, as on a cluster without Argo
    one_line_error(invoke("status", "x", "--via", "kube", "-n", kube.ns), "does not serve argoproj.io/v9 workflows",
                   "CRDs are not installed")


def test_kube_credentials_and_tls(kube, rendered, tmp_path, monkeypatch):
    _, workflow = rendered
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    one_line_error(invoke("status", "x", "--via", "kube", "-n", kube.ns), "no kubeconfig", "KUBECONFIG")

    verified = yaml.safe_load(kube.kubeconfig.read_text())  # the server's own certificate, no CA trusts it
    del verified["clusters"][0]["cluster"]["insecure-skip-tls-verify"]
    (tmp_path / "verified").write_text(yaml.safe_dump(verified))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "verified"))
    one_line_error(invoke("status", "x", "--via", "kube", "-n", kube.ns), "TLS verification", "--insecure")
    one_line_error(invoke("status", "x", "--via", "kube", "-n", kube.ns, "--insecure"), "'x' not found")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    verified["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    (tmp_path / "closed").write_text(yaml.safe_dump(verified))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "closed"))
    one_line_error(invoke("status", "x", "--via", "kube", "-n", kube.ns), "cannot reach the Kubernetes API server")


# -- pull -------------------------------------------------------------------------------------------------------------


def _finished_stage(store, stage: str, files: dict[str, bytes]) -> None:
    """A stage's outputs and its manifest as the runner writes them (files: rel -> sha256 and bytes)."""
    from refine_af.store import write_json

    for rel, data in files.items():
        store.write_bytes(f"{stage}/{rel}", data)
    store.write_bytes(f"{stage}/checkpoints/state.json", b"{}")  # not an output: pull leaves it
    write_json(store, f"{stage}/manifest.json", {
        "stage": stage, "fingerprint": "f" * 64, "counts": {"accepted": 2},
        "files": {rel: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for rel, d in files.items()}})


OUTPUTS = {"instructions.jsonl": b'{"instruction": "a"}\n', "sub/dir/stats.json": b'{"n": 2}\n'}


def test_pull_from_s3(s3_env, tmp_path):
    from refine_af.store import open_store

    bucket = s3_env()
    run = f"s3://{bucket}/runs/refine-af-abcde"
    _finished_stage(open_store(run), "instructions", OUTPUTS)
    r = invoke("pull", "--run", run, "instructions", "--to", str(tmp_path / "out"))
    assert r.exit_code == 0, (r.output, r.exception)
    assert re.match(rf"instructions: 3 files \(0\.0 MB\) in {re.escape(str(tmp_path / 'out' / 'instructions'))}$",
                    r.stdout.strip())
    got = {p.relative_to(tmp_path / "out" / "instructions").as_posix(): p.read_bytes()
           for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert {k: v for k, v in got.items() if k != "manifest.json"} == OUTPUTS
    assert json.loads(got["manifest.json"])["counts"] == {"accepted": 2}

    one_line_error(invoke("pull", "--run", run, "rl", "--to", str(tmp_path / "none")), "stage 'rl'",
                   "no manifest.json")
    assert not (tmp_path / "none").exists()


def test_pull_local_run_and_bad_input(tmp_path):
    from refine_af.store import open_store

    store = open_store(str(tmp_path / "run"))
    _finished_stage(store, "sft-refine-af", OUTPUTS)
    files = client.pull(str(tmp_path / "run"), "sft-refine-af", tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in files) == [
        "sft-refine-af/instructions.jsonl", "sft-refine-af/manifest.json", "sft-refine-af/sub/dir/stats.json"]

    to = tmp_path / "fresh" / "deeper"
    one_line_error(invoke("pull", "--run", str(tmp_path / "run"), "compare", "--to", str(to)),
                   "stage 'compare'", "has not finished")
    one_line_error(invoke("pull", "--run", str(tmp_path / "run"), "nonsense", "--to", str(to)),
                   "unknown stage 'nonsense'")
    one_line_error(invoke("pull", "--run", str(tmp_path / "nowhere"), "compare", "--to", str(to)),
                   "does not exist")
    store.write_bytes("sft-refine-af/sub/dir/stats.json", b"changed\n")  # after the manifest: pull refuses it
    one_line_error(invoke("pull", "--run", str(tmp_path / "run"), "sft-refine-af", "--to", str(to)),
                   "does not match the sha256")
    assert not (tmp_path / "fresh").exists()  # nothing written, not even the folders
