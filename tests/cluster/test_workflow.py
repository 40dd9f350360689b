"""The Argo workflow compiled from the stage graph: golden file, what each task asks for, lint, the real API server,
and the rendered YAML executed task by task against S3 with the same result as `refine-af run`."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import REPO, cli
from helpers.k8s import server_dry_run

from refine_af.argo.compile import render, to_yaml
from refine_af.argo.lint import lint
from refine_af.config import RunConfig, load_config
from refine_af.pipeline import STAGES

GOLDEN = REPO / "workflows" / "refine-af.yaml"


def _templates(template: dict) -> dict[str, dict]:
    return {t["name"]: t for t in template["spec"]["templates"]}


def test_golden_file_is_current():
    fresh = to_yaml(list(render(RunConfig())))
    assert GOLDEN.read_text() == fresh, "workflows/refine-af.yaml is stale: refine-af render > workflows/refine-af.yaml"


def test_one_template_serves_every_config():
    a, _ = render(RunConfig())
    b, workflow = render(load_config(None, ["instances.shards=8", "evaluate.include_base=false", "rl.steps=99",
                                            "run=s3://bucket/runs/x"]))
    assert a == b
    args = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    assert args["run"] == "s3://bucket/runs/x"
    assert load_config(None, text=args["config"]).instances.shards == 8  # the config travels as a parameter
    assert workflow["spec"]["workflowTemplateRef"] == {"name": "refine-af"}


def test_each_task_runs_its_stage_with_its_role():
    template, _ = render(RunConfig())
    spec, templates = template["spec"], _templates(template)
    tasks = {t["name"]: t for t in templates["pipeline"]["dag"]["tasks"]}
    images = {role: f"refine-af-{role}:" for role in ("generate", "train", "cpu")}
    for s in STAGES:
        names = [f"{s.name}-shard", s.name] if s.shards else [s.name]
        for name in names:
            t = templates[name]
            c = t["container"]
            role = "cpu" if (s.shards and name == s.name) else s.resources.role  # the merge runs on cpu
            assert c["image"].startswith(images[role]), name
            assert c["command"] == ["refine-af"] and c["args"][:4] == ["stage", s.name, "--run",
                                                                      "{{inputs.parameters.run}}"]
            gpus = c["resources"]["limits"].get("nvidia.com/gpu")
            assert gpus == ("1" if role != "cpu" else None), name
            assert ("/dev/shm" in {v["mountPath"] for v in c["volumeMounts"]}) == (role != "cpu")
            assert c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"]
            assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                            "runAsNonRoot": True}
            assert t["activeDeadlineSeconds"] == (3600 if role == "cpu" and s.shards else s.deadline)
            retry = t["retryStrategy"]
            assert int(retry["limit"]) == (6 if s.retry == "resumable" and name == names[0] else 2), name
            assert "!= 2" in retry["expression"] and "retries" in t["podSpecPatch"]
            env = {e["name"]: e for e in c["env"]}
            assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "refine-af-s3"
        if s.shards:
            assert tasks[f"{s.name}-shard"]["withSequence"]["count"].startswith("{{tasks.init.outputs.parameters.")
            assert templates[f"{s.name}-shard"]["container"]["args"][-2] == "--shard"
            assert templates[s.name]["container"]["args"][-1] == "--merge"
        final = templates[s.name]
        assert [p["name"] for p in final["outputs"]["parameters"]] == list(s.metrics)
        assert final["outputs"]["artifacts"][0]["s3"]["key"] == f"{{{{inputs.parameters.key}}}}/{s.name}/manifest.json"
        assert all(a["archive"] == {"none": {}} for a in final["outputs"]["artifacts"])
        assert set(tasks[s.name]["depends"].split(" && ")) == ({f"{s.name}-shard"} if s.shards
                                                                else {"init", *s.parents})
    assert tasks["evaluate-base"]["when"] == "{{tasks.init.outputs.parameters.enabled-evaluate-base}} == true"
    assert spec["podGC"] == {"strategy": "OnPodSuccess"} and spec["ttlStrategy"]["secondsAfterCompletion"] > 0
    assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["seccompProfile"]["type"]


def test_cluster_settings_place_the_pods():
    template, _ = render(load_config(None, [
        "cluster.roles={generate: {image: reg.local/gen:1, gpus: 2, node_selector: {pool: h100}, "
        "tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]}}",
        "cluster.cache_pvc=models", "cluster.s3_endpoint=http://minio:9000"]))
    t = _templates(template)["instructions"]
    assert t["container"]["image"] == "reg.local/gen:1" and t["nodeSelector"] == {"pool": "h100"}
    assert t["container"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert t["tolerations"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
    assert {"name": "AWS_ENDPOINT_URL", "value": "http://minio:9000"} in t["container"]["env"]
    assert _templates(template)["rl"]["container"]["image"].startswith("refine-af-train:")  # other roles keep theirs
    assert {"name": "cache", "persistentVolumeClaim": {"claimName": "models"}} in template["spec"]["volumes"]


@pytest.mark.slow
def test_render_passes_lint_and_cli_prints_both_documents():
    docs = list(render(RunConfig()))
    assert lint(docs) == []
    out = cli("render", "--set", "instances.shards=3")
    assert out.returncode == 0, out.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(out.stdout)]
    assert kinds == ["WorkflowTemplate", "Workflow"]
    bad = cli("render", "--set", "instances.shardz=3")
    assert bad.returncode == 2 and "shardz" in bad.stderr and bad.stdout == ""


def test_rendered_objects_pass_strict_server_side_validation(k8s_api, tmp_path):
    docs = list(render(load_config(None, ["cluster.cache_pvc=models", "evaluate.shards=4"])))
    result = server_dry_run(docs, k8s_api)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["workflowtemplate.argoproj.io/refine-af", result.stdout.split()[1]]
    assert result.stdout.split()[1].startswith("workflow.argoproj.io/refine-af-")
    result = server_dry_run(GOLDEN, k8s_api)
    assert result.returncode == 0, result.stderr
    # and the server does reject what Argo would: a misspelt field
    broken = json.loads(json.dumps(docs[0]))
    broken["spec"]["podGCC"] = broken["spec"].pop("podGC")
    rejected = server_dry_run([broken], k8s_api)
    assert rejected.returncode != 0 and "podGCC" in rejected.stderr


TINY = ["instructions.target=3", "instructions.prompts_per_round=2", "instructions.max_new_tokens=64",
        "rl.steps=1", "rl.batch_size=2", "rl.max_new_tokens=16", "rl.probe_prompts=2",
        "instances.per_instruction=2", "instances.max_new_tokens=40",
        "sft.epochs=1", "sft.batch_size=2", "sft.max_length=128",
        "evaluate.max_tasks=2", "evaluate.max_instances_per_task=1", "evaluate.max_new_tokens=8",
        "evaluate.max_user_oriented=1", "compare.n_boot=50", "generation.batch_size=8"]


@pytest.mark.slow
def test_rendered_workflow_runs_like_refine_af_run(s3_env, tmp_path, builtin_dir):
    """The rendered YAML, not the Python objects: every pod's command and env run here against moto's S3."""
    from helpers.argo_local import run_workflow

    from refine_af.store import open_store, read_json

    bucket = s3_env()
    endpoint = s3_env.endpoint
    config = load_config(None, [*TINY, "instances.shards=2", "evaluate.shards=2", f"cluster.bucket={bucket}",
                                f"cluster.s3_endpoint={endpoint}"])
    docs = list(yaml.safe_load_all(to_yaml(list(render(config)))))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "refine-af").symlink_to(Path(os.environ.get("REFINE_AF_CACHE", Path.home() / ".cache" / "refine-af")))
    threads = {"OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}  # the same float reductions in both
    env = {"PATH": os.environ["PATH"], "AWS_DEFAULT_REGION": "us-east-1", **threads}
    started = time.time()
    runs = run_workflow(docs, secrets={("refine-af-s3", "AWS_ACCESS_KEY_ID"): "testing",
                                       ("refine-af-s3", "AWS_SECRET_ACCESS_KEY"): "testing"},
                        env=env, workdir=tmp_path / "pods", path_prefix=str(Path(sys.executable).parent),
                        mounts={"/cache": cache})
    argo_seconds = time.time() - started
    phases = {r.name: r.phase for r in runs}
    assert phases["instances-refine-af-shard(0)"] == phases["instances-refine-af-shard(1)"] == "Succeeded"
    assert all(p == "Succeeded" for p in phases.values()), phases
    by_task = {r.name: r for r in runs}
    assert by_task["compare"].outputs["share-won"] != ""
    assert by_task["instructions"].outputs["accepted"] == "3"
    assert (by_task["compare"].artifacts["report-md"]).read_text().startswith("#")

    # the same config through the local runner, one shard each, in another prefix
    started = time.time()
    local = cli("run", "--run", f"s3://{bucket}/local", *[a for kv in TINY for a in ("--set", kv)],
                env={"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                     "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", **threads})
    local_seconds = time.time() - started
    assert local.returncode == 0, local.stderr[-3000:]
    argo_run = open_store(f"s3://{bucket}/runs/refine-af-test", config.s3)
    local_run = open_store(f"s3://{bucket}/local", config.s3)
    for s in STAGES:
        a, b = read_json(argo_run, f"{s.name}/manifest.json"), read_json(local_run, f"{s.name}/manifest.json")
        assert a["fingerprint"] == b["fingerprint"], s.name
        assert a["counts"] == b["counts"] and a["files"].keys() == b["files"].keys(), s.name
        for rel in a["files"]:
            if rel == "metrics.jsonl":  # per-step wall times: the one thing two runs cannot share
                continue
            ours, theirs = (store.read_bytes(f"{s.name}/{rel}").replace(store.uri.encode(), b"<run>")
                            for store in (argo_run, local_run))  # scores and reports name their run's location
            assert ours == theirs, f"{s.name}/{rel}"
    print(f"\nrendered workflow: {len(runs)} pods in {argo_seconds:.0f} s; refine-af run: {local_seconds:.0f} s")
