"""The stage graph compiled with Hera into one Argo WorkflowTemplate, plus a Workflow that runs it with a config.

    template, workflow = render(load_config("my-run.yaml"))     # dicts; `refine-af render` prints them as YAML

One template serves every run config: the config travels as the workflow parameter `config` (editable in the Argo
UI's submit form) and the first task, `init` (`refine-af init`), validates it, saves it to `<run>/config.yaml` and
tells the DAG what it needs to know: the run location, which switchable stages are on (`when`) and how many shards
each sharded stage fans out to. Only the `cluster` section (images and node pools per role, bucket, secret) is
compiled in; the Helm chart renders it from its values.

Every stage pod runs `refine-af stage <name> --run <run-uri>` (`--shard i/N` for a shard, `--merge` for the merge
task that follows them), the command a developer runs locally. Retries go by cause (`retry_strategy`): a pod that
was preempted, evicted or deleted is retried with backoff up to `cluster.retry_limit` times, and the stage resumes
from its checkpoints; any other first failure is retried once, with twice the memory (the `podSpecPatch` raises it
on every retry, so an OOM-killed pod gets it), except exit status 2: bad input, deterministic, never retried.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from hera.workflows import (
    DAG,
    Container,
    EmptyDirVolume,
    Env,
    Parameter,
    RawArtifact,
    S3Artifact,
    SecretEnv,
    Task,
    Workflow,
    WorkflowTemplate,
)
from hera.workflows import models as m

from refine_af import __version__
from refine_af.argo.outputs import ARTIFACTS, ENV, init_values, shards_param
from refine_af.config import ClusterConfig, RunConfig, dump_config
from refine_af.pipeline import MERGE, STAGES, Resources, Stage, validate

WORK = "/tmp/refine-af"  # the pod's scratch: the config file and the outputs Argo reads back
OUT = f"{WORK}/outputs"
CACHE = "/cache"  # models, HF and pip caches (images/ set the same); a PVC when cluster.cache_pvc is set
UID = 10001  # the images' non-root user (images/*.Dockerfile)
INIT_RESOURCES = Resources(role="cpu", cpu="500m", memory="1Gi")
MERGE_DEADLINE = 3600  # a merge reads shards and writes outputs: minutes, never hours
LABELS = {"app.kubernetes.io/name": "refine-af", "app.kubernetes.io/version": __version__,
          "app.kubernetes.io/managed-by": "refine-af"}
# a preemption, eviction or deletion is the cluster's doing: retry freely. Any other first failure but bad input
# (exit 2) once, with the memory the podSpecPatch raises on retries (an OOM kill is exit 137)
RETRY_WHEN = ('lastRetry.status == "Error" || lastRetry.message matches "(?i)evict|preempt|shutdown|deleted" '
              '|| (asInt(retries) < 1 && asInt(lastRetry.exitCode) != 2)')


def render(config: RunConfig) -> tuple[dict, dict]:
    """The WorkflowTemplate (depends on `config.cluster` only) and a Workflow running it with `config`."""
    validate()
    cluster = config.cluster
    template = _template(cluster).to_dict()
    run = config.run if config.run.startswith("s3://") else ""  # a local path means nothing in the cluster
    workflow = Workflow(
        generate_name=f"{cluster.template_name}-", labels=LABELS,
        workflow_template_ref=m.WorkflowTemplateRef(name=cluster.template_name),
        arguments=[Parameter(name="config", value=dump_config(config)), Parameter(name="run", value=run)],
    ).to_dict()
    return template, workflow


def to_yaml(documents: list[dict]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False, width=120)


# -- the template -------------------------------------------------------------------------------------------------


def _template(c: ClusterConfig) -> WorkflowTemplate:
    volumes: list[Any] = [EmptyDirVolume(name="dshm", medium="Memory", size_limit=c.shm_size)]
    if c.cache_pvc:
        volumes.append(m.Volume(name="cache", persistent_volume_claim=m.PersistentVolumeClaimVolumeSource(
            claim_name=c.cache_pvc)))
    else:
        volumes.append(EmptyDirVolume(name="cache"))
    with WorkflowTemplate(
        name=c.template_name, labels=LABELS, entrypoint="pipeline",
        annotations={"workflows.argoproj.io/description": "REFINE-AF: instruction data from a small open LLM, "
                     "refined with RL from automated feedback"},
        arguments=[Parameter(name="config", value="{}", description="The run config (YAML); {} runs the defaults"),
                   Parameter(name="run", value="", description=f"Run location; empty: s3://{c.bucket}/{c.prefix}/"
                             "<workflow name>. Resubmit with a run's location to resume it")],
        service_account_name=c.service_account, volumes=volumes,
        pod_gc=m.PodGC(strategy="OnPodSuccess"), ttl_strategy=m.TTLStrategy(seconds_after_completion=c.ttl_seconds),
        security_context=m.PodSecurityContext(run_as_non_root=True, run_as_user=UID, run_as_group=UID, fs_group=UID,
                                              seccomp_profile=m.SeccompProfile(type="RuntimeDefault")),
        pod_metadata=m.Metadata(labels={"app.kubernetes.io/name": "refine-af"}),
    ) as wt:
        init = _init_container(c)
        containers: dict[str, Container] = {}
        for s in STAGES:
            if s.shards:
                containers[f"{s.name}-shard"] = _stage_container(s, c, "shard")
                containers[s.name] = _stage_container(s, c, "merge")
            else:
                containers[s.name] = _stage_container(s, c, "run")
        with DAG(name="pipeline"):
            tasks = {"init": Task(name="init", template=init)}
            for s in STAGES:
                _stage_tasks(s, containers, tasks)
    return wt


def _stage_tasks(s: Stage, containers: dict[str, Container], tasks: dict[str, Task]) -> None:
    """The DAG tasks of one stage: itself, or its shards fanned out over a sequence and then its merge."""
    run = [Parameter(name="run", value="{{tasks.init.outputs.parameters.run}}"),
           Parameter(name="key", value="{{tasks.init.outputs.parameters.key}}")]
    when = f"{{{{tasks.init.outputs.parameters.enabled-{s.name}}}}} == true" if s.when else None
    depends = " && ".join(["init", *s.parents])
    if s.shards:
        count = f"{{{{tasks.init.outputs.parameters.{shards_param(s.shards)}}}}}"
        tasks[f"{s.name}-shard"] = Task(
            name=f"{s.name}-shard", template=containers[f"{s.name}-shard"], depends=depends, when=when,
            with_sequence=m.Sequence(count=count),
            arguments=[*run, Parameter(name="shard", value="{{item}}"), Parameter(name="shards", value=count)])
        depends = f"{s.name}-shard"
    tasks[s.name] = Task(name=s.name, template=containers[s.name], depends=depends, when=when, arguments=run)


def _init_container(c: ClusterConfig) -> Container:
    names = list(init_values(RunConfig(), "", ""))  # the parameter names; the values come from the pod
    return Container(
        name="init", image=c.roles["cpu"].image, image_pull_policy=c.image_pull_policy,
        command=["refine-af"],
        args=["init", "--config", f"{WORK}/config.yaml", "--run", "{{workflow.parameters.run}}",
              "--run-root", f"s3://{c.bucket}/{c.prefix}", "--name", "{{workflow.name}}"],
        inputs=[RawArtifact(name="config", path=f"{WORK}/config.yaml", data="{{workflow.parameters.config}}")],
        outputs=[Parameter(name=n, value_from=m.ValueFrom(path=f"{OUT}/{n}")) for n in names],
        **_pod(c, INIT_RESOURCES, "quick", 600),
    )


def _stage_container(s: Stage, c: ClusterConfig, kind: str) -> Container:
    """`kind`: run (the whole stage), shard (one slice of a sharded stage) or merge (its merge task)."""
    name = f"{s.name}-shard" if kind == "shard" else s.name
    args = ["stage", s.name, "--run", "{{inputs.parameters.run}}"]
    inputs = [Parameter(name="run"), Parameter(name="key")]
    if kind == "shard":
        args += ["--shard", "{{inputs.parameters.shard}}/{{inputs.parameters.shards}}"]
        inputs += [Parameter(name="shard"), Parameter(name="shards")]
    elif kind == "merge":
        args.append("--merge")
    outputs: list[Any] = []
    if kind != "shard":  # what the Argo UI shows: the manifest's key figures and links to small outputs
        outputs += [Parameter(name=n, value_from=m.ValueFrom(path=f"{OUT}/{n}", default="")) for n in s.metrics]
        for rel in ["manifest.json", *(s.outputs[n].path for n in s.links)]:
            outputs.append(S3Artifact(name=_artifact_name(rel), path=f"{OUT}/{ARTIFACTS}/{rel}", optional=True,
                                      key=f"{{{{inputs.parameters.key}}}}/{s.name}/{rel}",
                                      archive=m.ArchiveStrategy(none=m.NoneStrategy())))
    resources = MERGE if kind == "merge" else s.resources
    return Container(name=name, image=c.roles[resources.role].image, image_pull_policy=c.image_pull_policy,
                     command=["refine-af"], args=args, inputs=inputs, outputs=outputs,
                     **_pod(c, resources, "quick" if kind == "merge" else s.retry,
                            MERGE_DEADLINE if kind == "merge" else s.deadline))


def _pod(c: ClusterConfig, r: Resources, retry: str, deadline: int) -> dict[str, Any]:
    """Resources, environment, mounts, placement and retries of a pod of role `r.role`."""
    pool = c.roles[r.role]
    gpus = (pool.gpus if pool.gpus is not None else r.gpus) if r.role != "cpu" else 0
    limits: dict[str, Any] = {"memory": r.memory} | ({pool.gpu_resource: str(gpus)} if gpus else {})
    env: list[Any] = [Env(name=ENV, value=OUT), Env(name="REFINE_AF_CACHE", value=f"{CACHE}/refine-af"),
                      Env(name="HF_HOME", value=f"{CACHE}/huggingface"), Env(name="HOME", value=f"{CACHE}/home"),
                      Env(name="PYTHONUNBUFFERED", value="1"),
                      SecretEnv(name="AWS_ACCESS_KEY_ID", secret_name=c.s3_secret, secret_key="AWS_ACCESS_KEY_ID"),
                      SecretEnv(name="AWS_SECRET_ACCESS_KEY", secret_name=c.s3_secret,
                                secret_key="AWS_SECRET_ACCESS_KEY")]
    if c.s3_endpoint:
        env.append(Env(name="AWS_ENDPOINT_URL", value=c.s3_endpoint))
    if c.s3_region:
        env.append(Env(name="AWS_DEFAULT_REGION", value=c.s3_region))
    mounts = [m.VolumeMount(name="cache", mount_path=CACHE)]
    if r.role != "cpu":
        mounts.append(m.VolumeMount(name="dshm", mount_path="/dev/shm"))
    memory = f"{{{{=asInt(retries) > 0 ? '{_scale(r.memory, 2)}' : '{r.memory}'}}}}"  # twice as much on a retry
    runtime = {"runtimeClassName": pool.runtime_class} if pool.runtime_class else {}  # no template field: patched
    patch = json.dumps(runtime | {"containers": [{"name": "main", "resources": {"limits": {"memory": memory},
                                                                                 "requests": {"memory": memory}}}]})
    return dict(
        env=env, volume_mounts=mounts,
        resources=m.ResourceRequirements(requests={"cpu": r.cpu, "memory": r.memory}, limits=limits),
        security_context=m.SecurityContext(allow_privilege_escalation=False, run_as_non_root=True,
                                           capabilities=m.Capabilities(drop=["ALL"])),
        node_selector=pool.node_selector or None,
        tolerations=[m.Toleration(**t) for t in pool.tolerations] or None,
        priority_class_name=pool.priority_class,
        retry_strategy=m.RetryStrategy(
            limit=m.IntOrString(c.retry_limit if retry == "resumable" else 2), retry_policy="Always",
            expression=RETRY_WHEN,
            backoff=m.Backoff(duration=c.backoff, factor=m.IntOrString(2), max_duration="30m")),
        pod_spec_patch=patch, active_deadline_seconds=deadline,
    )


def _scale(quantity: str, factor: int) -> str:
    """A Kubernetes memory quantity times `factor`: 32Gi -> 64Gi."""
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity).groups()  # type: ignore[union-attr]
    return f"{int(number) * factor}{unit}"


def _artifact_name(rel: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", rel.lower()).strip("-")
