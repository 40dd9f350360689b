"""Readers of the files a run builds on: seed tasks, a stage's input in the store, the instructions stage's
instructions and an instances stage's dataset. Their formats are `refine_af.schemas`' models.

Seed tasks use Self-Instruct's JSONL schema, one task per line:

    {"id": "seed_task_0", "name": "breakfast_suggestion", "instruction": "...",
     "instances": [{"input": "", "output": "..."}], "is_classification": false}

Readers check every line and fail with one message naming the source, line and field, so a bad file never gets
half-way into a run.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from refine_af.errors import RefineError
from refine_af.schemas import DatasetRow, InstructionRow, SeedTask, parse_jsonl

__all__ = ["BUILTIN_SEEDS", "SeedTask", "load_instructions", "load_seeds", "parse_seeds", "read_dataset",
           "read_input", "read_uri", "seeds_bytes"]

BUILTIN_SEEDS = "builtin"


def read_uri(uri: str, s3: Any = None) -> bytes:
    """The bytes of one file given as a local path, file://... or s3://bucket/key."""
    from refine_af.store import open_store, read_required, split_uri

    if uri.startswith("s3://"):
        root, name = split_uri(uri)
        return read_required(open_store(root, s3), name, "no such object")
    path = uri.removeprefix("file://")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise RefineError(f"cannot read {path}: {e.strerror}") from None


def seeds_bytes(uri: str, s3: Any = None) -> bytes:
    if uri == BUILTIN_SEEDS:
        return resources.files("refine_af").joinpath("data/seed_tasks.jsonl").read_bytes()
    return read_uri(uri, s3)


def parse_seeds(data: bytes, source: str) -> list[SeedTask]:
    """Check and parse seed-task JSONL; errors name `source`, the line and the field."""
    tasks = [task for _, task in parse_jsonl(data, source, SeedTask)]
    if not tasks:
        raise RefineError(f"{source}: no seed tasks (the file is empty)")
    return tasks


def load_seeds(uri: str, s3: Any = None) -> list[SeedTask]:
    """Seed tasks from `builtin` (the project's own set), a path, or an s3:// URI."""
    source = "builtin seeds" if uri == BUILTIN_SEEDS else uri
    return parse_seeds(seeds_bytes(uri, s3), source)


def read_input(store: Any, key: str) -> bytes:
    """A stage input's bytes; a missing one is an error naming the stage that writes it (the key's first part)."""
    from refine_af.store import read_required

    return read_required(store, key, f"does not exist: run the {key.split('/')[0]} stage first")


def load_instructions(store: Any, key: str) -> list[dict]:
    """Generated instructions (the instructions stage's output at `key`), for the stages that build on them:
    id, instruction, is_classification. A missing, empty or malformed file is an error naming the file and line."""
    where = f"{store.uri}/{key}"
    rows = [{"id": row.id if row.id is not None else f"{where}:{line}", "instruction": row.instruction,
             "is_classification": row.is_classification}
            for line, row in parse_jsonl(read_input(store, key), where, InstructionRow)]
    if not rows:
        raise RefineError(f"{where} holds no instructions: nothing to build on")
    return rows


def read_dataset(store: Any, key: str) -> tuple[list[dict], str]:
    """The rows (instruction, input, output) of an instances dataset and the file's sha256; a RefineError naming
    file:line:field for a bad row."""
    where = f"{store.uri}/{key}"
    data = read_input(store, key)
    rows = [row.model_dump() for _, row in parse_jsonl(data, where, DatasetRow)]
    if not rows:
        raise RefineError(f"{where} holds no examples")
    return rows, hashlib.sha256(data).hexdigest()
