"""The Helm chart (helm/refine-af): its WorkflowTemplate is the compiler's, and what it renders is valid and safe.

Real helm (scripts/tools.sh puts it in build/tools/), `kubernetes-validate --strict` for the core objects (offline),
and the real API server with Argo's CRDs (k8s_api) for the Argo objects. Fast: no model, no cluster.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml
from helpers import REPO
from helpers.k8s import server_dry_run

from refine_af import __version__
from refine_af.argo import helm as chart_gen
from refine_af.argo.compile import render
from refine_af.config import ClusterConfig, RolePool, RunConfig
from refine_af.pipeline import STAGES

pytestmark = pytest.mark.slow  # runs the helm binary and kubernetes-validate

CHART = REPO / "helm" / "refine-af"
CI = CHART / "ci"
HELM = shutil.which("helm", path=f"{REPO / 'build' / 'tools'}:{Path(sys.executable).parent}") or shutil.which("helm")
VALIDATE = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
ARGO_SCHEMA = REPO.parent / "shared" / "argo" / "schema.json"
needs_helm = pytest.mark.skipif(HELM is None, reason="helm is not installed (scripts/tools.sh puts it in build/tools/)")

# obvious fakes: the only credentials a test ever hands the chart
FAKE_KEY, FAKE_SECRET = "FAKE-ACCESS-KEY-FOR-TESTS", "fake-secret-key-for-tests"
INLINE = ["--set", f"s3.accessKeyId={FAKE_KEY}", "--set", f"s3.secretAccessKey={FAKE_SECRET}"]
RELEASE, NAMESPACE = "lab", "ml"  # a release name without the chart's, so every name is <release>-refine-af-...

# one feature each (ci/ files are also the chart's examples); (helm arguments, release name)
VALUE_SETS = {
    "default": ([], "refine-af"),
    "minio": (["-f", str(CI / "minio-values.yaml")], RELEASE),
    "minio-inline-keys": (["--set", "minio.enabled=true", *INLINE], RELEASE),
    "existing-secret": (["-f", str(CI / "existing-secret-values.yaml")], RELEASE),
    "inline-keys": (INLINE, RELEASE),
    "gpu": (["-f", str(CI / "gpu-values.yaml")], RELEASE),
    "cpu-only": (["-f", str(CI / "cpu-only-values.yaml")], RELEASE),
}
TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
REGISTRY = "registry.example.com/refine-af"
# the ClusterConfig each value set stands for: helm template must give render()'s template for it
EQUIVALENT = {
    "default": ClusterConfig(),
    "minio": ClusterConfig(bucket="dev-runs", s3_secret="minio-root", service_account="lab-refine-af",
                           template_name="lab-refine-af", s3_endpoint=f"http://lab-refine-af-minio.{NAMESPACE}.svc:9000"),
    "existing-secret": ClusterConfig(bucket="team-refine-af", prefix="experiments/refine-af", s3_region="eu-west-1",
                                     s3_secret="team-s3-credentials", service_account="lab-refine-af",
                                     template_name="lab-refine-af"),
    "gpu": ClusterConfig(
        bucket="gpu-runs", s3_endpoint="https://s3.storage.example.com", s3_region="us-west-2",
        s3_secret="storage-credentials", service_account="refine-af-runner", template_name="refine-af-gpu",
        image_pull_policy="Always", shm_size="32Gi", ttl_seconds=86400, retry_limit=10, backoff="2m",
        cache_pvc="lab-refine-af-cache",
        roles={"generate": RolePool(image=f"{REGISTRY}/refine-af-generate:0.1.0-cu128", gpus=2,
                                    node_selector={"node.example.com/pool": "h100"}, tolerations=[TOLERATION],
                                    runtime_class="nvidia", priority_class="refine-af-batch"),
               "train": RolePool(image=f"{REGISTRY}/refine-af-train:{__version__}",
                                 node_selector={"node.example.com/pool": "h100"}, tolerations=[TOLERATION],
                                 runtime_class="nvidia", priority_class="refine-af-batch"),
               "cpu": RolePool(image=f"{REGISTRY}/refine-af-cpu:{__version__}",
                               node_selector={"node.example.com/pool": "general"})}),
    "inline-keys": ClusterConfig(s3_secret="lab-refine-af-s3", service_account="lab-refine-af",
                                 template_name="lab-refine-af"),
    "cpu-only": ClusterConfig(
        s3_secret="lab-refine-af-s3", service_account="lab-refine-af", template_name="lab-refine-af",
        cache_pvc="model-cache",
        roles={"generate": RolePool(image=f"refine-af-cpu:{__version__}", gpus=0),
               "train": RolePool(image=f"refine-af-cpu:{__version__}", gpus=0)}),
}


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)


@cache
def _rendered(name: str) -> tuple[dict, ...]:
    args, release = VALUE_SETS[name]
    proc = helm("template", release, str(CHART), "--namespace", NAMESPACE, *args)
    assert proc.returncode == 0, proc.stderr
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def rendered(name: str) -> list[dict]:
    """`helm template` of a value set, parsed (a fresh copy: tests may change it)."""
    return copy.deepcopy(list(_rendered(name)))


def of_kind(docs, kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def workflow_template(docs) -> dict:
    (wt,) = of_kind(docs, "WorkflowTemplate")
    return wt


def pod_specs(docs):
    """(object, pod-level securityContext, containers) of everything that makes pods."""
    for d in docs:
        if d["kind"] == "WorkflowTemplate":
            yield d, d["spec"].get("securityContext", {}), [t["container"] for t in d["spec"]["templates"]
                                                            if "container" in t]
        elif d["kind"] in ("StatefulSet", "Job", "Deployment"):
            spec = d["spec"]["template"]["spec"]
            yield d, spec.get("securityContext", {}), spec["containers"]


# -- the template is the compiler's ------------------------------------------------------------------------------------


def test_chart_files_are_generated_from_the_compiler():
    fresh = chart_gen.generate()
    assert chart_gen.OUTPUT.read_text() == fresh, \
        f"helm/refine-af/templates/workflowtemplate.yaml is stale: run {chart_gen.REGENERATE}"
    readme = chart_gen.readme(chart_gen.README.read_text(), chart_gen.VALUES.read_text())
    assert chart_gen.README.read_text() == readme, f"helm/refine-af/README.md's values table is stale: run " \
                                                   f"{chart_gen.REGENERATE}"


def test_check_entry_point_names_the_regenerate_command(tmp_path):
    stale = tmp_path / "workflowtemplate.yaml"
    stale.write_text(chart_gen.OUTPUT.read_text().replace("activeDeadlineSeconds: 600", "activeDeadlineSeconds: 60"))
    proc = subprocess.run([sys.executable, "-m", "refine_af.argo.helm", "--check", "--out", str(stale)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and f"is stale: run {chart_gen.REGENERATE}" in proc.stderr, proc.stderr
    assert subprocess.run([sys.executable, "-m", "refine_af.argo.helm", "--out", str(stale)], capture_output=True,
                          timeout=120).returncode == 0
    assert stale.read_text() == chart_gen.OUTPUT.read_text()


def test_generator_refuses_a_cluster_key_without_a_helm_value(monkeypatch):
    monkeypatch.setattr(chart_gen, "FIELDS", [f for f in chart_gen.FIELDS if f.path != "shm_size"])
    with pytest.raises(RuntimeError, match=r"cluster\.shm_size"):
        chart_gen.generate()


def _actions(text: str) -> list[str]:
    """The Go template actions of a file, as Go's lexer sees them (quoted and raw strings may hold braces)."""
    out, i = [], 0
    while (i := text.find("{{", i)) >= 0:
        j = i + 2
        while not text.startswith("}}", j):
            if text[j] in "\"`":
                quote, j = text[j], j + 1
                while text[j] != quote:
                    j += 2 if quote == '"' and text[j] == "\\" else 1
            j += 1
        out.append(text[i + 2:j].strip("- "))
        i = j + 2
    return out


def test_argo_expressions_are_escaped_and_cluster_values_are_helm_values():
    text = chart_gen.OUTPUT.read_text()
    actions = _actions(text)
    escaped = [a for a in actions if a.startswith("`")]  # {{`{{...}}`}}: Argo's, printed as is
    assert escaped and all(re.fullmatch(r"`\{\{[^`]*\}\}`", a) for a in escaped)
    helm_own = re.compile(r"(/\*|if |else$|end$|include |printf |\.Values\.|\(include )")
    assert all(helm_own.match(a) for a in actions if a not in escaped), \
        [a for a in actions if a not in escaped and not helm_own.match(a)]
    assert "{{`{{workflow.parameters.config}}`}}" in text and "{{`{{tasks.init.outputs.parameters.run}}`}}" in text
    for literal in ("refine-af-generate:", "refine-af-s3", "nvidia.com/gpu", "IfNotPresent", "604800",
                    "sizeLimit: 16Gi"):
        assert literal not in text, f"{literal} is compiled in, not a value"


@needs_helm
@pytest.mark.parametrize("name", list(EQUIVALENT))
def test_helm_template_gives_the_compilers_workflow_template(name):
    wt = workflow_template(rendered(name))
    expected, _ = render(RunConfig(cluster=EQUIVALENT[name]))
    labels = wt["metadata"].pop("labels")
    assert labels["app.kubernetes.io/name"] == expected["metadata"].pop("labels")["app.kubernetes.io/name"]
    assert labels["app.kubernetes.io/version"] == __version__ == yaml.safe_load(
        (CHART / "Chart.yaml").read_text())["appVersion"]
    assert labels["app.kubernetes.io/managed-by"] == "Helm"
    assert labels["app.kubernetes.io/instance"] == VALUE_SETS[name][1]
    assert wt == expected


# -- lint, schema, failures --------------------------------------------------------------------------------------------


@needs_helm
@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_helm_lint(name):
    args, _ = VALUE_SETS[name]
    proc = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


FAILURES = {
    "no bucket": (["--set", "s3.bucket="], "s3.bucket is empty: set it"),
    "null bucket": (["--set", "s3.bucket=null"], "s3.bucket is empty: set it"),
    "both secrets": (["--set", "s3.existingSecret=mine", *INLINE], "s3.existingSecret and s3.accessKeyId"),
    "one inline key": (["--set", f"s3.accessKeyId={FAKE_KEY}"], "only one of s3.accessKeyId and s3.secretAccessKey"),
    "minio and endpoint": (["--set", "minio.enabled=true", "--set", "s3.endpoint=https://s3.example.com", *INLINE],
                           "unset s3.endpoint or set minio.enabled=false"),
    "minio without keys": (["--set", "minio.enabled=true"], "minio.enabled needs root credentials"),
    "minio short password": (["--set", "minio.enabled=true", "--set", "s3.accessKeyId=fake",
                              "--set", "s3.secretAccessKey=fake"], "8 characters or more"),
    "two caches": (["--set", "cache.pvc.create=true", "--set", "cache.pvc.existingClaim=c"],
                   "cache.pvc.create and cache.pvc.existingClaim"),
    "unknown key": (["--set", "s3.bucketName=x"], "additional properties 'bucketName' not allowed"),
    "bad gpus": (["--set", "roles.train.gpus=-1"], "/roles/train/gpus"),
    "bad pull policy": (["--set", "workflowTemplate.imagePullPolicy=Sometimes"], "imagePullPolicy"),
    "endpoint without scheme": (["--set", "s3.endpoint=minio:9000"], "/s3/endpoint"),
}


@needs_helm
@pytest.mark.parametrize("name", list(FAILURES))
def test_bad_values_fail_saying_what_to_fix(name):
    args, message = FAILURES[name]
    proc = helm("template", RELEASE, str(CHART), *args)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


@needs_helm
def test_install_fails_with_every_problem_at_once():
    proc = helm("install", RELEASE, str(CHART), "--dry-run=client", "--set", "s3.bucket=", "--set",
                "minio.enabled=true", "--set", "s3.endpoint=https://s3.example.com")
    assert proc.returncode != 0
    assert "s3.bucket is empty" in proc.stderr and "unset s3.endpoint" in proc.stderr \
        and "minio.enabled needs root credentials" in proc.stderr, proc.stderr


def _leaves(values: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in values.items():
        path = f"{prefix}{k}"
        out |= _leaves(v, f"{path}.") if isinstance(v, dict) and v and k not in ("resources",) else {path}
    return out


def _schema_leaves(schema: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in schema.get("properties", {}).items():
        path = f"{prefix}{k}"
        out |= _schema_leaves(v, f"{path}.") if "properties" in v and k != "resources" else {path}
    return out


def test_every_value_is_documented_and_in_the_schema():
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    documented = {key for key, _, description in chart_gen.values_docs(text) if description}
    undocumented = {leaf for leaf in _leaves(values) if not any(leaf == d or leaf.startswith(f"{d}.")
                                                                 for d in documented)}
    assert not undocumented, f"values without a '# --' comment: {sorted(undocumented)}"
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert _schema_leaves(schema) - {"global"} == _leaves(values)
    readme = (CHART / "README.md").read_text()
    assert all(f"| `{key}` |" in readme for key in documented)


# -- what the chart renders --------------------------------------------------------------------------------------------


@needs_helm
@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_container_has_resources_and_a_restricted_security_context(name):
    seen = 0
    for obj, pod, containers in pod_specs(rendered(name)):
        for c in containers:
            where = f"{obj['kind']}/{obj['metadata']['name']} container {c.get('name') or c['args'][:2]}"
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
            assert sc.get("seccompProfile", pod.get("seccompProfile")) == {"type": "RuntimeDefault"}, where
            assert "privileged" not in sc and not sc.get("capabilities", {}).get("add"), where
            res = c.get("resources", {})
            assert {"cpu", "memory"} <= set(res.get("requests", {})) and "memory" in res.get("limits", {}), where
            seen += 1
    minio = name.startswith("minio")
    assert seen == len(workflow_template(rendered(name))["spec"]["templates"]) - 1 + (2 if minio else 0)
    assert bool(of_kind(rendered(name), "StatefulSet")) == bool(of_kind(rendered(name), "Job")) == minio


@needs_helm
@pytest.mark.parametrize("name, generate, train", [("default", "1", "1"), ("gpu", "2", "1"), ("cpu-only", None, None)])
def test_gpu_requests_per_role(name, generate, train):
    wt = workflow_template(rendered(name))
    want = {"generate": generate, "train": train, "cpu": None}
    for t in wt["spec"]["templates"]:
        if "container" not in t:
            continue
        role = _role_of(t["name"])
        assert t["container"]["image"] == EQUIVALENT[name].roles[role].image
        limits = t["container"]["resources"]["limits"]
        assert limits.get("nvidia.com/gpu") == want[role], (t["name"], limits)
        assert "nvidia.com/gpu" not in t["container"]["resources"]["requests"]
        if name == "gpu":
            placed = role != "cpu"
            assert t.get("tolerations") == ([TOLERATION] if placed else None), t["name"]
            assert t["nodeSelector"] == {"node.example.com/pool": "h100" if placed else "general"}
            assert t.get("priorityClassName") == ("refine-af-batch" if placed else None)
            patch = json.loads(t["podSpecPatch"])
            assert patch.get("runtimeClassName") == ("nvidia" if placed else None)


def _role_of(template: str) -> str:
    """The pod role of a template, as compile picks it: a sharded stage's merge and init run on cpu."""
    for s in STAGES:
        if template == f"{s.name}-shard":
            return s.resources.role
        if template == s.name:
            return "cpu" if s.shards else s.resources.role
    return "cpu"


@needs_helm
@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_no_literal_credentials(name):
    docs = rendered(name)
    text = yaml.safe_dump_all(list(docs))
    for d in docs:
        for c in (c for _, _, cs in pod_specs([d]) for c in cs):
            for env in c.get("env", []):
                if re.search(r"KEY|SECRET|PASSWORD|TOKEN|ROOT_USER", env["name"]):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], env
    secrets = of_kind(docs, "Secret")
    if "inline" in name:
        (secret,) = secrets
        assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
            "AWS_ACCESS_KEY_ID": FAKE_KEY, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET}
        others = yaml.safe_dump_all([d for d in docs if d["kind"] != "Secret"])
        assert FAKE_KEY not in others and FAKE_SECRET not in others
        assert base64.b64encode(FAKE_SECRET.encode()).decode() not in others
    else:
        assert secrets == [], "the chart made up a Secret the user did not give"
        assert not re.search(r"AKIA[0-9A-Z]{16}|(?i:secretAccessKey): \S", text)


@needs_helm
def test_executor_role_is_least_privilege():
    docs = rendered("gpu")
    (role,) = of_kind(docs, "Role")
    assert role["rules"] == [{"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"],
                              "verbs": ["create", "patch"]}]
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")
    (binding,) = of_kind(docs, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    sa = workflow_template(docs)["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    (account,) = of_kind(docs, "ServiceAccount")
    assert account["metadata"]["name"] == sa and account["imagePullSecrets"] == [{"name": "registry-credentials"}]


@needs_helm
@pytest.mark.parametrize("name, endpoint, insecure", [
    ("default", "s3.amazonaws.com", False), ("gpu", "s3.storage.example.com", False),
    ("minio", f"lab-refine-af-minio.{NAMESPACE}.svc:9000", True)])
def test_artifact_repository_is_the_run_bucket(name, endpoint, insecure):
    docs = rendered(name)
    (cm,) = of_kind(docs, "ConfigMap")
    assert cm["metadata"]["name"] == "artifact-repositories"
    key = cm["metadata"]["annotations"]["workflows.argoproj.io/default-artifact-repository"]
    repo = yaml.safe_load(cm["data"][key])
    secret = EQUIVALENT[name].s3_secret
    assert repo["s3"] == {"bucket": EQUIVALENT[name].bucket, "endpoint": endpoint, "insecure": insecure,
                          **({"region": EQUIVALENT[name].s3_region} if EQUIVALENT[name].s3_region else {}),
                          "accessKeySecret": {"name": secret, "key": "AWS_ACCESS_KEY_ID"},
                          "secretKeySecret": {"name": secret, "key": "AWS_SECRET_ACCESS_KEY"}}
    if ARGO_SCHEMA.is_file():  # Argo's own schema of the ConfigMap's value, unknown fields rejected
        import jsonschema

        schema = json.loads(ARGO_SCHEMA.read_text())
        for d in schema["definitions"].values():
            if "properties" in d:
                d["additionalProperties"] = False
        jsonschema.Draft202012Validator({"definitions": schema["definitions"], "$ref": "#/definitions/"
                                         "io.argoproj.workflow.v1alpha1.ArtifactRepository"}).validate(repo)


@needs_helm
def test_cache_claim_and_minio_objects():
    (pvc,) = of_kind(rendered("gpu"), "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "lab-refine-af-cache" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["storageClassName"] == "shared-nfs"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "500Gi"
    assert not of_kind(rendered("cpu-only"), "PersistentVolumeClaim")  # an existing claim: referenced, not made
    docs = rendered("minio")
    (sts,), (svc,), (job,) = of_kind(docs, "StatefulSet"), of_kind(docs, "Service"), of_kind(docs, "Job")
    assert {p.get("name"): p["port"] for p in svc["spec"]["ports"]} == {"s3": 9000, "console": 9001}
    assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    claim = sts["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim in [p["metadata"]["name"] for p in of_kind(docs, "PersistentVolumeClaim")]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    for d in docs:
        assert {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                "app.kubernetes.io/managed-by", "helm.sh/chart"} <= set(d["metadata"]["labels"]), d["kind"]


@needs_helm
def test_minio_bucket_job_creates_the_bucket(s3_endpoint):
    """The Job's own script, run here against a real S3 endpoint (moto) with the env it gets in the cluster."""
    import boto3

    (job,) = of_kind(rendered("minio-inline-keys"), "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AWS_ENDPOINT_URL"] == f"http://lab-refine-af-minio.{NAMESPACE}.svc:9000"
    env |= {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    assert container["command"][:2] == ["python", "-c"]
    argv = [sys.executable, *container["command"][1:]]
    for expect in ("created bucket refine-af", "bucket refine-af exists"):  # and again: idempotent
        proc = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and expect in proc.stdout, proc.stdout + proc.stderr
    client = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    assert "refine-af" in [b["Name"] for b in client.list_buckets()["Buckets"]]


@needs_helm
def test_notes_say_how_to_submit_the_first_run():
    proc = helm("install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE,
                "-f", str(CI / "minio-values.yaml"))
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert f"refine-af submit --via kube --namespace {NAMESPACE} --set cluster.template_name=lab-refine-af" in notes
    assert f"http://lab-refine-af-minio.{NAMESPACE}.svc:9000" in notes
    proc = helm("install", "refine-af", str(CHART), "--dry-run=client", "--namespace", NAMESPACE)
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert f"refine-af submit --via kube --namespace {NAMESPACE} --wait" in notes  # the CLI's default name
    assert "create secret generic refine-af-s3" in notes  # no Secret given: how to make the one it expects


# -- validation: offline schemas for core kinds, the real API server for Argo's ----------------------------------------


@needs_helm
@pytest.mark.skipif(VALIDATE is None, reason="kubernetes-validate is not installed (scripts/tools.sh)")
def test_core_objects_pass_kubernetes_validate_strict(tmp_path):
    files = []
    for name in VALUE_SETS:
        core = [d for d in rendered(name) if not d["apiVersion"].startswith("argoproj.io/")]
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(yaml.safe_dump_all(core, sort_keys=False))
    proc = subprocess.run([VALIDATE, "--strict", *map(str, files)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passed = re.findall(r"passed for resource (\S+)", proc.stdout)
    assert len(passed) == sum(len([d for d in rendered(n) if d["kind"] != "WorkflowTemplate"]) for n in VALUE_SETS)
    # and it does reject what a cluster would: an unknown field
    (sts,) = of_kind(rendered("minio"), "StatefulSet")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**sts, "spec": {**sts["spec"], "replicaz": 1}}))
    proc = subprocess.run([VALIDATE, "--strict", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "replicaz" in proc.stdout + proc.stderr


@needs_helm
@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")  # the test server's self-signed loopback TLS
def test_argo_objects_pass_the_api_server_and_are_created(k8s_api):
    from kubernetes import client, config

    config.load_kube_config(config_file=k8s_api["KUBECONFIG"])
    api = client.CustomObjectsApi()
    for i, name in enumerate(VALUE_SETS):
        argo = [d for d in rendered(name) if d["apiVersion"].startswith("argoproj.io/")]
        assert [d["kind"] for d in argo] == ["WorkflowTemplate"]
        proc = server_dry_run(argo, k8s_api)
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
        namespace = f"helm-{i}"  # the server does not enforce namespaces; one per value set keeps names apart
        (wt,) = argo
        api.create_namespaced_custom_object("argoproj.io", "v1alpha1", namespace, "workflowtemplates", wt,
                                            field_validation="Strict")
        stored = api.get_namespaced_custom_object("argoproj.io", "v1alpha1", namespace, "workflowtemplates",
                                                  wt["metadata"]["name"])
        assert stored["spec"] == wt["spec"], name
        api.delete_namespaced_custom_object("argoproj.io", "v1alpha1", namespace, "workflowtemplates",
                                            wt["metadata"]["name"])
