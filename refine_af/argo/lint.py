"""Offline `argo lint`: the workflow checks that no Kubernetes API server makes.

The API server (and the CRD schema behind it) checks field names, types and CEL rules only; whether a DAG task names
a real template, whether `depends` names real tasks without a cycle, and whether every `{{...}}` tag resolves is
checked by Argo's controller or `argo lint`, which need a running Argo server or its CLI. Neither exists where the
pipeline is built and tested, so the same checks are made here on the rendered documents, and a broken template
fails a unit test instead of a run on the cluster.

`lint(documents)` takes the parsed YAML documents (WorkflowTemplates and Workflows, a Workflow resolved through its
`workflowTemplateRef` against a WorkflowTemplate among them) and returns human-readable problems; [] is clean.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

GLOBALS = {"workflow.name", "workflow.namespace", "workflow.uid", "workflow.serviceAccountName",
           "workflow.mainEntrypoint", "workflow.creationTimestamp"}
POD_VARS = {"pod.name", "node.name"}  # known inside a template that makes a pod
TASK_RESULTS = {"Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned", "AnySucceeded", "AllFailed"}
TASK_ATTRS = {"id", "ip", "status", "startedAt", "finishedAt", "exitCode", "hostNodeName"}
LAST_RETRY = {"exitCode", "status", "duration", "message"}
LEAF_KINDS = ("container", "script", "resource", "suspend", "containerSet", "data", "http", "plugin")
# functions an expression may call: expr's builtins and Argo's additions; `sprig.*` is checked by prefix
FUNCTIONS = {
    "asInt", "asFloat", "string", "int", "float", "jsonpath", "toJson", "toJSON", "fromJSON", "len", "abs", "ceil",
    "floor", "round", "max", "min", "sum", "mean", "median", "all", "any", "none", "one", "filter", "map", "count",
    "find", "findIndex", "findLast", "findLastIndex", "groupBy", "sortBy", "reduce", "first", "last", "get", "keys",
    "values", "trim", "trimPrefix", "trimSuffix", "upper", "lower", "split", "splitAfter", "replace", "repeat",
    "indexOf", "lastIndexOf", "hasPrefix", "hasSuffix", "join", "reverse", "uniq", "concat", "flatten", "sort",
    "toPairs", "fromPairs", "type", "now", "duration", "date", "timezone", "toBase64", "fromBase64", "bitand",
    "bitor", "bitxor", "bitnand", "bitnot", "bitshl", "bitshr", "bitushr",
}
KEYWORDS = {"and", "or", "not", "in", "matches", "contains", "startsWith", "endsWith", "true", "false", "nil", "let",
            "if", "else"}

TAG = re.compile(r"\{\{(.*?)\}\}", re.S)
NAME = r"[A-Za-z0-9_][-A-Za-z0-9_]*"


@dataclass
class Scope:
    """What a `{{...}}` tag may name at one place in one template."""

    inputs: set[str]
    artifacts: set[str]
    workflow_params: set[str]
    tasks: dict[str, set[str]] = field(default_factory=dict)  # ancestor task -> its template's output parameters
    task_artifacts: dict[str, set[str]] = field(default_factory=dict)
    loop: bool = False  # `item` is defined (a task with withItems/withSequence/withParam)
    retries: bool = False
    pod: bool = False
    last_retry: bool = False  # retryStrategy.expression only

    def check(self, parts: list[str]) -> str | None:
        """None when the dotted reference resolves, else why not."""
        ref = ".".join(parts)
        head = parts[0]
        if head == "inputs":
            if parts[1:2] == ["parameters"]:
                if len(parts) == 2:
                    return None
                if len(parts) == 3 and parts[2] in self.inputs:
                    return None
                return f"{ref!r}: no such input parameter (declared: {sorted(self.inputs)})"
            if parts[1:2] == ["artifacts"] and len(parts) in (3, 4) and parts[2] in self.artifacts:
                if len(parts) == 3 or parts[3] == "path":
                    return None
            return f"{ref!r}: no such input"
        if head == "workflow":
            if ref in GLOBALS:
                return None
            if parts[1:2] == ["parameters"]:
                if len(parts) == 2 or (len(parts) == 3 and parts[2] in self.workflow_params):
                    return None
                return f"{ref!r}: no such workflow parameter (declared: {sorted(self.workflow_params)})"
            return f"{ref!r}: unknown workflow variable"
        if head == "tasks":
            if len(parts) < 3:
                return f"{ref!r}: incomplete task reference"
            task = parts[1]
            if task not in self.tasks:
                return f"{ref!r}: {task!r} is not a task this one depends on (directly or through others)"
            rest = parts[2:]
            if len(rest) == 1 and rest[0] in TASK_ATTRS:
                return None
            if rest[0] == "outputs":
                if rest[1:] == ["result"] or rest[1:] == ["parameters"]:
                    return None
                if len(rest) == 3 and rest[1] == "parameters":
                    if rest[2] in self.tasks[task]:
                        return None
                    return f"{ref!r}: task {task!r} has no output parameter {rest[2]!r} " \
                           f"(declared: {sorted(self.tasks[task])})"
                if len(rest) == 3 and rest[1] == "artifacts" and rest[2] in self.task_artifacts.get(task, ()):
                    return None
            return f"{ref!r}: unknown task output"
        if head == "item":
            return None if self.loop else f"{ref!r} outside a task with withItems/withSequence/withParam"
        if head == "retries" and len(parts) == 1:
            return None if self.retries else \
                "'retries' outside podSpecPatch/container fields of a template with retryStrategy"
        if head == "lastRetry" and len(parts) == 2 and parts[1] in LAST_RETRY:
            return None if self.last_retry else f"{ref!r} outside retryStrategy.expression"
        if ref in POD_VARS and self.pod:
            return None
        return f"{ref!r}: unknown variable"


def _strings(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """Every string in a nested structure with the key path that leads to it."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, sub in value.items():
            yield from _strings(sub, (*path, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _strings(sub, (*path, i))


def _split_ref(text: str) -> list[str] | None:
    """`a.b['c-d'].e` -> [a, b, c-d, e]; None if it is no plain dotted reference."""
    parts = []
    for m in re.finditer(r"\.?([^.\[\]]+)|\[\s*['\"]([^'\"]+)['\"]\s*\]", text):
        parts.append(m.group(1) or m.group(2))
    rebuilt = re.sub(r"\[\s*['\"][^'\"]+['\"]\s*\]", ".x", text)
    return parts if parts and re.fullmatch(rf"{NAME}(\.{NAME})*", rebuilt) else None


_EXPR_TOKEN = re.compile(
    r"""(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`[^`]*`)"""
    r"""|(?P<ref>[A-Za-z_$][A-Za-z0-9_$]*(?:\s*\.\s*[A-Za-z_$][A-Za-z0-9_$]*|\s*\[\s*(?:'[^']*'|"[^"]*")\s*\])*)"""
    r"""|(?P<other>.)""", re.S)


def expression_refs(expr: str) -> tuple[list[list[str]], list[str]]:
    """The variable references and called function names of an `expr` expression (strings and members skipped)."""
    refs, funcs = [], []
    prev = ""  # the last significant character before a token
    for m in _EXPR_TOKEN.finditer(expr):
        if m.group("str") is not None:
            prev = "'"
            continue
        if m.group("ref") is None:
            if not m.group("other").isspace():
                prev = m.group("other")
            continue
        text = m.group("ref")
        parts = [p or q for p, q in re.findall(r"""([A-Za-z_$][A-Za-z0-9_$]*)|['"]([^'"]*)['"]""", text)]
        after = expr[m.end():].lstrip()
        if prev == ".":
            pass  # a member of something computed, e.g. `f(x).field` or `#.field`
        elif after.startswith("("):
            funcs.append(".".join(parts))
        elif parts[0] not in KEYWORDS and not (after.startswith(":") and prev in ("{", ",")):  # skip map keys
            refs.append(parts)
        prev = "a"
    return refs, funcs


def _check_function(name: str) -> str | None:
    if name in FUNCTIONS or (name.startswith("sprig.") and name.count(".") == 1):
        return None
    return f"unknown function {name}()"


def _check_string(text: str, scope: Scope) -> list[str]:
    problems = []
    for m in TAG.finditer(text):
        tag = m.group(1).strip()
        if tag.startswith("="):
            refs, funcs = expression_refs(tag[1:])
            problems += [p for f in funcs if (p := _check_function(f))]
            problems += [f"in {{{{{tag}}}}}: {p}" for r in refs if (p := scope.check(r))]
            continue
        parts = _split_ref(tag)
        if parts is None:
            problems.append(f"{{{{{tag}}}}}: not a variable reference")
        elif p := scope.check(parts):
            problems.append(p)
    return problems


def _params(items: list | None) -> list[dict]:
    return [p for p in (items or []) if isinstance(p, dict)]


def _names(items: list | None) -> list[str]:
    return [p.get("name", "") for p in _params(items)]


def _duplicates(names: list[str]) -> list[str]:
    seen, dup = set(), []
    for n in names:
        if n in seen and n not in dup:
            dup.append(n)
        seen.add(n)
    return dup


# -- depends -------------------------------------------------------------------------------------------------------

_DEP_TOKEN = re.compile(r"\s*(?:(&&|\|\||!|\(|\))|([A-Za-z0-9][-A-Za-z0-9_]*)(?:\.([A-Za-z]+))?)")


def parse_depends(text: str) -> list[tuple[str, str | None]]:
    """The (task, result) operands of a `depends` expression; raises ValueError on bad syntax."""
    tokens: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _DEP_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"unexpected {text[pos:].strip()[:20]!r}")
        tokens.append(("op", m.group(1)) if m.group(1) else ("name", (m.group(2), m.group(3))))
        pos = m.end()
    operands: list[tuple[str, str | None]] = []
    i = 0

    def expr() -> None:
        nonlocal i
        unary()
        while i < len(tokens) and tokens[i] in (("op", "&&"), ("op", "||")):
            i += 1
            unary()

    def unary() -> None:
        nonlocal i
        if i >= len(tokens):
            raise ValueError("expression ends early")
        kind, value = tokens[i]
        i += 1
        if (kind, value) == ("op", "!"):
            unary()
        elif (kind, value) == ("op", "("):
            expr()
            if i >= len(tokens) or tokens[i] != ("op", ")"):
                raise ValueError("unbalanced parentheses")
            i += 1
        elif kind == "name":
            operands.append(value)
        else:
            raise ValueError(f"unexpected {value!r}")

    expr()
    if i != len(tokens):
        raise ValueError(f"unexpected {tokens[i][1]!r}")
    return operands


def task_dependencies(task: dict) -> tuple[list[str], list[str]]:
    """(task names a DAG task depends on, syntax problems); `depends` or the older `dependencies` list."""
    names, problems = [], []
    if isinstance(task.get("depends"), str) and task["depends"].strip():
        try:
            for name, result in parse_depends(task["depends"]):
                if result is not None and result not in TASK_RESULTS:
                    problems.append(f"depends: {name}.{result}: unknown result (one of {sorted(TASK_RESULTS)})")
                names.append(name)
        except ValueError as e:
            problems.append(f"depends {task['depends']!r}: {e}")
    names += [d for d in task.get("dependencies") or [] if isinstance(d, str)]
    return list(dict.fromkeys(names)), problems


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Each dependency cycle once, as the path that closes it."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    found = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in graph.get(node, []):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                found.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    return found


def _ancestors(graph: dict[str, list[str]], task: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.get(task, []))
    while todo:
        dep = todo.pop()
        if dep in graph and dep not in seen:
            seen.add(dep)
            todo += graph[dep]
    seen.discard(task)
    return seen


# -- templates -----------------------------------------------------------------------------------------------------

def _output_params(template: dict | None) -> set[str]:
    return set(_names((template or {}).get("outputs", {}).get("parameters")))


def _output_artifacts(template: dict | None) -> set[str]:
    return set(_names((template or {}).get("outputs", {}).get("artifacts")))


def _lint_template(tpl: dict, templates: dict[str, dict], wf_params: set[str]) -> list[str]:
    name = tpl.get("name", "?")
    where = f"template {name!r}"
    problems = []
    inputs = tpl.get("inputs") or {}
    input_names = _names(inputs.get("parameters"))
    artifacts = set(_names(inputs.get("artifacts")))
    problems += [f"{where}: input parameter {d!r} declared twice" for d in _duplicates(input_names)]
    base = dict(inputs=set(input_names), artifacts=artifacts, workflow_params=wf_params)
    retry = tpl.get("retryStrategy")

    if isinstance(retry, dict) and isinstance(retry.get("expression"), str):
        refs, funcs = expression_refs(retry["expression"])
        scope = Scope(**base, last_retry=True, retries=True)
        problems += [f"{where}: retryStrategy.expression: {p}" for f in funcs if (p := _check_function(f))]
        problems += [f"{where}: retryStrategy.expression: {p}" for r in refs if (p := scope.check(r))]

    pod = any(k in tpl for k in LEAF_KINDS)
    dag_tasks = [t for t in (tpl.get("dag") or {}).get("tasks") or [] if isinstance(t, dict)]
    for path, text in _strings({k: v for k, v in tpl.items() if k not in ("dag", "steps", "name")}):
        if path[:2] == ("retryStrategy", "expression"):
            continue
        retries_ok = retry is not None and path[0] in ("podSpecPatch", "container", "script")
        scope = Scope(**base, retries=retries_ok, pod=pod)
        if path[0] == "outputs":  # a DAG's outputs come from any of its tasks
            scope.tasks = {t.get("name"): _output_params(templates.get(t.get("template"))) for t in dag_tasks}
            scope.task_artifacts = {t.get("name"): _output_artifacts(templates.get(t.get("template")))
                                    for t in dag_tasks}
        problems += [f"{where}: {_fmt(path)}: {p}" for p in _check_string(text, scope)]

    dag = tpl.get("dag")
    if isinstance(dag, dict):
        problems += _lint_dag(name, dag, templates, base)
    return problems


def _fmt(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _lint_dag(name: str, dag: dict, templates: dict[str, dict], base: dict) -> list[str]:
    problems = []
    tasks = [t for t in dag.get("tasks") or [] if isinstance(t, dict)]
    task_names = [t.get("name", "") for t in tasks]
    problems += [f"template {name!r}: task {d!r} defined twice" for d in _duplicates(task_names)]
    by_name = {t.get("name", ""): t for t in tasks}
    graph: dict[str, list[str]] = {}
    for task in tasks:
        where = f"template {name!r} task {task.get('name')!r}"
        deps, syntax = task_dependencies(task)
        problems += [f"{where}: {p}" for p in syntax]
        for dep in deps:
            if dep not in by_name:
                problems.append(f"{where}: depends on {dep!r}, which is no task of this DAG")
            elif dep == task.get("name"):
                problems.append(f"{where}: depends on itself")
        graph[task.get("name", "")] = [d for d in deps if d in by_name]
    for cycle in _cycles(graph):
        problems.append(f"template {name!r}: dependency cycle {' -> '.join(cycle)}")
    if dag.get("target"):
        problems += [f"template {name!r}: target {t!r} is no task of this DAG"
                     for t in re.split(r"\s+", str(dag["target"]).strip()) if t not in by_name]

    for task in tasks:
        tname = task.get("name", "")
        where = f"template {name!r} task {tname!r}"
        ref = task.get("template")
        target = templates.get(ref) if isinstance(ref, str) else None
        if "templateRef" in task or "inline" in task:
            target = task.get("inline") if isinstance(task.get("inline"), dict) else None
        elif not isinstance(ref, str):
            problems.append(f"{where}: no template")
        elif target is None:
            problems.append(f"{where}: template {ref!r} does not exist")
        ancestors = _ancestors(graph, tname)
        scope = Scope(**base, tasks={a: _output_params(templates.get(by_name[a].get("template")))
                                     for a in ancestors},
                      task_artifacts={a: _output_artifacts(templates.get(by_name[a].get("template")))
                                      for a in ancestors},
                      loop=any(k in task for k in ("withItems", "withSequence", "withParam")))
        for path, text in _strings({k: v for k, v in task.items() if k not in ("name", "template", "depends")}):
            problems += [f"{where}: {_fmt(path)}: {p}" for p in _check_string(text, scope)]
        if target is not None:
            problems += [f"{where}: {p}" for p in _check_arguments(task.get("arguments") or {}, target)]
    return problems


def _check_arguments(arguments: dict, target: dict) -> list[str]:
    """A task must supply every input the template has no value for, and nothing the template does not declare."""
    problems = []
    inputs = target.get("inputs") or {}
    tname = target.get("name", "?")
    for kind, has_value in (("parameters", lambda p: any(k in p for k in ("default", "value", "valueFrom"))),
                            ("artifacts", lambda a: a.get("optional") or any(
                                k not in ("name", "path", "mode", "optional", "archive", "recurseMode",
                                          "subPath", "archiveLogs", "globalName", "deleted")
                                for k in a))):
        declared = {p.get("name"): p for p in _params(inputs.get(kind))}
        given = _names(arguments.get(kind))
        problems += [f"argument {kind[:-1]} {d!r} given twice" for d in _duplicates(given)]
        problems += [f"argument {kind[:-1]} {g!r}: template {tname!r} declares no such input" for g in given
                     if g not in declared]
        problems += [f"template {tname!r} input {kind[:-1]} {n!r} has no default and no argument"
                     for n, p in declared.items() if n not in given and not has_value(p)]
    return problems


# -- documents -----------------------------------------------------------------------------------------------------

def _lint_program(label: str, spec: dict, templates_list: list, wf_params: set[str], entrypoint: str | None,
                  entry_required: bool) -> list[str]:
    problems = []
    names = [t.get("name", "") for t in templates_list if isinstance(t, dict)]
    problems += [f"template {d!r} defined twice" for d in _duplicates(names)]
    templates = {t.get("name", ""): t for t in templates_list if isinstance(t, dict)}
    if entrypoint:
        if entrypoint not in templates:
            problems.append(f"entrypoint {entrypoint!r}: no such template (have: {sorted(templates)})")
    elif entry_required:
        problems.append("no entrypoint")
    if spec.get("onExit") and spec["onExit"] not in templates:
        problems.append(f"onExit {spec['onExit']!r}: no such template")
    # spec fields outside the templates see only the globals (arguments are data, not substituted)
    outer = {k: v for k, v in spec.items() if k not in ("templates", "arguments", "workflowTemplateRef")}
    for path, text in _strings(outer):
        problems += [f"spec.{_fmt(path)}: {p}" for p in _check_string(text, Scope(set(), set(), wf_params))]
    for tpl in templates.values():
        problems += _lint_template(tpl, templates, wf_params)
    return [f"{label}: {p}" for p in problems]


def _label(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind', '?')}/{meta.get('name') or meta.get('generateName') or '?'}"


def lint(documents: list[dict]) -> list[str]:
    """Problems `argo lint` would report for these documents (schema problems are left to the API server)."""
    docs = [d for d in documents if isinstance(d, dict)]
    wf_templates = {(d.get("metadata") or {}).get("name"): d for d in docs if d.get("kind") == "WorkflowTemplate"}
    referenced: dict[str, list[dict]] = {}
    problems: list[str] = []
    for doc in docs:
        if doc.get("kind") == "Workflow":
            ref = (doc.get("spec") or {}).get("workflowTemplateRef")
            if isinstance(ref, dict):
                referenced.setdefault(ref.get("name"), []).append(doc)
    for doc in docs:
        kind, spec, label = doc.get("kind"), doc.get("spec") or {}, _label(doc)
        own_params = _names((spec.get("arguments") or {}).get("parameters"))
        problems += [f"{label}: workflow parameter {d!r} declared twice" for d in _duplicates(own_params)]
        if kind == "WorkflowTemplate":
            name = (doc.get("metadata") or {}).get("name")
            params = set(own_params)
            for wf in referenced.get(name, []):  # a referencing Workflow may add parameters
                params |= set(_names(((wf.get("spec") or {}).get("arguments") or {}).get("parameters")))
            problems += _lint_program(label, spec, spec.get("templates") or [], params, spec.get("entrypoint"),
                                      entry_required=False)
        elif kind == "Workflow":
            ref = spec.get("workflowTemplateRef")
            if isinstance(ref, dict):
                if ref.get("clusterScope"):
                    continue  # a ClusterWorkflowTemplate: not among the documents
                base = wf_templates.get(ref.get("name"))
                if base is None:
                    problems.append(f"{label}: workflowTemplateRef {ref.get('name')!r}: no such WorkflowTemplate "
                                    f"among the documents")
                    continue
                bspec = base.get("spec") or {}
                merged = {p.get("name"): p for p in _params((bspec.get("arguments") or {}).get("parameters"))}
                for p in _params((spec.get("arguments") or {}).get("parameters")):  # merged field by field
                    merged[p.get("name")] = {**merged.get(p.get("name"), {}), **p}
                entry = spec.get("entrypoint") or bspec.get("entrypoint")
                names = {t.get("name") for t in bspec.get("templates") or [] if isinstance(t, dict)}
                names |= {t.get("name") for t in spec.get("templates") or [] if isinstance(t, dict)}
                if not entry:
                    problems.append(f"{label}: no entrypoint (neither here nor in the WorkflowTemplate)")
                elif entry not in names:
                    problems.append(f"{label}: entrypoint {entry!r}: no such template")
                problems += [f"{label}: workflow parameter {n!r} has no value" for n, p in merged.items()
                             if not any(k in p for k in ("value", "valueFrom", "default"))]
            else:
                params = _params((spec.get("arguments") or {}).get("parameters"))
                problems += [f"{label}: workflow parameter {p.get('name')!r} has no value" for p in params
                             if not any(k in p for k in ("value", "valueFrom", "default"))]
                problems += _lint_program(label, spec, spec.get("templates") or [], set(own_params),
                                          spec.get("entrypoint"), entry_required=True)
    return list(dict.fromkeys(problems))
