"""Record types and readers for the project's data: seed tasks and generated instructions.

Seed tasks use Self-Instruct's JSONL schema, one task per line:

    {"id": "seed_task_0", "name": "breakfast_suggestion", "instruction": "...",
     "instances": [{"input": "", "output": "..."}], "is_classification": false}

Readers validate every line and fail with one message naming the source, line and field, so a bad file never
gets half-way into a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

from refine_af.errors import RefineError

BUILTIN_SEEDS = "builtin"


@dataclass(frozen=True)
class SeedTask:
    id: str
    name: str
    instruction: str
    instances: tuple[dict[str, str], ...]
    is_classification: bool


def read_uri(uri: str, s3: Any = None) -> bytes:
    """The bytes of one file given as a local path, file://... or s3://bucket/key."""
    from refine_af.store import open_store, split_uri

    if uri.startswith("s3://"):
        root, name = split_uri(uri)
        try:
            return open_store(root, s3).read_bytes(name)
        except FileNotFoundError:
            raise RefineError(f"{uri}: no such object") from None
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


def _field(obj: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise RefineError(f"{where}: missing field '{key}'")
    if not isinstance(obj[key], kind):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RefineError(f"{where}: field '{key}' must be {name}, got {type(obj[key]).__name__}")
    return obj[key]


def json_lines(data: bytes, source: str) -> Iterator[tuple[str, dict]]:
    """("<source>:<line>", object) for each non-blank line of JSONL bytes. Bytes that are not UTF-8 and lines that
    are not a JSON object are errors naming the source and the line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RefineError(f"{source}: not UTF-8 text (byte {e.start})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise RefineError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise RefineError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        yield where, obj


def parse_seeds(data: bytes, source: str) -> list[SeedTask]:
    """Validate and parse seed-task JSONL; errors name `source`, the line and the field."""
    tasks: list[SeedTask] = []
    for where, obj in json_lines(data, source):
        instruction = _field(obj, "instruction", str, where).strip()
        if not instruction:
            raise RefineError(f"{where}: field 'instruction' is empty")
        instances = _field(obj, "instances", list, where)
        for i, inst in enumerate(instances):
            if not isinstance(inst, dict):
                raise RefineError(f"{where}: instances[{i}] must be an object")
            _field(inst, "input", str, f"{where}: instances[{i}]")
            _field(inst, "output", str, f"{where}: instances[{i}]")
        tasks.append(SeedTask(
            id=str(_field(obj, "id", (str, int), where)),
            name=_field(obj, "name", str, where),
            instruction=instruction,
            instances=tuple({"input": x["input"], "output": x["output"]} for x in instances),
            is_classification=_field(obj, "is_classification", bool, where),
        ))
    if not tasks:
        raise RefineError(f"{source}: no seed tasks (the file is empty)")
    return tasks


def load_seeds(uri: str, s3: Any = None) -> list[SeedTask]:
    """Seed tasks from `builtin` (the project's own set), a path, or an s3:// URI."""
    source = "builtin seeds" if uri == BUILTIN_SEEDS else uri
    return parse_seeds(seeds_bytes(uri, s3), source)


def read_input(store: Any, key: str) -> bytes:
    """A stage input's bytes; a missing one is an error naming the stage that writes it (the key's first part)."""
    try:
        return store.read_bytes(key)
    except FileNotFoundError:
        raise RefineError(f"{store.uri}/{key} does not exist: run the {key.split('/')[0]} stage first") from None


def load_instructions(store: Any, key: str) -> list[dict]:
    """Generated instructions (the instructions stage's output at `key`), for the stages that build on them:
    id, instruction, is_classification. A missing, empty or malformed file is an error naming the file and line."""
    where = f"{store.uri}/{key}"
    data = read_input(store, key)
    rows = []
    for line, row in json_lines(data, where):
        if not isinstance(row.get("instruction"), str) or not row["instruction"].strip():
            raise RefineError(f"{line}: field 'instruction' is missing or empty")
        rows.append({"id": row.get("id", line), "instruction": row["instruction"],
                     "is_classification": bool(row.get("is_classification"))})
    if not rows:
        raise RefineError(f"{where} holds no instructions: nothing to build on")
    return rows
