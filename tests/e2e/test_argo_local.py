"""helpers.argo_local runs a small hand-written WorkflowTemplate like Argo would; the same documents pass the real API
server's strict validation and refine_af.argo.lint, so the executor is tested on a workflow a cluster accepts."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from helpers.argo_local import WORKFLOW_NAME, WorkflowError, run_workflow
from helpers.k8s import server_dry_run

from refine_af.argo.lint import lint

OUT = "/tmp/demo/out"
INIT = """
import os, sys
out = os.environ["OUT"]
os.makedirs(out, exist_ok=True)
config = open(sys.argv[1]).read()
files = {"run": sys.argv[2], "shards": "3", "enabled-optional": "false", "greeting": config.split(":")[1].strip(),
         "token": os.environ["TOKEN"]}
for name, value in files.items():
    open(os.path.join(out, name), "w").write(value + "\\n")
"""
SHARD = """  # every shard writes the same container path: the executor keeps it per pod
import os, sys
shard, shards = sys.argv[2].split("/")
os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True)
open(sys.argv[1], "w").write(str(10 * int(shard)))
"""
MERGE = """
import json, os, sys
os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True)
open(sys.argv[1], "w").write(str(sum(int(p) for p in json.loads(sys.argv[2]))))
"""
REPORT = """
import os, sys
os.makedirs(os.environ["OUT"], exist_ok=True)
open(os.path.join(os.environ["OUT"], "summary"), "w").write(":".join(sys.argv[1:]))
os.makedirs(os.environ["CACHE"], exist_ok=True)
open(os.path.join(os.environ["CACHE"], "seen"), "w").write("yes")
"""


def container(script: str, *args: str, env: list | None = None) -> dict:
    return {"image": "python:3.12", "command": ["python", "-c", script], "args": list(args), "env": env or [],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}


def documents() -> list[dict]:
    template = {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate", "metadata": {"name": "demo"},
        "spec": {
            "entrypoint": "pipeline",
            "arguments": {"parameters": [{"name": "config", "value": "greeting: hello"},
                                         {"name": "run", "value": "s3://bucket/default"}]},
            "templates": [
                {"name": "pipeline", "dag": {"tasks": [
                    {"name": "init", "template": "init"},
                    {"name": "shard", "template": "shard", "depends": "init",
                     "withSequence": {"count": "{{tasks.init.outputs.parameters.shards}}"},
                     "arguments": {"parameters": [
                         {"name": "shard", "value": "{{item}}"},
                         {"name": "shards", "value": "{{tasks.init.outputs.parameters.shards}}"}]}},
                    {"name": "merge", "template": "merge", "depends": "shard",
                     "arguments": {"parameters": [{"name": "parts",
                                                   "value": "{{tasks.shard.outputs.parameters.part}}"}]}},
                    {"name": "optional", "template": "fail", "depends": "init",
                     "when": "{{tasks.init.outputs.parameters.enabled-optional}} == true"},
                    {"name": "report", "template": "report", "depends": "merge && optional",
                     "arguments": {"parameters": [
                         {"name": "total", "value": "{{tasks.merge.outputs.parameters.total}}"},
                         {"name": "greeting", "value": "{{tasks.init.outputs.parameters.greeting}}"}]}},
                ]}},
                {"name": "init",
                 "inputs": {"artifacts": [{"name": "config", "path": "/tmp/demo/config.yaml",
                                           "raw": {"data": "{{workflow.parameters.config}}"}}]},
                 "container": container(INIT, "/tmp/demo/config.yaml", "{{workflow.parameters.run}}", env=[
                     {"name": "OUT", "value": OUT},
                     {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "demo-secret", "key": "token"}}}]),
                 "outputs": {"parameters": [{"name": n, "valueFrom": {"path": f"{OUT}/{n}"}}
                                            for n in ("run", "shards", "enabled-optional", "greeting", "token")]}},
                {"name": "shard", "inputs": {"parameters": [{"name": "shard"}, {"name": "shards"}]},
                 "retryStrategy": {"limit": 2, "retryPolicy": "Always", "expression": "lastRetry.exitCode != 2"},
                 "container": container(SHARD, f"{OUT}/part",
                                        "{{inputs.parameters.shard}}/{{inputs.parameters.shards}}"),
                 "outputs": {"parameters": [{"name": "part", "valueFrom": {"path": f"{OUT}/part"}}]}},
                {"name": "merge", "inputs": {"parameters": [{"name": "parts"}]},
                 "container": container(MERGE, f"{OUT}/total", "{{inputs.parameters.parts}}"),
                 "outputs": {"parameters": [{"name": "total", "valueFrom": {"path": f"{OUT}/total"}},
                                            {"name": "note", "valueFrom": {"path": f"{OUT}/none", "default": "-"}}]}},
                {"name": "fail", "container": container("import sys; sys.exit(1)")},
                {"name": "report", "inputs": {"parameters": [{"name": "total"}, {"name": "greeting"},
                                                             {"name": "who", "default": "{{workflow.name}}"}]},
                 "container": container(REPORT, "{{inputs.parameters.total}}", "{{inputs.parameters.greeting}}",
                                        "{{workflow.name}}", env=[{"name": "OUT", "value": OUT},
                                                                  {"name": "CACHE", "value": "/cache/models"}]),
                 "outputs": {"parameters": [{"name": "summary", "valueFrom": {"path": f"{OUT}/summary"}}]}},
            ],
            "volumes": [{"name": "cache", "emptyDir": {}}]}}
    report = template["spec"]["templates"][-1]
    report["container"]["volumeMounts"] = [{"name": "cache", "mountPath": "/cache"}]
    workflow = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "demo-"},
                "spec": {"workflowTemplateRef": {"name": "demo"},
                         "arguments": {"parameters": [{"name": "run", "value": "s3://bucket/runs/1"}]}}}
    return [template, workflow]


SECRETS = {("demo-secret", "token"): "s3cret"}


def run(tmp_path: Path, docs: list[dict] | None = None, secrets=None):
    return run_workflow(docs or documents(), secrets=SECRETS if secrets is None else secrets,
                        env={"PATH": os.environ.get("PATH", "")}, workdir=tmp_path,
                        path_prefix=str(Path(sys.executable).parent))


def test_sample_is_lint_clean():
    assert lint(documents()) == []


def test_runs_the_dag(tmp_path):
    runs = run(tmp_path)
    by_name = {r.name: r for r in runs}
    assert [r.name for r in runs] == ["init", "shard(0)", "shard(1)", "shard(2)", "merge", "optional", "report"]
    init = by_name["init"]
    # the Workflow's argument overrides the template's default; the config artifact came from the other one
    assert init.outputs == {"run": "s3://bucket/runs/1", "shards": "3", "enabled-optional": "false",
                            "greeting": "hello", "token": "s3cret"}
    assert init.env["TOKEN"] == "s3cret" and init.env["OUT"] == str(tmp_path / "init" / "tmp" / "demo" / "out")
    assert init.argv[3] == str(tmp_path / "init" / "tmp" / "demo" / "config.yaml")
    # three pods wrote the same container path without colliding
    assert [by_name[f"shard({i})"].outputs["part"] for i in range(3)] == ["0", "10", "20"]
    assert by_name["shard(2)"].argv[-1] == "2/3" and by_name["shard(2)"].item == "2"
    assert by_name["shard(0)"].retry_strategy["limit"] == 2
    assert by_name["merge"].inputs["parts"] == json.dumps(["0", "10", "20"])
    assert by_name["merge"].outputs == {"total": "30", "note": "-"}
    assert by_name["optional"].phase == "Skipped" and by_name["optional"].argv == []
    # depends on a skipped task still runs
    assert by_name["report"].phase == "Succeeded"
    assert by_name["report"].outputs["summary"] == f"30:hello:{WORKFLOW_NAME}"
    assert by_name["report"].inputs["who"] == "{{workflow.name}}"  # a default is a literal, as in Argo
    assert all(r.seconds > 0 for r in runs if r.phase == "Succeeded")
    # a volume mount is the pod's own directory unless shared
    assert (tmp_path / "report" / "cache" / "models" / "seen").read_text() == "yes"


def test_shared_mount(tmp_path):
    runs = run_workflow(documents(), secrets=SECRETS, env={"PATH": os.environ.get("PATH", "")},
                        workdir=tmp_path / "pods", path_prefix=str(Path(sys.executable).parent),
                        mounts={"/cache/": tmp_path / "shared"})
    assert runs[-1].env["CACHE"] == str(tmp_path / "shared" / "models")
    assert (tmp_path / "shared" / "models" / "seen").is_file()


def test_when_true_runs_the_task_and_its_failure_names_it(tmp_path):
    docs = documents()
    init_script = docs[0]["spec"]["templates"][1]["container"]["command"]
    init_script[2] = init_script[2].replace('"enabled-optional": "false"', '"enabled-optional": "true"')
    fail = next(t for t in docs[0]["spec"]["templates"] if t["name"] == "fail")
    fail["container"]["command"][2] = "import sys; print('boom at step 3', file=sys.stderr); sys.exit(1)"
    with pytest.raises(WorkflowError, match=r"(?s)task 'optional'.*exited 1.*boom at step 3") as e:
        run(tmp_path, docs)
    assert [r.name for r in e.value.runs][-1] == "optional"


def test_missing_secret_is_an_error(tmp_path):
    with pytest.raises(WorkflowError, match="secret 'demo-secret' has no key 'token'"):
        run(tmp_path, secrets={})


def test_only_simple_when_is_supported(tmp_path):
    docs = documents()
    docs[0]["spec"]["templates"][0]["dag"]["tasks"][3]["when"] = "{{tasks.init.outputs.parameters.shards}} > 2"
    with pytest.raises(WorkflowError, match="unsupported when"):
        run(tmp_path, docs)


def test_unresolved_reference_is_an_error(tmp_path):
    docs = documents()
    docs[0]["spec"]["templates"][0]["dag"]["tasks"][4]["arguments"]["parameters"][0]["value"] = \
        "{{tasks.optional.outputs.parameters.total}}"  # a skipped task has no outputs
    with pytest.raises(WorkflowError, match=r"task 'report'.*cannot resolve"):
        run(tmp_path, docs)


def test_empty_fan_out_is_skipped_and_dependents_run(tmp_path):
    docs = documents()
    init_script = docs[0]["spec"]["templates"][1]["container"]["command"]
    init_script[2] = init_script[2].replace('"shards": "3"', '"shards": "0"')
    docs[0]["spec"]["templates"][0]["dag"]["tasks"][2]["arguments"]["parameters"][0]["value"] = "[]"
    runs = {r.name: r for r in run(tmp_path, docs)}
    assert runs["shard"].phase == "Skipped" and "shard(0)" not in runs
    assert runs["merge"].phase == "Succeeded" and runs["merge"].outputs["total"] == "0"


def test_sample_passes_strict_server_validation(k8s_api):  # noqa: F811
    result = server_dry_run(documents(), k8s_api)
    assert result.returncode == 0, result.stderr
    assert "workflowtemplate.argoproj.io/demo" in result.stdout


def test_server_rejects_an_unknown_field(k8s_api):  # noqa: F811
    docs = documents()
    docs[0]["spec"]["podGCC"] = {"strategy": "OnPodSuccess"}
    result = server_dry_run(docs, k8s_api)
    assert result.returncode != 0 and 'unknown field "spec.podGCC"' in result.stderr
