"""Local runner: executes the stage graph in-process, stage by stage, resumable.

A stage is done when its `manifest.json` is. Before running a stage the runner computes its fingerprint (sha256 of
canonical JSON of its config slice, its parents' fingerprints, the package version, its prompt files and the source of
its code: its module and every refine_af module it imports, transitively) and skips it when a manifest with that
fingerprint exists. Otherwise the stage code runs; it validates its inputs first and calls
`ctx.begin()` only then, so bad input leaves the store untouched. `begin()` keeps checkpoints written under the same
fingerprint (resume) and clears the prefix otherwise (the config changed, or `--force`). Outputs are written through
the context, which records their checksums; the manifest goes last.

A sharded stage (`Stage.shards`) hands its per-item work to `ctx.shard_map`: the items are cut into N contiguous
slices, each slice's results go to `<stage>/shards/i-of-N.jsonl` (with a marker naming the fingerprint, written
last), and the merge concatenates them in order before the stage writes its outputs. `refine-af stage NAME --shard
i/N` is one Argo pod's slice, `--merge` the merge task's; locally every missing shard runs in turn and then the merge.
Because every random draw is keyed by the item (`refine_af.seeds`), any N gives the same bytes.

`refine-af stage NAME --run URI` (what each Argo pod runs) is `run_stage`; `refine-af run` is `run_pipeline`.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import importlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from refine_af import __version__
from refine_af.config import RunConfig, dump_config, load_config, lookup
from refine_af.errors import RefineError
from refine_af.pipeline import OPERATIONAL, Stage, enabled, input_key, select, stage
from refine_af.schemas import Manifest, decode_json, validate
from refine_af.store import Store, jsonl_bytes, local_files, open_store, read_json, read_jsonl, write_json

log = logging.getLogger("refine_af")

MANIFEST = "manifest.json"
STARTED = "started.json"
CONFIG = "config.yaml"
SHARDS = "shards"


class ShardWritten(Exception):  # noqa: N818 -- control flow, not an error
    """Raised by `shard_map` in a `--shard i/N` run once the slice is stored: the stage stops there."""


def config_slice(config: RunConfig, dotted: str) -> Any:
    """A config slice as JSON, without the operational fields of a section (pipeline.OPERATIONAL)."""
    value = lookup(config, dotted)
    if not hasattr(value, "model_dump"):
        return value
    return value.model_dump(mode="json", exclude={k.removeprefix(f"{dotted}.") for k in OPERATIONAL
                                                  if k.startswith(f"{dotted}.")})


def _prompts_digest(names: tuple[str, ...]) -> dict[str, str]:
    from refine_af.prompts import template

    return {n: hashlib.sha256(template(n).template.encode()).hexdigest() for n in names}


PACKAGE = Path(__file__).parent  # the refine_af source tree the code digest reads; tests point it at a copy


def _module_file(root: Path, module: str) -> Path | None:
    """The source file of a refine_af module under `root` (a package's __init__.py); None for other modules."""
    parts = module.split(".")
    if parts[0] != "refine_af":
        return None
    base = root.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(root: Path, module: str, path: Path) -> set[str]:
    """The refine_af modules `module` imports anywhere in its file (lazy imports inside functions too), with the
    packages above each: importing a.b.c runs a/__init__ and a/b/__init__ as well. Imports are absolute here."""
    found = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from refine_af import models` imports the submodule; `from refine_af.x import f` only x
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        for name in names:
            parts = name.split(".")
            found.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1))
                         if _module_file(root, p) is not None)
    found.discard(module)
    return found


@functools.cache
def code_digest(module: str, root: Path = PACKAGE) -> str:
    """sha256 over the source of `module` and of every refine_af module it imports, transitively (a static import
    graph, so nothing is imported to compute it). Cached per process: the source does not change under a run."""
    parts = module.split(".")
    todo, files = [".".join(parts[:i]) for i in range(1, len(parts) + 1)], {}  # with the packages above it
    while todo:
        name = todo.pop()
        path = _module_file(root, name)
        if name in files or path is None:
            continue
        files[name] = path.read_bytes()
        todo += _imports(root, name, path)
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{len(files[name])}\0".encode() + files[name])
    return digest.hexdigest()


def fingerprint(s: Stage, config: RunConfig, parents: dict[str, str]) -> str:
    """The stage's cache key; see the module docstring for what goes in and what stays out."""
    from refine_af.readers import seeds_bytes

    key: dict[str, Any] = {
        "stage": s.name,
        "params": s.params,
        "config": {k: config_slice(config, k) for k in s.config},
        "parents": parents,
        "version": __version__,
        "prompts": _prompts_digest(s.prompts),
        "code": code_digest(s.fn.partition(":")[0], PACKAGE),
    }
    if "seeds" in s.config:  # a seed file edited in place must rerun the stage
        key["seeds_sha256"] = hashlib.sha256(seeds_bytes(config.seeds, config.s3)).hexdigest()
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def read_manifest(store: Store, name: str) -> dict | None:
    """A stage's manifest as written (checked against `schemas.Manifest`), or None when the stage has not finished."""
    try:
        data = store.read_bytes(f"{name}/{MANIFEST}")
    except FileNotFoundError:
        return None
    where = f"{store.uri}/{name}/{MANIFEST}"
    manifest = decode_json(data, where)
    validate(Manifest, manifest, where)
    return manifest  # the dict, not the model: a copy of the manifest keeps its bytes (`argo.client.download`)


@dataclass
class StageContext:
    """What a stage function gets: config, store, its own key space, and the counters for its manifest."""

    stage: Stage
    config: RunConfig
    store: Store
    fingerprint: str
    force: bool = False
    counts: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict] = field(default_factory=dict)
    resumed: bool = False
    shard: tuple[int, int] | None = None  # (i, N): this process computes slice i of N only
    merge_only: bool = False  # the merge task: every shard must be done already
    _backend: Any = None

    @property
    def name(self) -> str:
        return self.stage.name

    def key(self, rel: str) -> str:
        return f"{self.name}/{rel}"

    def input(self, name: str) -> str | None:
        """The store key of one of the stage's declared inputs; None when the stage producing it is switched off."""
        parent = self.stage.inputs[name].split("/", 1)[0]
        return input_key(self.stage, name) if enabled(stage(parent), self.config) else None

    def shard_map(self, items: Sequence[Any], work: Callable[[list], list[dict]]) -> list[dict]:
        """`work` applied to `items` in shards: one JSON-able result per item, in item order (see module docstring).

        `work` gets a contiguous slice and must return one row per item of it; it is where models load, so a merge
        task never loads one."""
        n = int(lookup(self.config, self.stage.shards)) if self.stage.shards else 1
        if self.shard is not None and self.shard[1] != n:
            raise RefineError(f"--shard {self.shard[0]}/{self.shard[1]}: {self.stage.shards} is {n} in this run's "
                              "config")
        bounds = [(len(items) * i // n, len(items) * (i + 1) // n) for i in range(n)]
        wanted = [self.shard[0]] if self.shard is not None else range(n)
        results: dict[int, list[dict]] = {}
        for i in wanted:
            rows = None if self.force else self._stored_shard(i, n)
            if rows is None:
                if self.merge_only:
                    raise RefineError(f"{self.name}: shard {i}/{n} has not finished in {self.store.uri}: run "
                                      f"`refine-af stage {self.name} --shard {i}/{n}` first")
                start, end = bounds[i]
                started = time.time()
                rows = list(work(list(items[start:end]))) if end > start else []
                if len(rows) != end - start:
                    raise RuntimeError(f"{self.name}: shard work returned {len(rows)} rows for {end - start} items")
                self.store.write_bytes(self._shard_key(i, n, "jsonl"), jsonl_bytes(rows))
                write_json(self.store, self._shard_key(i, n, "json"), {
                    "fingerprint": self.fingerprint, "items": end - start, "first_item": start,
                    "seconds": round(time.time() - started, 2), "finished_at": _now()})
                log.info("%s: shard %d/%d done (%d items)", self.name, i, n, end - start)
            results[i] = rows
        if self.shard is not None:
            raise ShardWritten()
        return [row for i in range(n) for row in results[i]]

    def _shard_key(self, i: int, n: int, ext: str) -> str:
        return self.key(f"{SHARDS}/{i:03d}-of-{n:03d}.{ext}")

    def _stored_shard(self, i: int, n: int) -> list[dict] | None:
        """A shard's rows when its marker says it was computed under this fingerprint."""
        try:
            marker = read_json(self.store, self._shard_key(i, n, "json"))
        except FileNotFoundError:
            return None
        if marker.get("fingerprint") != self.fingerprint:
            return None
        return read_jsonl(self.store, self._shard_key(i, n, "jsonl"))

    def begin(self) -> bool:
        """Inputs are valid: claim the stage prefix. Returns True when resuming checkpoints of this fingerprint.

        Shards are kept either way: their markers say which fingerprint computed them, and a merge that dies after
        claiming must still find them."""
        started = None
        try:
            started = read_json(self.store, self.key(STARTED))
        except FileNotFoundError:
            pass
        keep = not self.force and started is not None and started.get("fingerprint") == self.fingerprint
        if not keep:
            for key in self.store.list(self.name):
                if not key.startswith(self.key(f"{SHARDS}/")):
                    self.store.delete(key)
        else:
            self.store.delete(self.key(MANIFEST))
        write_json(self.store, self.key(STARTED), {"fingerprint": self.fingerprint, "at": _now()})
        self.resumed = keep
        return keep

    def write_output(self, rel: str, data: bytes) -> None:
        """Write an output file and record its checksum for the manifest."""
        self.store.write_bytes(self.key(rel), data)
        self.files[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

    def upload_output(self, src: str | Path, rel: str) -> None:
        """Write a local directory tree (an adapter, a checkpoint) under `rel/`, recording each file."""
        for name, path in local_files(src):
            self.write_output(f"{rel}/{name}", path.read_bytes())

    @contextlib.contextmanager
    def backend_with(self, adapter_key: str | None) -> Iterator[Any]:
        """A backend for the run's model with the LoRA adapter stored at `adapter_key` (None: the model alone), valid
        for the block: the adapter's local copy must outlive generation, vLLM reads it lazily."""
        if adapter_key is None:
            yield self.backend()
            return
        from refine_af.generate import make_backend

        with tempfile.TemporaryDirectory(prefix="refine-af-adapter-") as adapter:
            self.store.download(adapter_key, Path(adapter))
            yield make_backend(self.config, adapter=adapter)

    def backend(self) -> Any:
        """The generation backend for the run's model, built on first use."""
        if self._backend is None:
            from refine_af.generate import make_backend

            self._backend = make_backend(self.config)
        return self._backend


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _parent_fingerprints(store: Store, s: Stage, config: RunConfig) -> dict[str, str]:
    fps = {}
    for parent in s.parents:
        if not enabled(stage(parent), config):  # switched off: the child runs without it
            fps[parent] = "disabled"
            continue
        manifest = read_manifest(store, parent)
        if manifest is None:
            raise RefineError(
                f"stage '{s.name}' needs stage '{parent}', which has not finished in {store.uri}: run it first"
            )
        fps[parent] = manifest["fingerprint"]
    return fps


def run_stage(config: RunConfig, name: str, store: Store | None = None, force: bool = False,
              backend: Any = None, shard: tuple[int, int] | None = None, merge_only: bool = False) -> str:
    """Run one stage unless its manifest is current. Returns "skipped", "done", "disabled" or "shard done".

    `shard` (i, N) computes one slice of a sharded stage; `merge_only` merges finished shards without computing."""
    s = stage(name)
    if (shard is not None or merge_only) and not s.shards:
        raise RefineError(f"stage '{s.name}' is not sharded (sharded stages: "
                          f"{', '.join(x.name for x in select(None) if x.shards)})")
    if not enabled(s, config):
        log.info("%s: switched off by %s", s.name, s.when)
        return "disabled"
    store = store or open_store(config.run, config.s3)
    parents = _parent_fingerprints(store, s, config)
    fp = fingerprint(s, config, parents)
    manifest = read_manifest(store, s.name)
    if manifest and manifest.get("fingerprint") == fp and not force:
        log.info("%s: up to date (fingerprint %s), skipped", s.name, fp[:12])
        return "skipped"
    ctx = StageContext(stage=s, config=config, store=store, fingerprint=fp, force=force, shard=shard,
                       merge_only=merge_only, _backend=backend)
    module, _, func = s.fn.partition(":")
    started = time.time()
    log.info("%s: running%s (fingerprint %s)", s.name, f" shard {shard[0]}/{shard[1]}" if shard else "", fp[:12])
    try:
        getattr(importlib.import_module(module), func)(ctx)
    except ShardWritten:
        return "shard done"
    seconds = time.time() - started
    _check_outputs(s, ctx.files)
    manifest = Manifest(stage=s.name, fingerprint=fp, version=__version__,
                        config={k: config_slice(config, k) for k in s.config}, params=s.params, parents=parents,
                        counts=ctx.counts, metrics=ctx.metrics, provenance=ctx.provenance, files=ctx.files,
                        resumed=ctx.resumed, seconds=round(seconds, 2), finished_at=_now())
    write_json(store, ctx.key(MANIFEST), manifest.model_dump())  # python mode: NaN stays NaN, as json.dumps writes it
    log.info("%s: done in %.1f s %s", s.name, seconds, json.dumps(ctx.counts))
    return "done"


def _check_outputs(s: Stage, files: dict[str, dict]) -> None:
    """Every written file lies under a declared output, and every required output was written (a code bug if not)."""
    def under(rel: str, out: Any) -> bool:
        return rel.startswith(out.path) if out.is_dir else rel == out.path

    stray = [rel for rel in files if not any(under(rel, o) for o in s.outputs.values())]
    missing = [n for n, o in s.outputs.items() if not o.optional and not any(under(rel, o) for rel in files)]
    if stray or missing:
        raise RuntimeError(f"stage '{s.name}' wrote undeclared outputs {stray} or missed declared ones {missing}: "
                           "update its outputs in refine_af/pipeline.py")


def save_run_config(store: Store, config: RunConfig) -> None:
    store.write_bytes(CONFIG, dump_config(config).encode())


def load_run_config(store: Store, overrides: list[str] = ()) -> RunConfig:
    """The config a pod runs with: the one saved at the run root, plus any overrides."""
    try:
        text = store.read_bytes(CONFIG).decode()
    except FileNotFoundError:
        raise RefineError(f"{store.uri} has no {CONFIG}: start the run with `refine-af run` or pass --config") from None
    return load_config(None, overrides, text=text)


def run_pipeline(config: RunConfig, names: list[str] | None = None, force: bool = False) -> dict[str, str]:
    """Run the selected stages (all by default) in graph order; returns each stage's outcome."""
    stages = select(names)
    store = open_store(config.run, config.s3)
    save_run_config(store, config)
    outcomes = {s.name: run_stage(config, s.name, store, force=force) for s in stages}
    return outcomes


def show(store: Store) -> list[dict]:
    """Each stage's state: done (with counts and metrics), partial, or not started."""
    rows = []
    for s in select(None):
        manifest = read_manifest(store, s.name)
        if manifest:
            rows.append({"stage": s.name, "state": "done", "counts": manifest.get("counts", {}),
                         "metrics": manifest.get("metrics", {}), "seconds": manifest.get("seconds")})
        elif store.list(s.name):
            rows.append({"stage": s.name, "state": "partial", "counts": {}, "metrics": {}})
        else:
            rows.append({"stage": s.name, "state": "not started", "counts": {}, "metrics": {}})
    return rows
