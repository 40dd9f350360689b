"""A local stand-in for Argo's controller and executor, for tests.

No Argo controller runs on the test machines, so this walks a rendered WorkflowTemplate's entrypoint DAG the way the
controller would (depends, when, withSequence fan-out, parameter substitution, output parameters read from files)
and runs each pod's `command + args` as a subprocess. What it does not model (images, resources, volumes, retries,
podSpecPatch) is recorded on each TaskRun for assertions. Anything it does not understand raises instead of being
guessed, so a test never passes on a workflow the real controller would reject.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refine_af.argo.lint import task_dependencies

WORKFLOW_NAME = "refine-af-test"  # what {{workflow.name}} becomes
NAMESPACE = "default"
UID = "00000000-0000-0000-0000-000000000000"
TAG = re.compile(r"\{\{(.*?)\}\}", re.S)


class WorkflowError(RuntimeError):
    """The workflow cannot run as written, or a task failed; `runs` holds what ran before."""

    def __init__(self, message: str, runs: list[TaskRun] | None = None):
        super().__init__(message)
        self.runs = runs or []


@dataclass
class TaskRun:
    name: str  # node name: the task, or `task(i)` for one pod of a fan-out
    task: str
    template: str
    phase: str  # Succeeded, Skipped (when false / empty fan-out) or Omitted (depends false)
    item: str | None = None
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # the container's env, resolved (secrets included)
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)  # output artifacts: name -> local path
    seconds: float = 0.0
    pod_dir: Path | None = None  # the pod's own directory: its /tmp and unshared volume mounts live here
    stdout: str = ""
    stderr: str = ""
    image: str | None = None
    resources: dict = field(default_factory=dict)
    retry_strategy: dict | None = None
    pod_spec_patch: str | None = None
    template_spec: dict = field(default_factory=dict)  # the whole template, for anything else a test asserts on


def _substitute(text: str, values: dict[str, str], where: str) -> str:
    def repl(m: re.Match) -> str:
        tag = m.group(1).strip()
        if tag not in values:
            raise WorkflowError(f"{where}: cannot resolve {{{{{tag}}}}}")
        return values[tag]

    return TAG.sub(repl, text)


def _path_mapper(roots: dict[str, Path]):
    """Rewrite absolute container paths under `roots` (container dir -> host dir) in a string: only at its start or
    after a separator, never inside another path or a URI (s3://bucket/tmp/x stays)."""
    alternatives = "|".join(re.escape(r.rstrip("/")) for r in sorted(roots, key=len, reverse=True))
    pattern = re.compile(rf"(?<![^\s=:,;'\"])({alternatives})(?=/|$|[\s'\";,])")
    hosts = {r.rstrip("/"): str(h) for r, h in roots.items()}
    return lambda text: pattern.sub(lambda m: hosts[m.group(1)], text)


# -- depends -------------------------------------------------------------------------------------------------------

_DEP = re.compile(r"\s*(?:(&&|\|\||!|\(|\))|([A-Za-z0-9][-A-Za-z0-9_]*)(?:\.([A-Za-z]+))?)")


def depends_true(text: str, phases: dict[str, list[str]]) -> bool:
    """Evaluate a `depends` expression; phases: task -> the phases of its nodes (one per pod of a fan-out)."""
    tokens = []
    pos, text = 0, text.strip()
    while pos < len(text):
        m = _DEP.match(text, pos)
        if not m or m.end() == pos:
            raise WorkflowError(f"depends {text!r}: bad syntax at {text[pos:]!r}")
        tokens.append(m.group(1) or (m.group(2), m.group(3)))
        pos = m.end()
    i = 0

    def operand(name: str, result: str | None) -> bool:
        if name not in phases:
            raise WorkflowError(f"depends {text!r}: {name!r} has not run")
        got = phases[name]
        overall = got[0] if len(got) == 1 else ("Succeeded" if got and all(p == "Succeeded" for p in got)
                                                 else "Skipped" if not got else "Failed")
        if result is None:
            return overall in ("Succeeded", "Skipped", "Daemoned")
        if result == "AnySucceeded":
            return "Succeeded" in got
        if result == "AllFailed":
            return bool(got) and all(p == "Failed" for p in got)
        return overall == result

    def disjunction() -> bool:
        nonlocal i
        value = conjunction()
        while i < len(tokens) and tokens[i] == "||":
            i += 1
            value = conjunction() or value
        return value

    def conjunction() -> bool:
        nonlocal i
        value = unary()
        while i < len(tokens) and tokens[i] == "&&":
            i += 1
            value = unary() and value
        return value

    def unary() -> bool:
        nonlocal i
        if i >= len(tokens):
            raise WorkflowError(f"depends {text!r}: ends early")
        tok = tokens[i]
        i += 1
        if tok == "!":
            return not unary()
        if tok == "(":
            value = disjunction()
            if i >= len(tokens) or tokens[i] != ")":
                raise WorkflowError(f"depends {text!r}: unbalanced parentheses")
            i += 1
            return value
        if isinstance(tok, tuple):
            return operand(*tok)
        raise WorkflowError(f"depends {text!r}: unexpected {tok!r}")

    value = disjunction()
    if i != len(tokens):
        raise WorkflowError(f"depends {text!r}: unexpected {tokens[i]!r}")
    return value


def when_true(text: str, where: str) -> bool:
    """Only `<true|false> == true|false` (or !=): the one form the compiled workflow uses."""
    m = re.fullmatch(r"\s*(\S+)\s*(==|!=)\s*(true|false)\s*", text)
    if not m or m.group(1) not in ("true", "false"):
        raise WorkflowError(f"{where}: unsupported when {text!r} (only '<true|false> == true|false' and '!=')")
    return (m.group(1) == m.group(3)) == (m.group(2) == "==")


# -- running -------------------------------------------------------------------------------------------------------

def _order(tasks: list[dict]) -> list[dict]:
    """Dependency order, stable in the listed order."""
    by_name = {t["name"]: t for t in tasks}
    deps = {}
    for t in tasks:
        names, problems = task_dependencies(t)
        if problems:
            raise WorkflowError(f"task {t['name']!r}: {'; '.join(problems)}")
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise WorkflowError(f"task {t['name']!r} depends on unknown {unknown}")
        deps[t["name"]] = set(names)
    done: list[dict] = []
    placed: set[str] = set()
    while len(done) < len(tasks):
        ready = [t for t in tasks if t["name"] not in placed and deps[t["name"]] <= placed]
        if not ready:
            raise WorkflowError(f"dependency cycle among {sorted(set(by_name) - placed)}")
        done.append(ready[0])
        placed.add(ready[0]["name"])
    return done


def _resolve(documents: list[dict]) -> tuple[dict[str, dict], str, dict[str, str]]:
    """(templates by name, entrypoint, workflow parameters) of the Workflow, resolved through its template ref."""
    templates_by_doc = {(d.get("metadata") or {}).get("name"): d for d in documents
                        if d.get("kind") == "WorkflowTemplate"}
    workflows = [d for d in documents if d.get("kind") == "Workflow"]
    if len(workflows) > 1:
        raise WorkflowError("more than one Workflow among the documents")
    wf_spec = (workflows[0].get("spec") or {}) if workflows else {}
    ref = wf_spec.get("workflowTemplateRef")
    if ref:
        base = templates_by_doc.get(ref.get("name"))
        if base is None:
            raise WorkflowError(f"workflowTemplateRef {ref.get('name')!r}: no such WorkflowTemplate")
        base_spec = base.get("spec") or {}
    elif workflows:
        base_spec = {}
    elif len(templates_by_doc) == 1:
        base_spec = next(iter(templates_by_doc.values())).get("spec") or {}
    else:
        raise WorkflowError("no Workflow and not exactly one WorkflowTemplate")
    params: dict[str, str] = {}
    for spec in (base_spec, wf_spec):
        for p in (spec.get("arguments") or {}).get("parameters") or []:
            if "value" in p:
                params[p["name"]] = str(p["value"])
            elif p["name"] not in params:
                params[p["name"]] = None  # type: ignore[assignment]
    missing = [n for n, v in params.items() if v is None]
    if missing:
        raise WorkflowError(f"workflow parameters without a value: {missing}")
    templates = {t["name"]: t for t in (base_spec.get("templates") or []) + (wf_spec.get("templates") or [])}
    entry = wf_spec.get("entrypoint") or base_spec.get("entrypoint")
    if entry not in templates:
        raise WorkflowError(f"entrypoint {entry!r}: no such template")
    return templates, entry, params


def run_workflow(documents: list[dict], *, secrets: dict[tuple[str, str], str], env: dict[str, str], workdir: Path,
                 path_prefix: str | None = None, mounts: dict[str, Path] | None = None,
                 timeout: float = 900) -> list[TaskRun]:
    """Run the Workflow's entrypoint DAG task by task; returns every node in the order it was decided.

    `env` is the base environment of every pod (give it PATH); `secrets[(secret name, key)]` answers secretKeyRef;
    `path_prefix` goes in front of PATH (the venv's bin, so `refine-af` is this checkout's). Container paths under
    /tmp and under each volumeMount become directories of the pod under `workdir` (in command, args, env values,
    artifact and output paths), so pods never collide and nothing writes to the host's /cache; `mounts` (container
    dir -> host dir) shares a mount across pods instead, e.g. {"/cache": tmp_path / "cache"}. Raises WorkflowError
    naming the task when one exits non-zero.
    """
    templates, entry, params = _resolve(documents)
    dag = templates[entry].get("dag")
    if not isinstance(dag, dict):
        raise WorkflowError(f"entrypoint {entry!r} is not a DAG template")
    workdir = Path(workdir)
    globals_ = {"workflow.name": WORKFLOW_NAME, "workflow.namespace": NAMESPACE, "workflow.uid": UID,
                **{f"workflow.parameters.{k}": v for k, v in params.items()}}
    # the entrypoint's own inputs come from the workflow arguments of the same name
    dag_inputs = {f"inputs.parameters.{p['name']}": str(params.get(p["name"], p.get("default", "")))
                  for p in (templates[entry].get("inputs") or {}).get("parameters") or []}
    runs: list[TaskRun] = []
    phases: dict[str, list[str]] = {}
    task_values: dict[str, str] = {}
    for task in _order(dag.get("tasks") or []):
        tname, tpl_name = task["name"], task.get("template")
        if tpl_name not in templates:
            raise WorkflowError(f"task {tname!r}: no template {tpl_name!r}", runs)
        template = templates[tpl_name]
        if task.get("depends") and not depends_true(task["depends"], phases):
            runs.append(TaskRun(tname, tname, tpl_name, "Omitted"))
            phases[tname] = ["Omitted"]
            continue
        values = {**globals_, **dag_inputs, **task_values}
        items = _items(task, values, runs)
        node_runs = []
        outputs_per_item: list[dict[str, str]] = []
        for item in items:
            node = tname if item is None else f"{tname}({item})"
            scope = values if item is None else {**values, "item": item}
            if "when" in task and not when_true(_substitute(str(task["when"]), scope, f"task {tname!r} when"),
                                                f"task {tname!r}"):
                run = TaskRun(node, tname, tpl_name, "Skipped", item=item)
            else:
                inputs = _inputs(task, template, scope, runs)
                run = _run_pod(node, tname, template, inputs, item, globals_, secrets=secrets, env=env,
                               workdir=workdir, path_prefix=path_prefix, timeout=timeout, runs=runs,
                               mounts={k.rstrip("/"): Path(v) for k, v in (mounts or {}).items()})
                outputs_per_item.append(run.outputs)
            runs.append(run)
            node_runs.append(run)
        if not node_runs:  # an empty fan-out: Argo marks the task Skipped
            runs.append(TaskRun(tname, tname, tpl_name, "Skipped"))
        phases[tname] = [r.phase for r in node_runs] or ["Skipped"]
        task_values[f"tasks.{tname}.status"] = _overall(phases[tname])
        if items == [None] and node_runs[0].phase == "Succeeded":
            task_values |= {f"tasks.{tname}.outputs.parameters.{k}": v for k, v in node_runs[0].outputs.items()}
        elif items != [None] and outputs_per_item:  # a fan-out's outputs: JSON lists over its pods, as in Argo
            for key in outputs_per_item[0]:
                task_values[f"tasks.{tname}.outputs.parameters.{key}"] = json.dumps([o[key] for o in outputs_per_item])
    return runs


def _overall(phases: list[str]) -> str:
    if len(phases) == 1:
        return phases[0]
    return "Succeeded" if all(p in ("Succeeded", "Skipped") for p in phases) else "Failed"


def _items(task: dict, values: dict[str, str], runs: list[TaskRun]) -> list[str | None]:
    where = f"task {task['name']!r}"
    if "withParam" in task:
        raise WorkflowError(f"{where}: withParam is not supported here", runs)
    if "withItems" in task:
        items = task["withItems"]
        if not all(isinstance(i, str | int | float | bool) for i in items):
            raise WorkflowError(f"{where}: only scalar withItems are supported", runs)
        return [_substitute(str(i), values, where) for i in items]
    if "withSequence" in task:
        seq = task["withSequence"]
        if set(seq) != {"count"}:
            raise WorkflowError(f"{where}: only withSequence.count is supported, got {sorted(seq)}", runs)
        count = _substitute(str(seq["count"]), values, f"{where} withSequence.count")
        if not count.strip().isdigit():
            raise WorkflowError(f"{where}: withSequence.count {count!r} is not a non-negative integer", runs)
        return [str(i) for i in range(int(count))]
    return [None]


def _inputs(task: dict, template: dict, scope: dict[str, str], runs: list[TaskRun]) -> dict[str, str]:
    where = f"task {task['name']!r}"
    declared = {p["name"]: p for p in (template.get("inputs") or {}).get("parameters") or []}
    given = {}
    for p in (task.get("arguments") or {}).get("parameters") or []:
        if p["name"] not in declared:
            raise WorkflowError(f"{where}: argument {p['name']!r} is no input of template {template['name']!r}", runs)
        given[p["name"]] = _substitute(str(p.get("value", "")), scope, f"{where} argument {p['name']!r}")
    for name, p in declared.items():
        if name not in given:
            if "value" in p or "default" in p:
                given[name] = str(p.get("value", p.get("default")))
            else:
                raise WorkflowError(f"{where}: input {name!r} of template {template['name']!r} not supplied", runs)
    if (task.get("arguments") or {}).get("artifacts"):
        raise WorkflowError(f"{where}: argument artifacts are not supported here", runs)
    return given


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


def _run_pod(node: str, task: str, template: dict, inputs: dict[str, str], item: str | None,
             globals_: dict[str, str], *, secrets: dict[tuple[str, str], str], env: dict[str, str], workdir: Path,
             path_prefix: str | None, mounts: dict[str, Path], timeout: float, runs: list[TaskRun]) -> TaskRun:
    tname = template["name"]
    where = f"task {node!r} (template {tname!r})"
    container = template.get("container")
    if not isinstance(container, dict):
        raise WorkflowError(f"{where}: only container templates run here", runs)
    pod_dir = workdir / _safe(node)
    roots = {"/tmp": pod_dir / "tmp"}
    for mount in container.get("volumeMounts") or []:  # an unshared mount acts as the pod's own emptyDir
        path = mount["mountPath"].rstrip("/")
        roots[path] = mounts.get(path, pod_dir / path.lstrip("/"))
    for host in roots.values():
        host.mkdir(parents=True, exist_ok=True)
    map_paths = _path_mapper(roots)
    values = {**globals_, **{f"inputs.parameters.{k}": v for k, v in inputs.items()}, "retries": "0",
              "pod.name": f"{WORKFLOW_NAME}-{_safe(node)}"}

    def sub(text: Any, what: str) -> str:
        return _substitute(map_paths(str(text)), values, f"{where} {what}")

    argv = [sub(a, "command") for a in container.get("command") or []]
    argv += [sub(a, "args") for a in container.get("args") or []]
    if not container.get("command"):
        raise WorkflowError(f"{where}: no command (the image's entrypoint cannot run here)", runs)

    pod_env: dict[str, str] = {}
    for var in container.get("env") or []:
        if "value" in var or "valueFrom" not in var:
            pod_env[var["name"]] = sub(var.get("value", ""), f"env {var['name']}")
            continue
        ref = (var["valueFrom"] or {}).get("secretKeyRef")
        if not ref:
            raise WorkflowError(f"{where}: env {var['name']}: only valueFrom.secretKeyRef is supported", runs)
        key = (_substitute(ref["name"], values, where), _substitute(ref["key"], values, where))
        if key in secrets:
            pod_env[var["name"]] = secrets[key]
        elif not ref.get("optional"):
            raise WorkflowError(f"{where}: env {var['name']}: secret {key[0]!r} has no key {key[1]!r}", runs)
    if container.get("envFrom"):
        raise WorkflowError(f"{where}: envFrom is not supported here", runs)

    for art in (template.get("inputs") or {}).get("artifacts") or []:
        if "raw" in art:
            path = Path(sub(art["path"], f"artifact {art['name']} path"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_substitute(str(art["raw"].get("data", "")), values, f"{where} artifact {art['name']}"))
        elif not art.get("optional"):
            raise WorkflowError(f"{where}: input artifact {art['name']!r}: only raw artifacts are supported", runs)

    full_env = {**env, **pod_env}
    if path_prefix:
        full_env["PATH"] = os.pathsep.join(p for p in (path_prefix, full_env.get("PATH")) if p)
    cwd = Path(sub(container["workingDir"], "workingDir")) if container.get("workingDir") else pod_dir
    cwd.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise WorkflowError(f"{where}: {e}", runs) from e
    except subprocess.TimeoutExpired as e:
        raise WorkflowError(f"{where}: still running after {timeout}s", runs) from e
    seconds = time.monotonic() - start
    run = TaskRun(node, task, tname, "Succeeded", item=item, argv=argv, env=pod_env, inputs=inputs,
                  seconds=seconds, pod_dir=pod_dir, stdout=proc.stdout, stderr=proc.stderr,
                  image=container.get("image"), resources=container.get("resources") or {},
                  retry_strategy=template.get("retryStrategy"), pod_spec_patch=template.get("podSpecPatch"),
                  template_spec=template)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-30:])
        raise WorkflowError(f"{where} exited {proc.returncode}; stderr tail:\n{tail}", [*runs, run])

    outputs = template.get("outputs") or {}
    for p in outputs.get("parameters") or []:
        source = p.get("valueFrom") or {}
        if "path" not in source:
            raise WorkflowError(f"{where}: output parameter {p['name']!r}: only valueFrom.path is supported", runs)
        path = Path(sub(source["path"], f"output {p['name']} path"))
        if path.is_file():
            text = path.read_text()
            run.outputs[p["name"]] = text[:-1] if text.endswith("\n") else text  # Argo trims one newline
        elif "default" in source:
            run.outputs[p["name"]] = str(source["default"])
        else:
            raise WorkflowError(f"{where}: output parameter {p['name']!r}: {source['path']} was not written and "
                                f"has no default", [*runs, run])
    for art in outputs.get("artifacts") or []:
        path = Path(sub(art["path"], f"output artifact {art['name']} path"))
        if path.exists():
            run.artifacts[art["name"]] = path
        elif not art.get("optional"):
            raise WorkflowError(f"{where}: output artifact {art['name']!r}: {art['path']} was not written",
                                [*runs, run])
    return run
