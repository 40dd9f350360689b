"""Local runner: executes the stage graph in-process, stage by stage, resumable.

A stage is done when its `manifest.json` is. Before running a stage the runner computes its fingerprint (sha256 of
canonical JSON of its config slice, its parents' fingerprints, the package version and its prompt files) and skips it
when a manifest with that fingerprint exists. Otherwise the stage code runs; it validates its inputs first and calls
`ctx.begin()` only then, so bad input leaves the store untouched. `begin()` keeps checkpoints written under the same
fingerprint (resume) and clears the prefix otherwise (the config changed, or `--force`). Outputs are written through
the context, which records their checksums; the manifest goes last.

`refine-af stage NAME --run URI` (what each Argo pod runs) is `run_stage`; `refine-af run` is `run_pipeline`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from refine_af import __version__
from refine_af.config import RunConfig, dump_config, load_config, lookup
from refine_af.errors import RefineError
from refine_af.pipeline import OPERATIONAL, Stage, enabled, select, stage
from refine_af.store import Store, open_store, read_json, write_json

log = logging.getLogger("refine_af")

MANIFEST = "manifest.json"
STARTED = "started.json"
CONFIG = "config.yaml"


def _config_value(config: RunConfig, dotted: str) -> Any:
    """A config slice as JSON, without the operational fields of a section (pipeline.OPERATIONAL)."""
    value = lookup(config, dotted)
    if not hasattr(value, "model_dump"):
        return value
    return value.model_dump(mode="json", exclude={k.removeprefix(f"{dotted}.") for k in OPERATIONAL
                                                  if k.startswith(f"{dotted}.")})


def _prompts_digest(names: tuple[str, ...]) -> dict[str, str]:
    from refine_af.prompts import template

    return {n: hashlib.sha256(template(n).template.encode()).hexdigest() for n in names}


def fingerprint(s: Stage, config: RunConfig, parents: dict[str, str]) -> str:
    """The stage's cache key; see the module docstring for what goes in and what stays out."""
    from refine_af.data import seeds_bytes

    key: dict[str, Any] = {
        "stage": s.name,
        "params": s.params,
        "config": {k: _config_value(config, k) for k in s.config},
        "parents": parents,
        "version": __version__,
        "prompts": _prompts_digest(s.prompts),
    }
    if "seeds" in s.config:  # a seed file edited in place must rerun the stage
        key["seeds_sha256"] = hashlib.sha256(seeds_bytes(config.seeds, config.s3)).hexdigest()
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def read_manifest(store: Store, name: str) -> dict | None:
    try:
        return read_json(store, f"{name}/{MANIFEST}")
    except FileNotFoundError:
        return None


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
    _backend: Any = None

    @property
    def name(self) -> str:
        return self.stage.name

    def key(self, rel: str) -> str:
        return f"{self.name}/{rel}"

    def begin(self) -> bool:
        """Inputs are valid: claim the stage prefix. Returns True when resuming checkpoints of this fingerprint."""
        started = None
        try:
            started = read_json(self.store, self.key(STARTED))
        except FileNotFoundError:
            pass
        keep = not self.force and started is not None and started.get("fingerprint") == self.fingerprint
        if not keep and self.store.list(self.name):
            self.store.delete(self.name)
        elif keep:
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
        for path in sorted(p for p in Path(src).rglob("*") if p.is_file()):
            self.write_output(f"{rel}/{path.relative_to(src).as_posix()}", path.read_bytes())

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
              backend: Any = None) -> str:
    """Run one stage unless its manifest is current. Returns "skipped", "done" or "disabled"."""
    s = stage(name)
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
    ctx = StageContext(stage=s, config=config, store=store, fingerprint=fp, force=force, _backend=backend)
    module, _, func = s.fn.partition(":")
    started = time.time()
    log.info("%s: running (fingerprint %s)", s.name, fp[:12])
    getattr(importlib.import_module(module), func)(ctx)
    seconds = time.time() - started
    write_json(store, ctx.key(MANIFEST), {
        "stage": s.name,
        "fingerprint": fp,
        "version": __version__,
        "config": {k: _config_value(config, k) for k in s.config},
        "params": s.params,
        "parents": parents,
        "counts": ctx.counts,
        "metrics": ctx.metrics,
        "provenance": ctx.provenance,
        "files": ctx.files,
        "resumed": ctx.resumed,
        "seconds": round(seconds, 2),
        "finished_at": _now(),
    })
    log.info("%s: done in %.1f s %s", s.name, seconds, json.dumps(ctx.counts))
    return "done"


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
