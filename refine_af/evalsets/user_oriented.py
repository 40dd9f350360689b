"""Self-Instruct's user-oriented instructions: reading them, their prompts and their scores.

The file is Self-Instruct's `user_oriented_instructions.jsonl` (`schemas.UserTaskLine`: `id`, `motivation_app`,
`instruction`, `instances[{input, output}]`). The prompt is the instruction format fine-tuning trains on
(`instruction_format.instruction_prompt`); scores are SuperNI's ROUGE-L and exact match against the reference output,
grouped by app.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refine_af.errors import RefineError
from refine_af.evalsets import EVAL_DATA, store_for
from refine_af.evalsets.metrics import UNCATEGORIZED, Instance, score_groups
from refine_af.instruction_format import instruction_prompt
from refine_af.schemas import UserTaskLine, parse_jsonl, validate
from refine_af.store import Store, read_required, split_uri

__all__ = ["DEFAULT_USER_ORIENTED", "UserTask", "build_user_prompt", "load_user_oriented", "parse_user_task",
           "score_user_oriented"]

DEFAULT_USER_ORIENTED = EVAL_DATA / "user_oriented.jsonl"


@dataclass(frozen=True)
class UserTask:
    """One user-oriented instruction; instance ids are `<id>-<index>`."""

    id: str
    motivation_app: str
    instruction: str
    instances: tuple[Instance, ...]


def _task(line: UserTaskLine) -> UserTask:
    instances = tuple(Instance(f"{line.id}-{i}", x.input, (x.output,)) for i, x in enumerate(line.instances))
    return UserTask(line.id, line.motivation_app, line.instruction, instances)


def parse_user_task(data: Any, where: str) -> UserTask:
    """Check one decoded user-oriented line; `where` names the file and line in error messages."""
    return _task(validate(UserTaskLine, data, where))


def load_user_oriented(
    uri: str | Path | None = None, *, max_items: int | None = None, store: Store | None = None
) -> list[UserTask]:
    """User-oriented instructions from a JSONL file (local path, `file://` or `s3://` URI; default: embedded set).

    With an open `store`, `uri` is the key of the file inside it.
    """
    if store is None:
        parent, key = split_uri(str(uri if uri is not None else DEFAULT_USER_ORIENTED))
        store = store_for(parent)
    elif uri is None:
        raise ValueError("with a store, uri must name the key of the JSONL file")
    else:
        key = str(uri)
    where = f"{store.uri}/{key}"
    items: list[UserTask] = []
    seen: dict[str, int] = {}
    for lineno, line in parse_jsonl(read_required(store, key), where, UserTaskLine):
        if line.id in seen:
            raise RefineError(f"{where}:{lineno}:id: repeats '{line.id}' from line {seen[line.id]}")
        seen[line.id] = lineno
        items.append(_task(line))
        if max_items is not None and len(items) >= max_items:
            break  # the lines after are not read: not checked either
    if not items:
        raise RefineError(f"{where}: no instructions in the file")
    return items


def build_user_prompt(task: UserTask, instance: Instance) -> str:
    return instruction_prompt(task.instruction, instance.input)


def score_user_oriented(tasks: Sequence[UserTask], predictions: Mapping[str, str]) -> dict[str, Any]:
    """Score user-oriented predictions (instance id -> text); same shape as `superni.score_tasks`, grouped by app."""
    return score_groups(((t.id, t.motivation_app or UNCATEGORIZED, t.instances) for t in tasks), predictions)


def location(configured: str | None) -> str | None:
    """The file `evaluate.user_oriented` names: builtin is the embedded set; None (null) is none."""
    return str(DEFAULT_USER_ORIENTED) if configured == "builtin" else configured


def load_configured(configured: str | None, max_items: int | None, s3: Any = None) -> list[UserTask]:
    """The user-oriented instructions named by `evaluate.user_oriented` (builtin, a path, s3://); none for null."""
    uri = location(configured)
    if uri is None:
        return []
    parent, key = split_uri(uri)
    return load_user_oriented(key, max_items=max_items, store=store_for(parent, s3))
