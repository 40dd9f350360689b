"""Super-NaturalInstructions (SuperNI) for the `evaluate` stage: tasks, splits and zero-shot prompts.

SuperNI is read in its own layout under a root (a local path, `file://` or `s3://` prefix, read through
`refine_af.store`)::

    <root>/tasks/<name>.json                 Definition, Categories, Positive Examples, Instances, ...
    <root>/splits/<split>/test_tasks.txt     one task name per line

A task file is `schemas.SuperNITaskFile`. `Definition` may be a list (the official files) or a string (some copies);
like Tk-Instruct we use its first entry. `Categories`, `Positive Examples` and instance `id`s are optional; a task
without categories is "Uncategorized", and an instance without an id gets `<task>-<index>`. Instances are taken in
file order (`max_instances` keeps the first N): the official test tasks put their 100 label-balanced evaluation
instances first, so the official setting is `max_instances=100`. Scores are `refine_af.evalsets.metrics`'.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from refine_af.errors import RefineError
from refine_af.evalsets import EVAL_DATA, store_for
from refine_af.evalsets.metrics import UNCATEGORIZED, Instance, score_groups
from refine_af.prompts import template
from refine_af.schemas import SuperNITaskFile, decode_json, validate
from refine_af.store import Store, read_required

__all__ = ["DEFAULT_SUPERNI_ROOT", "Example", "GENERATION_STOP", "STOP_MARKERS", "SuperNITask", "task_prompt",
           "clean_prediction", "load_tasks", "parse_task", "read_split", "score_tasks"]

DEFAULT_SUPERNI_ROOT = EVAL_DATA / "superni"


@dataclass(frozen=True)
class Example:
    """A demonstration shown in a prompt (SuperNI's `Positive Examples`)."""

    input: str
    output: str
    explanation: str = ""


@dataclass(frozen=True)
class SuperNITask:
    name: str
    definition: str
    categories: tuple[str, ...]
    positive_examples: tuple[Example, ...]
    instances: tuple[Instance, ...]

    @property
    def category(self) -> str:
        """`Categories[0]`, the grouping SuperNI reports per-category scores by."""
        return self.categories[0] if self.categories else UNCATEGORIZED


# -- reading ----------------------------------------------------------------------------------------------------------


def parse_task(name: str, data: Any, where: str, max_instances: int | None = None) -> SuperNITask:
    """Check one decoded task file; `where` names the file in error messages. Only the first `max_instances`
    instances are read, and checked: the rest of a 6500-instance file is not evaluated."""
    if max_instances is not None and isinstance(data, dict) and isinstance(data.get("Instances"), list):
        data = {**data, "Instances": data["Instances"][:max_instances]}
    task = validate(SuperNITaskFile, data, where)
    instances, seen = [], set()
    for i, inst in enumerate(task.instances):
        iid = inst.id if inst.id is not None else f"{name}-{i}"
        if iid in seen:
            raise RefineError(f"{where}:Instances.{i}.id: repeats the id '{iid}'")
        seen.add(iid)
        instances.append(Instance(iid, inst.input, tuple(inst.output)))
    examples = tuple(Example(x.input, x.output, x.explanation) for x in task.positive_examples)
    return SuperNITask(name, task.definition, tuple(task.categories), examples, tuple(instances))


def read_split(store: Store, split: str = "default") -> list[tuple[int, str]]:
    """(line number, task name) for each task `splits/<split>/test_tasks.txt` lists, first occurrence kept."""
    key = f"splits/{split}/test_tasks.txt"
    try:
        text = read_required(store, key).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RefineError(f"{store.uri}/{key}: not UTF-8 text (byte {e.start})") from None
    names, seen = [], set()
    for lineno, line in enumerate(text.splitlines(), 1):
        name = line.strip()
        if name and not name.startswith("#") and name not in seen:
            seen.add(name)
            names.append((lineno, name))
    if not names:
        raise RefineError(f"{store.uri}/{key}: split '{split}' lists no tasks")
    return names


def load_tasks(
    root: str | Path | None = None,
    split: str = "default",
    max_tasks: int | None = None,
    max_instances: int | None = None,
    store: Store | None = None,
) -> list[SuperNITask]:
    """The tasks of `split` in split-file order: the first `max_tasks`, each with its first `max_instances`.

    `root` is a local path, `file://` or `s3://` prefix (default: the embedded set); pass an open `store` rooted
    at the SuperNI root instead to reuse its S3 settings.
    """
    store = store or store_for(root if root is not None else DEFAULT_SUPERNI_ROOT)
    split_where = f"{store.uri}/splits/{split}/test_tasks.txt"
    tasks, ids = [], set()
    for lineno, name in read_split(store, split)[:max_tasks]:
        key = f"tasks/{name}.json"
        where = f"{store.uri}/{key}"
        try:
            data = store.read_bytes(key)
        except FileNotFoundError:
            raise RefineError(f"{split_where} line {lineno}: task '{name}' does not exist (no {where})") from None
        task = parse_task(name, decode_json(data, where), where, max_instances)
        clash = ids.intersection(i.id for i in task.instances)
        if clash:
            raise RefineError(f"{where}: instance id '{min(clash)}' is also used by an earlier task")
        ids.update(i.id for i in task.instances)
        tasks.append(task)
    return tasks


# -- prompts ----------------------------------------------------------------------------------------------------------


def _sentence(text: str) -> str:
    """Stripped, with a period added unless it already ends in punctuation (SuperNI's eval formatting)."""
    text = text.strip()
    return text if not text or text[-1] in string.punctuation else text + "."


def task_prompt(task: SuperNITask, instance: Instance, num_pos_examples: int = 0) -> str:
    """SuperNI's zero-shot (or k-shot) evaluation prompt (prompts/superni.txt): definition, demonstrations
    (prompts/superni_example.txt), then the instance.

    The prompt ends with "Output:" and no trailing space, so the model writes the separating space itself (a
    trailing space splits BPE tokens unnaturally); an instance without input reads "Input:" with none either. Strip
    the generation before scoring (`clean_prediction`).
    """
    if num_pos_examples < 0:
        raise ValueError("num_pos_examples must be >= 0")
    example = template("superni_example")
    examples = "".join(example.substitute(number=k, input=_sentence(ex.input), output=_sentence(ex.output)) + "\n\n"
                       for k, ex in enumerate(task.positive_examples[:num_pos_examples], 1))
    return _fill(template("superni").template, definition=_sentence(task.definition), examples=examples,
                 input=_sentence(instance.input))


def _fill(text: str, **values: str) -> str:
    """`Template.substitute`, except that a placeholder ending a line takes the space before it along when its value
    is empty (no trailing space before the newline)."""
    for name, value in values.items():
        if not value:
            text = re.sub(rf" \$(?:{name}|\{{{name}\}})$", "", text, flags=re.M)
    return Template(text).substitute(values)


STOP_MARKERS = (
    "\n\n",
    "\nInput:",
    "\nDefinition:",
    "\nNow complete the following example",
    "\nPositive Example",
    "\nInstruction:",  # the user-oriented prompt's pattern (`instruction_format.instruction_prompt`)
)
# Where a backend may stop generating: every marker but the blank line, which a model may write *before* its
# answer ("Output:\n\nyes"); stopping there would leave nothing, while `clean_prediction` strips it first.
GENERATION_STOP = tuple(m for m in STOP_MARKERS if m.strip())


def clean_prediction(generation: str) -> str:
    """The answer part of a raw generation (either set's): cut where the model starts a new block of the prompt
    pattern.

    Our choice, not SuperNI's (its scorer takes predictions as given): a base model that keeps writing
    "Input: ..." after its answer would otherwise lose ROUGE-L precision for text it was never asked for.
    """
    text = generation.lstrip()
    cut = min((i for i in (text.find(m) for m in STOP_MARKERS) if i >= 0), default=len(text))
    return text[:cut].strip()


def score_tasks(tasks: Sequence[SuperNITask], predictions: Mapping[str, str]) -> dict[str, Any]:
    """Score SuperNI predictions (instance id -> text): `metrics.score_groups` by task, grouped by category."""
    return score_groups(((t.name, t.category, t.instances) for t in tasks), predictions)


def open_root(location: str, s3: Any = None) -> Store:
    """The SuperNI root named by `evaluate.superni` (builtin, a directory or an s3:// prefix), opened read-only."""
    if location == "builtin":
        return store_for(DEFAULT_SUPERNI_ROOT)
    if not location.startswith("s3://") and not Path(location.removeprefix("file://")).expanduser().is_dir():
        raise RefineError(f"evaluate.superni: {location} is not a directory (expected a natural-instructions "
                          "checkout with tasks/ and splits/, an s3:// prefix, or builtin)")
    return store_for(location, s3)
