"""The Helm chart's WorkflowTemplate, generated from the compiler so the two cannot drift.

    python -m refine_af.argo.helm            # rewrites templates/workflowtemplate.yaml and README.md's values table
    python -m refine_af.argo.helm --check    # exit 1 when either committed file is stale

`render()` is called with a probe `ClusterConfig` whose values are sentinels, and the template it returns is written
out as a Helm template in which each sentinel is the Helm value that sets it (`FIELDS` maps every `cluster.*` key to
its expression). Values that change the template's shape rather than a scalar (an endpoint adds an env var, a cache
claim swaps a volume, a node selector adds a key) are found by rendering once more with the value unset and diffing:
what differs becomes a `{{- if }}` block. Every other `{{...}}` in the template is Argo's and is escaped for Helm.
The GPU request is the one rule written by hand: `roles.<role>.gpus` overrides the stage's count, and 0 drops it.

The generator refuses a `ClusterConfig` field that `FIELDS` does not map, a sentinel left in the output, or two
values that change the same part of the template, so a compiler change either flows into the chart or fails here.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import yaml

from refine_af.argo.compile import render
from refine_af.config import ClusterConfig, RolePool, RunConfig

CHART = Path(__file__).resolve().parents[2] / "helm" / "refine-af"
OUTPUT = CHART / "templates" / "workflowtemplate.yaml"
REGENERATE = "python -m refine_af.argo.helm"
ROLES = ("generate", "train", "cpu")
GPU_ROLES = ("generate", "train")  # compile gives cpu pods no GPUs, whatever their pool says


@dataclass(frozen=True)
class Field:
    """One `cluster.*` key: the Go template expression of its Helm value and how it shows in the template."""

    path: str  # ClusterConfig attribute path: "bucket", "roles.generate.node_selector"
    expr: str  # a Go template operand: .Values.x or (include "..." .)
    kind: str = "value"  # value: substituted | optional: unset leaves something out | enum: diffed, no sentinel
    alternative: Any = None  # enum: a second value to diff against


def _fields() -> list[Field]:
    out = [
        Field("bucket", ".Values.s3.bucket"),
        Field("prefix", ".Values.s3.prefix"),
        Field("s3_endpoint", '(include "refine-af.s3Endpoint" .)', "optional"),
        Field("s3_region", ".Values.s3.region", "optional"),
        Field("s3_secret", '(include "refine-af.s3SecretName" .)'),
        Field("service_account", '(include "refine-af.serviceAccountName" .)'),
        Field("template_name", '(include "refine-af.workflowTemplateName" .)'),
        Field("image_pull_policy", ".Values.workflowTemplate.imagePullPolicy", "enum", "Always"),
        Field("shm_size", ".Values.workflowTemplate.shmSize"),
        Field("cache_pvc", '(include "refine-af.cacheClaim" .)', "optional"),
        Field("ttl_seconds", ".Values.workflowTemplate.ttlSecondsAfterFinished"),
        Field("retry_limit", ".Values.workflowTemplate.retryLimit"),
        Field("backoff", ".Values.workflowTemplate.retryBackoff"),
    ]
    for role in ROLES:
        pool = f".Values.roles.{role}"
        out += [
            Field(f"roles.{role}.image", f'(include "refine-af.image" (list . "{role}"))'),
            Field(f"roles.{role}.node_selector", f"{pool}.nodeSelector", "optional"),
            Field(f"roles.{role}.tolerations", f"{pool}.tolerations", "optional"),
            Field(f"roles.{role}.runtime_class", f"{pool}.runtimeClassName", "optional"),
            Field(f"roles.{role}.priority_class", f"{pool}.priorityClassName", "optional"),
        ]
    return out


FIELDS = _fields()
# covered by the GPU rule (_gpu_entry), or never rendered (cpu pods get no GPUs)
BY_HAND = {f"roles.{r}.{k}" for r in ROLES for k in ("gpus", "gpu_resource")}


def _unset(f: Field) -> Any:
    return {"node_selector": {}, "tolerations": []}.get(f.path.rsplit(".", 1)[-1])


# -- the probe: sentinels in, template out -----------------------------------------------------------------------------


def _sentinel(i: int) -> str:
    return f"zqx{i:02d}xqz"  # a DNS label, so every field accepts it; found nowhere else in a template


def _probes() -> dict[str, Any]:
    """A sentinel value per field path (ints where the field is an int, whole objects for maps and lists)."""
    probes: dict[str, Any] = {}
    for i, f in enumerate(FIELDS):
        leaf = f.path.rsplit(".", 1)[-1]
        if f.kind == "enum":
            probes[f.path] = "Never"
        elif leaf in ("ttl_seconds", "retry_limit"):
            probes[f.path] = 900_000_000 + i
        elif leaf == "node_selector":
            probes[f.path] = {_sentinel(i): _sentinel(i)}
        elif leaf == "tolerations":
            probes[f.path] = [{"key": _sentinel(i), "operator": "Exists"}]
        else:
            probes[f.path] = _sentinel(i)
    for j, role in enumerate(GPU_ROLES):
        probes[f"roles.{role}.gpu_resource"] = _sentinel(90 + j)
    return probes


def _cluster(values: dict[str, Any]) -> ClusterConfig:
    top = {k: v for k, v in values.items() if "." not in k}
    roles = {}
    for role in ROLES:
        pool = {k.split(".", 2)[2]: v for k, v in values.items() if k.startswith(f"roles.{role}.")}
        roles[role] = RolePool(**pool)
    return ClusterConfig(**top, roles=roles)


def _render(values: dict[str, Any]) -> dict:
    template, _ = render(RunConfig(cluster=_cluster(values)))
    return template


# -- diffing a render against one with a value unset -------------------------------------------------------------------


@dataclass
class _Edits:
    """Where one field changes the template's shape, in the coordinates of the probe render."""

    values: dict[tuple, tuple[str, Any]] = field(default_factory=dict)  # path -> (cond, value when unset)
    keys: dict[tuple, str] = field(default_factory=dict)  # path of a key only there when cond
    other_keys: dict[tuple, list] = field(default_factory=dict)  # dict path -> [(cond, key, value when unset)]
    items: dict[tuple, list] = field(default_factory=dict)  # list path -> [(cond, i1, i2, items when unset)]
    owner: dict[tuple, str] = field(default_factory=dict)  # region -> field path, to refuse overlaps

    def claim(self, region: tuple, who: str) -> None:
        for other, by in self.owner.items():
            if by != who and (other[:len(region)] == region or region[:len(other)] == other):
                raise RuntimeError(f"cluster.{who} and cluster.{by} change the same part of the template "
                                   f"({'/'.join(map(str, region))}); refine_af/argo/helm.py cannot express it")
        self.owner[region] = who


def _canon(x: Any) -> str:
    return json.dumps(x, sort_keys=True)


def _diff(a: Any, b: Any, path: tuple, cond: str, who: str, edits: _Edits) -> None:
    """Record how `a` (the probe) differs from `b` (the probe with one field changed)."""
    if a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in a:
            if k in b:
                _diff(a[k], b[k], (*path, k), cond, who, edits)
            else:
                edits.claim((*path, k), who)
                edits.keys[(*path, k)] = cond
        for k in b:
            if k not in a:
                edits.claim((*path, k), who)
                edits.other_keys.setdefault(path, []).append((cond, k, b[k]))
    elif isinstance(a, list) and isinstance(b, list):
        ops = SequenceMatcher(None, [_canon(x) for x in a], [_canon(x) for x in b], autojunk=False).get_opcodes()
        for op, i1, i2, j1, j2 in ops:
            if op == "equal":
                continue
            if op == "replace" and i2 - i1 == j2 - j1:
                for i, j in zip(range(i1, i2), range(j1, j2)):
                    _diff(a[i], b[j], (*path, i), cond, who, edits)
            else:
                edits.claim((*path, f"{i1}:{i2}"), who)
                edits.items.setdefault(path, []).append((cond, i1, i2, b[j1:j2]))
    else:
        edits.claim(path, who)
        edits.values[path] = (cond, b)


# -- the tree written out ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ref:
    """A scalar, map or list from Helm: `{{ expr | toJson }}` (JSON is YAML, with every escape done by Helm)."""

    expr: str


@dataclass(frozen=True)
class _Fmt:
    """A string made of literals and Helm values: `{{ printf "..%v.." a b | toJson }}`."""

    parts: tuple


@dataclass(frozen=True)
class _Include:
    """A block from a chart helper, e.g. the chart's labels."""

    expr: str


@dataclass
class _If:
    """A value (then, other), or map entries / list items (lists of them), chosen by a Go template condition."""

    cond: str
    then: Any
    other: Any = None


class _Map(list):  # [(key, value) | _If of entries]
    pass


class _Seq(list):  # [value | _If of items]
    pass


def _build(node: Any, path: tuple, edits: _Edits) -> Any:
    """The probe render as a tree of _Map/_Seq with the edits of every optional field applied."""
    if path in edits.values:
        cond, other = edits.values[path]
        return _If(cond, _build_plain(node, path, edits), other)
    return _build_plain(node, path, edits)


def _build_plain(node: Any, path: tuple, edits: _Edits) -> Any:
    if isinstance(node, dict):
        out = _Map()
        for k, v in node.items():
            entry = (k, _build(v, (*path, k), edits))
            cond = edits.keys.get((*path, k))
            out.append(_If(cond, [entry], []) if cond else entry)
        for cond, k, v in edits.other_keys.get(path, []):
            out.append(_If(cond, [], [(k, v)]))
        return _merge_ifs(out, _Map)
    if isinstance(node, list):
        out = _Seq()
        spans = {i1: (cond, i2, other) for cond, i1, i2, other in edits.items.get(path, [])}
        i = 0
        while i <= len(node):
            if i in spans:
                cond, i2, other = spans.pop(i)
                out.append(_If(cond, [_build(node[k], (*path, k), edits) for k in range(i, i2)], list(other)))
                if i2 > i:
                    i = i2
                    continue
            if i < len(node):
                out.append(_build(node[i], (*path, i), edits))
            i += 1
        return _merge_ifs(out, _Seq)
    return node


def _merge_ifs(entries: list, kind: type) -> list:
    """Adjacent blocks on one condition become one if/else (a cache claim or an emptyDir)."""
    out = kind()
    for e in entries:
        if isinstance(e, _If) and out and isinstance(out[-1], _If) and out[-1].cond == e.cond:
            out[-1] = _If(e.cond, out[-1].then + e.then, (out[-1].other or []) + (e.other or []))
        else:
            out.append(e)
    return out


class _Substitute:
    """Sentinels to Helm values, everywhere in the tree (the else branches hold the other fields' sentinels too)."""

    def __init__(self, probes: dict[str, Any], exprs: dict[str, str]):
        self.exact = [(v, exprs[p]) for p, v in probes.items() if p in exprs]
        self.strings = {v: exprs[p] for p, v in probes.items() if isinstance(v, str) and p in exprs and
                        v.startswith("zqx")}
        self.gpu_keys = {probes[f"roles.{r}.gpu_resource"]: r for r in GPU_ROLES}
        self.used: set[str] = set()

    def __call__(self, node: Any) -> Any:
        plain = _plain(node)
        for value, expr in self.exact:
            if type(plain) is type(value) and plain == value and not isinstance(plain, bool):
                self.used.add(expr)
                return _Ref(expr)
        if isinstance(node, _If):
            return _If(node.cond, self(node.then), self(node.other))
        if isinstance(node, _Map | dict):
            return _Map(self._entry(e) for e in (node.items() if isinstance(node, dict) else node))
        if isinstance(node, _Seq | list):
            return (_Seq if isinstance(node, _Seq) else list)(self(x) for x in node)
        if isinstance(node, str) and "zqx" in node:
            parts = [p for p in re.split(r"(zqx\d\dxqz)", node) if p]
            for p in parts:
                if p.startswith("zqx") and p not in self.strings:
                    raise RuntimeError(f"a sentinel no field maps ({p}) in {node!r}")
            self.used.update(self.strings[p] for p in parts if p in self.strings)
            return _Fmt(tuple(_Ref(self.strings[p]) if p in self.strings else p for p in parts))
        return node

    def _entry(self, e: Any) -> Any:
        if isinstance(e, _If):
            return _If(e.cond, [self._entry(x) for x in e.then], [self._entry(x) for x in e.other or []])
        k, v = e
        if k in self.gpu_keys:
            return _gpu_entry(self.gpu_keys[k], v)
        if isinstance(k, str) and "zqx" in k:
            raise RuntimeError(f"a sentinel as a map key: {k}")
        return (k, self(v))


def _plain(node: Any) -> Any:
    """A built node as dicts and lists again, or None where it holds Helm parts."""
    if isinstance(node, _Map):
        if any(isinstance(e, _If) for e in node):
            return None
        return {k: _plain(v) for k, v in node}
    if isinstance(node, _Seq):
        return [_plain(x) for x in node]
    return None if isinstance(node, _If | _Ref | _Fmt | _Include) else node


def _gpu_entry(role: str, stage_count: str) -> _If:
    """`<gpuResource>: "<n>"` in a GPU role's limits: the pool's count or the stage's, none when it is 0."""
    pool = f".Values.roles.{role}"
    count = f'(include "refine-af.gpus" (list {pool} {json.dumps(stage_count)}))'
    return _If(f'ne {count} "0"', [(_Ref(f"{pool}.gpuResource"), _Ref(count))], [])


# -- writing YAML with Helm actions ------------------------------------------------------------------------------------

_ARGO = re.compile(r"\{\{.*?\}\}")


def _escape(text: str) -> str:
    """Literal text for Helm: each Argo {{...}} inside a Go raw string, so Helm prints it as is."""
    def raw(m: re.Match) -> str:
        if "`" in m.group(0):
            raise RuntimeError(f"a backtick in {m.group(0)!r}: cannot escape it as a Go raw string")
        return "{{`" + m.group(0) + "`}}"
    out = _ARGO.sub(raw, text)
    if "{{" in _ARGO.sub("", out.replace("{{`", "").replace("`}}", "")):
        raise RuntimeError(f"unbalanced braces in {text!r}")
    return out


def _scalar(v: Any) -> str:
    if isinstance(v, str) and "\n" in v:
        return json.dumps(v)
    return yaml.safe_dump({"k": v}, width=float("inf"), allow_unicode=True).removeprefix("k: ").rstrip("\n")


def _go_string(s: str) -> str:
    return json.dumps(s)  # JSON string escapes are Go's


def _inline(v: Any) -> str:
    if isinstance(v, _Ref):
        return f"{{{{ {v.expr} | toJson }}}}"
    if isinstance(v, _Fmt):
        fmt = "".join("%v" if isinstance(p, _Ref) else p.replace("%", "%%") for p in v.parts)
        args = " ".join(p.expr for p in v.parts if isinstance(p, _Ref))
        return f"{{{{ printf {_go_string(fmt)} {args} | toJson }}}}"
    if isinstance(v, _If):
        return f"{{{{ if {v.cond} }}}}{_inline(v.then)}{{{{ else }}}}{_inline(v.other)}{{{{ end }}}}"
    if isinstance(v, _Map | _Seq) and not v:
        return "{}" if isinstance(v, _Map) else "[]"
    if isinstance(v, dict | list) and not isinstance(v, _Map | _Seq):
        return _escape(json.dumps(v))  # an else branch's small map or list, as JSON
    return _escape(_scalar(v))


def _block(cond: str, then: list[str], other: list[str], sp: str) -> list[str]:
    if not then:
        return [f"{sp}{{{{- if not {cond} }}}}", *other, f"{sp}{{{{- end }}}}"]
    return [f"{sp}{{{{- if {cond} }}}}", *then, *([f"{sp}{{{{- else }}}}", *other] if other else []),
            f"{sp}{{{{- end }}}}"]


def _as_tree(v: Any) -> Any:
    if isinstance(v, dict):
        return _Map((k, _as_tree(x)) for k, x in v.items())
    if isinstance(v, list) and not isinstance(v, _Seq | _Map):
        return _Seq(_as_tree(x) for x in v)
    return v


def _map_lines(entries: list, indent: int) -> list[str]:
    sp, lines = " " * indent, []
    for e in entries:
        if isinstance(e, _If):
            lines += _block(e.cond, _map_lines(e.then, indent), _map_lines(e.other or [], indent), sp)
            continue
        k, v = e
        key = f"{{{{ {k.expr} | toJson }}}}" if isinstance(k, _Ref) else _escape(_scalar(k))
        v = _as_tree(v)
        if isinstance(v, _Include):
            lines += [f"{sp}{key}:", f"{sp}  {{{{- {v.expr} | nindent {indent + 2} }}}}"]
        elif isinstance(v, _Map) and v:
            lines += [f"{sp}{key}:", *_map_lines(v, indent + 2)]
        elif isinstance(v, _Seq) and v:
            lines += [f"{sp}{key}:", *_seq_lines(v, indent)]
        else:
            lines.append(f"{sp}{key}: {_inline(v)}")
    return lines


def _seq_lines(items: list, indent: int) -> list[str]:
    sp, lines = " " * indent, []
    for item in items:
        if isinstance(item, _If):
            lines += _block(item.cond, _seq_lines(item.then, indent), _seq_lines(item.other or [], indent), sp)
            continue
        item = _as_tree(item)
        if isinstance(item, _Map) and item:
            sub = _map_lines(item, indent + 2)
            if sub[0].lstrip().startswith("{{-"):  # a block first: the dash alone, the block trims up to it
                lines += [f"{sp}-", *sub]
            else:
                lines += [f"{sp}- {sub[0][indent + 2:]}", *sub[1:]]
        elif isinstance(item, _Seq) and item:
            lines += [f"{sp}-", *_seq_lines(item, indent + 2)]
        else:
            lines.append(f"{sp}- {_inline(item)}")
    return lines


# -- the generator -----------------------------------------------------------------------------------------------------


def _check_coverage() -> None:
    known = {f.path for f in FIELDS} | BY_HAND
    paths = {n for n in ClusterConfig.model_fields if n != "roles"}
    paths |= {f"roles.{r}.{n}" for r in ROLES for n in RolePool.model_fields}
    missing = sorted(paths - known)
    if missing:
        raise RuntimeError(f"refine_af/argo/helm.py maps no Helm value to cluster.{', cluster.'.join(missing)}: "
                           "add it to FIELDS (and to the chart's values)")


def generate() -> str:
    """The chart's templates/workflowtemplate.yaml for the current compiler."""
    _check_coverage()
    probes = _probes()
    probe = _render(probes)
    edits = _Edits()
    for f in FIELDS:
        if f.kind == "value":
            continue
        changed = {**probes, f.path: f.alternative if f.kind == "enum" else _unset(f)}
        _diff(probe, _render(changed), (), f.expr, f.path, edits)
    # an enum's differences are its value, not a condition
    enums = {f.expr for f in FIELDS if f.kind == "enum"}
    used = set()
    for path, (cond, _other) in list(edits.values.items()):
        if cond in enums:
            del edits.values[path]
            edits.owner.pop(path, None)
            probe = _replace(probe, path, _Ref(cond))
            used.add(cond)
    tree = _build(probe, (), edits)
    exprs = {f.path: f.expr for f in FIELDS if f.kind != "enum"}
    sub = _Substitute(probes, exprs)
    tree = sub(tree)
    unused = sorted((set(exprs.values()) | enums) - sub.used - used)
    if unused:
        raise RuntimeError(f"no sentinel of {', '.join(unused)} reached the template: update FIELDS")
    tree = _with_chart_labels(tree)
    text = "\n".join(_map_lines(tree, 0)) + "\n"
    if re.search(r"zqx\d\dxqz", text):
        raise RuntimeError("a sentinel is left in the generated template")
    header = ("{{- /* Generated by `" + REGENERATE + "` from refine_af/argo/compile.py: do not edit.\n"
              "Every cluster.* key of the run config is a value of this chart (values.yaml). */ -}}\n")
    return header + text


def _replace(node: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        return {k: (_replace(v, rest, value) if k == head else v) for k, v in node.items()}
    return [(_replace(v, rest, value) if i == head else v) for i, v in enumerate(node)]


def _with_chart_labels(tree: _Map) -> _Map:
    """metadata.labels: the chart's own (instance, chart, managed-by Helm), in place of the compiler's."""
    out = _Map()
    for k, v in tree:
        if k == "metadata":
            v = _Map((mk, _Include('include "refine-af.labels" (dict "ctx" . "component" "workflow")')
                      if mk == "labels" else mv) for mk, mv in v)
        out.append((k, v))
    return out


# -- the values table of the chart's README ----------------------------------------------------------------------------

VALUES = CHART / "values.yaml"
README = CHART / "README.md"
TABLE_BEGIN = "<!-- values table: generated by python -m refine_af.argo.helm -->"
TABLE_END = "<!-- end of values table -->"
_KEY = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):(.*)$")


def values_docs(text: str) -> list[tuple[str, Any, str]]:
    """(dotted key, default, description) of every key with a `# --` comment in values.yaml, in file order.

    A `# --` comment and the `#` lines right after it describe the key below them (helm-docs' convention)."""
    defaults = yaml.safe_load(text)
    docs, stack, comment = [], [], None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if comment is not None:
                comment.append(stripped[1:].strip())
            continue
        m = _KEY.match(line)
        if not m or stripped.startswith("-"):
            comment = None
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if comment is not None:
            path = [k for _, k in stack]
            value = defaults
            for k in path:
                value = value[k]
            docs.append((".".join(path), value, " ".join(comment)))
        comment = None
    return docs


def values_table(text: str) -> str:
    rows = ["| Key | Default | Description |", "|---|---|---|"]
    for key, default, description in values_docs(text):
        text = description.replace("|", "&#124;").replace("<", "&lt;").replace(">", "&gt;")
        rows.append(f"| `{key}` | `{json.dumps(default)}` | {text} |")
    return "\n".join(rows)


def readme(current: str, values: str) -> str:
    """The chart README with its values table regenerated from values.yaml."""
    head, rest = current.split(TABLE_BEGIN, 1)
    _old, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_BEGIN}\n{values_table(values)}\n{TABLE_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m refine_af.argo.helm", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUTPUT, help="the file to write (default: the chart's)")
    parser.add_argument("--check", action="store_true", help="exit 1 when the file differs from a fresh one")
    args = parser.parse_args(argv)
    files = {args.out: generate()}
    if args.out == OUTPUT and README.is_file():  # --out elsewhere: a scratch copy, leave the chart alone
        files[README] = readme(README.read_text(), VALUES.read_text())
    stale = [path for path, text in files.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path} is stale: run {REGENERATE}", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
