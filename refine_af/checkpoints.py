"""Training checkpoints in the artifact store, shared by the training stages (rl, sft).

A checkpoint is a directory a trainer wrote (adapter, optimiser, scheduler, RNG and trainer state) plus the stage's
metrics rows so far. It goes to <run>/<stage>/checkpoints/step-NNNNN/ with its state file uploaded last, so a
checkpoint whose state file is there is complete, and only the newest one is kept. When a killed stage reruns with
the same fingerprint, `StageContext.begin` keeps the prefix and the stage continues from `latest`; once the
stage's final outputs are written, `clear` drops them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from refine_af.schemas import iter_jsonl
from refine_af.store import jsonl_bytes, local_files

log = logging.getLogger(__name__)

DIR = "checkpoints"
METRICS = "metrics.jsonl"


def latest(ctx: Any, state_file: str) -> str | None:
    """The store prefix of the newest complete checkpoint of the stage, or None."""
    done = [k[: -len(state_file) - 1] for k in ctx.store.list(ctx.key(DIR)) if k.endswith(f"/{state_file}")]
    return max(done, default=None)


def step_of(prefix: str) -> int:
    return int(prefix.rsplit("-", 1)[1])


def save(ctx: Any, local: Path, step: int, metrics: list[dict], state_file: str) -> None:
    """Add the metrics so far to a checkpoint directory, upload it (the state file last), drop the older ones."""
    (local / METRICS).write_bytes(jsonl_bytes(metrics))
    name = f"step-{step:05d}"
    for rel, path in local_files(local, last=state_file):
        ctx.store.write_bytes(ctx.key(f"{DIR}/{name}/{rel}"), path.read_bytes())
    for old in {k.split("/")[2] for k in ctx.store.list(ctx.key(DIR))} - {name}:
        ctx.store.delete(ctx.key(f"{DIR}/{old}"))
    log.info("%s: checkpoint at step %d -> %s/%s", ctx.name, step, ctx.store.uri, ctx.key(f"{DIR}/{name}"))


def restore(ctx: Any, prefix: str, local: Path) -> list[dict]:
    """Download a checkpoint into `local`; the metrics rows it carries, up to its step."""
    ctx.store.download(prefix, local)
    rows = [row for _, row in iter_jsonl((local / METRICS).read_bytes(), f"{prefix}/{METRICS}")]
    log.info("%s: resumed from %s/%s at step %d", ctx.name, ctx.store.uri, prefix, step_of(prefix))
    return rows[: step_of(prefix)]


def clear(ctx: Any) -> None:
    """Drop the stage's checkpoints: its final outputs are written and they only served resuming."""
    ctx.store.delete(ctx.key(DIR))
