"""What a pod hands back to Argo: the manifest's key figures as output parameters, small outputs as artifacts.

A pod runs `refine-af stage NAME --run URI` with REFINE_AF_OUTPUTS set (the workflow sets it). After the stage is done
(or was already), the CLI writes one file per declared metric (`Stage.metrics`) under that directory, which the
template's output parameters read, and copies the manifest and the declared links under `artifacts/`, which Argo
uploads as raw objects to the very keys the stage wrote, so the Argo UI links them without a second copy.
The init task writes what the DAG needs to know of the config: the run location and the switches and shard counts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from refine_af.config import lookup
from refine_af.pipeline import STAGES, Stage, enabled
from refine_af.store import Store, read_json

ENV = "REFINE_AF_OUTPUTS"
ARTIFACTS = "artifacts"


def directory() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


def _value(manifest: dict, dotted: str) -> str:
    value: Any = manifest
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return ""  # e.g. the probe when rl.probe_prompts is 0: Argo shows an empty value
        value = value[part]
    return value if isinstance(value, str) else json.dumps(value)


def metric_values(s: Stage, manifest: dict) -> dict[str, str]:
    return {name: _value(manifest, path) for name, path in s.metrics.items()}


def write_stage_outputs(s: Stage, store: Store, out: Path) -> None:
    """The stage's output parameters and linked files, from its manifest in the store."""
    manifest = read_json(store, f"{s.name}/manifest.json")
    write_values(metric_values(s, manifest), out)
    for rel in ["manifest.json", *(s.outputs[n].path for n in s.links)]:
        if rel == "manifest.json" or rel in manifest.get("files", {}):
            target = out / ARTIFACTS / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(store.read_bytes(f"{s.name}/{rel}"))


def init_values(config: Any, run: str, key: str) -> dict[str, str]:
    """The init task's output parameters: where the run lives, which stages run, how many shards each has."""
    values = {"run": run, "key": key}
    for s in STAGES:
        if s.when:
            values[f"enabled-{s.name}"] = "true" if enabled(s, config) else "false"
    for key_name in sorted({s.shards for s in STAGES if s.shards}):
        values[shards_param(key_name)] = str(lookup(config, key_name))
    return values


def shards_param(config_key: str) -> str:
    """`instances.shards` -> `shards-instances`: the init output that sizes a sharded stage's fan-out."""
    return "shards-" + config_key.split(".")[0]


def write_values(values: dict[str, str], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, value in values.items():
        (out / name).write_text(value)
