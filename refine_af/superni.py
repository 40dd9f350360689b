"""Evaluation sets for the `evaluate` stage: Super-NaturalInstructions and user-oriented instructions.

Pure functions over rows, no model code: load the sets, build zero-shot prompts, score predictions.

Super-NaturalInstructions (SuperNI) is read in its own layout under a root (a local path, `file://` or `s3://`
prefix, read through `refine_af.store`)::

    <root>/tasks/<name>.json                 Definition, Categories, Positive Examples, Instances, ...
    <root>/splits/<split>/test_tasks.txt     one task name per line

`Definition` may be a list (the official files) or a string (some copies); like Tk-Instruct we use its first entry.
`Categories`, `Positive Examples` and instance `id`s are optional; a task without categories is "Uncategorized",
and an instance without an id gets `<task>-<index>`. Instances are taken in file order (`max_instances` keeps the
first N): the official test tasks put their 100 label-balanced evaluation instances first, so the official setting
is `max_instances=100`.

Metrics follow SuperNI's `compute_metrics` (allenai/natural-instructions `eval/automatic/evaluation.py`,
yizhongw/Tk-Instruct `src/compute_metrics.py`), English ("default") track:

* exact match compares `normalize_answer` of both sides: lowercase, drop ASCII punctuation, collapse whitespace.
  Articles are *not* removed: SuperNI's copy of the SQuAD normaliser comments that step out, so
  "The cat." matches "the cat" but not "cat".
* ROUGE-L is `rouge_score.RougeScorer(["rougeL"], use_stemmer=True)` F-measure on the *raw* strings (its tokenizer
  lowercases and keeps `[a-z0-9]+` runs, Porter-stemming tokens longer than 3 characters).
* both take the maximum over an instance's reference outputs; a missing prediction counts as "".

Scale: per-instance functions (`exact_match`, `rouge_l`) return 0..1, as the reference's per-instance functions do;
aggregates (`score_task`, `score_tasks`, `score_user_oriented`) are means over instances times 100, as SuperNI
reports them. Category and overall aggregates pool instances, as SuperNI's `compute_grouped_metrics` does.
The cross-lingual track's GPT-2 tokenizer is not implemented: the default tokenizer drops non-ASCII letters, so
non-English outputs score near 0 here (the 119 English test tasks are unaffected).

User-oriented instructions use Self-Instruct's `user_oriented_instructions.jsonl` schema (`id`, `motivation_app`,
`instruction`, `instances[{input, output}]`) and are scored with the same ROUGE-L against the reference output.

With no location given, the loaders read the small sets written for this project under `refine_af/data/eval/`.
"""

from __future__ import annotations

import functools
import json
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from refine_af.errors import RefineError
from refine_af.prompts import template
from refine_af.store import Store, open_store

__all__ = [
    "DEFAULT_SUPERNI_ROOT",
    "DEFAULT_USER_ORIENTED",
    "Example",
    "GENERATION_STOP",
    "Instance",
    "STOP_MARKERS",
    "SuperNITask",
    "UserTask",
    "build_prompt",
    "build_user_prompt",
    "clean_prediction",
    "exact_match",
    "load_tasks",
    "load_user_oriented",
    "normalize_answer",
    "rouge_l",
    "score_task",
    "score_tasks",
    "score_user_oriented",
]

EVAL_DATA = Path(__file__).parent / "data" / "eval"
DEFAULT_SUPERNI_ROOT = EVAL_DATA / "superni"
DEFAULT_USER_ORIENTED = EVAL_DATA / "user_oriented.jsonl"
UNCATEGORIZED = "Uncategorized"


@dataclass(frozen=True)
class Example:
    """A demonstration shown in a prompt (SuperNI's `Positive Examples`)."""

    input: str
    output: str
    explanation: str = ""


@dataclass(frozen=True)
class Instance:
    """One evaluation item: the model sees `input`; any of `outputs` is a correct answer."""

    id: str
    input: str
    outputs: tuple[str, ...]


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


@dataclass(frozen=True)
class UserTask:
    """One user-oriented instruction; instance ids are `<id>-<index>`."""

    id: str
    motivation_app: str
    instruction: str
    instances: tuple[Instance, ...]


# -- reading ----------------------------------------------------------------------------------------------------------


def _store_for(location: str | Path) -> Store:
    return open_store(str(location), check=False)  # read-only use: no write probe, no bucket round trip


def _read_text(store: Store, key: str) -> str:
    where = f"{store.uri}/{key}"
    try:
        data = store.read_bytes(key)
    except FileNotFoundError:
        raise RefineError(f"{where}: file not found") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RefineError(f"{where}: not UTF-8 text (byte {e.start})") from None


def _want_str(value: Any, where: str, field: str, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        kind = "a string" if allow_empty else "a non-empty string"
        raise RefineError(f"{where}: field '{field}' must be {kind}, got {json.dumps(value)[:60]}")
    return value


def _want_list(value: Any, where: str, field: str) -> list:
    if not isinstance(value, list):
        raise RefineError(f"{where}: field '{field}' must be a list, got {type(value).__name__}")
    return value


def _outputs(value: Any, where: str, field: str) -> tuple[str, ...]:
    """SuperNI instance outputs: a non-empty list of strings (a bare string is taken as a list of one)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise RefineError(f"{where}: field '{field}' must be a non-empty list of strings")
    return tuple(value)


# -- Super-NaturalInstructions ----------------------------------------------------------------------------------------


def parse_task(name: str, data: Any, where: str, max_instances: int | None = None) -> SuperNITask:
    """Validate one decoded task file; `where` names the file in error messages."""
    if not isinstance(data, dict):
        raise RefineError(f"{where}: expected a JSON object, got {type(data).__name__}")
    for field in ("Definition", "Instances"):
        if field not in data:
            raise RefineError(f"{where}: missing field '{field}'")
    definition = data["Definition"]
    if isinstance(definition, list):
        definition = definition[0] if definition else ""
    definition = _want_str(definition, where, "Definition", allow_empty=False).strip()
    categories = _want_list(data.get("Categories", []), where, "Categories")
    for i, c in enumerate(categories):
        _want_str(c, where, f"Categories[{i}]", allow_empty=False)
    examples = []
    for i, ex in enumerate(_want_list(data.get("Positive Examples", []), where, "Positive Examples")):
        field = f"Positive Examples[{i}]"
        if not isinstance(ex, dict):
            raise RefineError(f"{where}: field '{field}' must be an object")
        examples.append(
            Example(
                input=_want_str(ex.get("input"), where, f"{field}.input"),
                output=_want_str(ex.get("output"), where, f"{field}.output"),
                explanation=_want_str(ex.get("explanation", ""), where, f"{field}.explanation"),
            )
        )
    raw = _want_list(data["Instances"], where, "Instances")
    if not raw:
        raise RefineError(f"{where}: field 'Instances' is empty")
    instances, seen = [], set()
    for i, inst in enumerate(raw[:max_instances] if max_instances is not None else raw):
        field = f"Instances[{i}]"
        if not isinstance(inst, dict):
            raise RefineError(f"{where}: field '{field}' must be an object")
        iid = _want_str(inst.get("id", f"{name}-{i}"), where, f"{field}.id", allow_empty=False)
        if iid in seen:
            raise RefineError(f"{where}: field '{field}.id' repeats the id '{iid}'")
        seen.add(iid)
        instances.append(
            Instance(
                id=iid,
                input=_want_str(inst.get("input"), where, f"{field}.input"),
                outputs=_outputs(inst.get("output"), where, f"{field}.output"),
            )
        )
    return SuperNITask(name, definition, tuple(categories), tuple(examples), tuple(instances))


def read_split(store: Store, split: str = "default") -> list[tuple[int, str]]:
    """(line number, task name) for each task `splits/<split>/test_tasks.txt` lists, first occurrence kept."""
    key = f"splits/{split}/test_tasks.txt"
    names, seen = [], set()
    for lineno, line in enumerate(_read_text(store, key).splitlines(), 1):
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
    store = store or _store_for(root if root is not None else DEFAULT_SUPERNI_ROOT)
    split_where = f"{store.uri}/splits/{split}/test_tasks.txt"
    tasks, ids = [], set()
    for lineno, name in read_split(store, split)[:max_tasks]:
        key = f"tasks/{name}.json"
        where = f"{store.uri}/{key}"
        try:
            text = store.read_bytes(key).decode("utf-8-sig")
        except FileNotFoundError:
            raise RefineError(
                f"{split_where} line {lineno}: task '{name}' does not exist (no {where})"
            ) from None
        except UnicodeDecodeError as e:
            raise RefineError(f"{where}: not UTF-8 text (byte {e.start})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise RefineError(
                f"{where}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
            ) from None
        task = parse_task(name, data, where, max_instances)
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


def build_prompt(task: SuperNITask, instance: Instance, num_pos_examples: int = 0) -> str:
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
    "\nInstruction:",  # the user-oriented prompt's pattern (`instruction_prompt`)
)
# Where a backend may stop generating: every marker but the blank line, which a model may write *before* its
# answer ("Output:\n\nyes"); stopping there would leave nothing, while `clean_prediction` strips it first.
GENERATION_STOP = tuple(m for m in STOP_MARKERS if m.strip())


def clean_prediction(generation: str) -> str:
    """The answer part of a raw generation: cut where the model starts a new block of the prompt pattern.

    Our choice, not SuperNI's (its scorer takes predictions as given): a base model that keeps writing
    "Input: ..." after its answer would otherwise lose ROUGE-L precision for text it was never asked for.
    """
    text = generation.lstrip()
    cut = min((i for i in (text.find(m) for m in STOP_MARKERS) if i >= 0), default=len(text))
    return text[:cut].strip()


# -- metrics ----------------------------------------------------------------------------------------------------------

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SuperNI's exact-match normalisation: lowercase, drop ASCII punctuation, collapse whitespace (articles kept)."""
    return " ".join(text.lower().translate(_PUNCTUATION).split())


def _refs(references: Sequence[str] | str) -> Sequence[str]:
    refs = [references] if isinstance(references, str) else references
    if not refs:
        raise ValueError("an instance needs at least one reference output")
    return refs


def exact_match(prediction: str, references: Sequence[str] | str) -> float:
    """1.0 when the normalised prediction equals any normalised reference, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(r) for r in _refs(references)))


@functools.cache
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, references: Sequence[str] | str) -> float:
    """ROUGE-L F-measure (0..1, stemmed, default tokenizer), maximum over the references."""
    scorer = _scorer()
    return max(scorer.score(target=r, prediction=prediction)["rougeL"].fmeasure for r in _refs(references))


def score_task(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """SuperNI's `compute_metrics`: {"exact_match", "rougeL"} as 0..100 means over instances, plus "n"."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    return _mean_scores([(exact_match(p, r), rouge_l(p, r)) for p, r in zip(predictions, references)])


def _mean_scores(rows: Sequence[tuple[float, float]]) -> dict[str, float]:
    n = len(rows)
    return {
        "exact_match": 100.0 * sum(r[0] for r in rows) / n if n else 0.0,
        "rougeL": 100.0 * sum(r[1] for r in rows) / n if n else 0.0,
        "n": n,
    }


def _score_groups(
    groups: Iterable[tuple[str, str, Sequence[Instance]]], predictions: Mapping[str, str]
) -> dict[str, Any]:
    """Score (name, category, instances) groups; predictions are keyed by instance id, missing ones count as ""."""
    per_task: dict[str, dict] = {}
    by_category: dict[str, list] = {}
    pooled: list[tuple[float, float]] = []
    missing = 0
    for name, category, instances in groups:
        rows = []
        for inst in instances:
            pred = predictions.get(inst.id)
            missing += pred is None
            pred = pred or ""
            rows.append((exact_match(pred, inst.outputs), rouge_l(pred, inst.outputs)))
        per_task[name] = {**_mean_scores(rows), "category": category}
        by_category.setdefault(category, []).extend(rows)
        pooled.extend(rows)
    per_category = {
        c: {**_mean_scores(rows), "n_tasks": sum(t["category"] == c for t in per_task.values())}
        for c, rows in sorted(by_category.items())
    }
    return {
        "overall": _mean_scores(pooled),
        "per_task": per_task,
        "per_category": per_category,
        "missing": missing,
    }


def score_tasks(tasks: Sequence[SuperNITask], predictions: Mapping[str, str]) -> dict[str, Any]:
    """Score SuperNI predictions (instance id -> text).

    Returns {"overall", "per_task": {name: {..., "category"}}, "per_category": {category: {..., "n_tasks"}},
    "missing"}, each score dict holding "exact_match", "rougeL" (0..100) and "n" (instances).
    """
    return _score_groups(((t.name, t.category, t.instances) for t in tasks), predictions)


# -- user-oriented instructions ---------------------------------------------------------------------------------------


def parse_user_task(data: Any, where: str) -> UserTask:
    """Validate one decoded user-oriented line; `where` names the file and line in error messages."""
    if not isinstance(data, dict):
        raise RefineError(f"{where}: expected a JSON object, got {type(data).__name__}")
    for field in ("id", "instruction", "instances"):
        if field not in data:
            raise RefineError(f"{where}: missing field '{field}'")
    tid = _want_str(data["id"], where, "id", allow_empty=False)
    raw = _want_list(data["instances"], where, "instances")
    if not raw:
        raise RefineError(f"{where}: field 'instances' is empty")
    instances = []
    for i, inst in enumerate(raw):
        field = f"instances[{i}]"
        if not isinstance(inst, dict):
            raise RefineError(f"{where}: field '{field}' must be an object")
        instances.append(
            Instance(
                id=f"{tid}-{i}",
                input=_want_str(inst.get("input", ""), where, f"{field}.input"),
                outputs=(_want_str(inst.get("output"), where, f"{field}.output", allow_empty=False),),
            )
        )
    return UserTask(
        id=tid,
        motivation_app=_want_str(data.get("motivation_app", ""), where, "motivation_app"),
        instruction=_want_str(data["instruction"], where, "instruction", allow_empty=False).strip(),
        instances=tuple(instances),
    )


def load_user_oriented(
    uri: str | Path | None = None, *, max_items: int | None = None, store: Store | None = None
) -> list[UserTask]:
    """User-oriented instructions from a JSONL file (local path, `file://` or `s3://` URI; default: embedded set).

    With an open `store`, `uri` is the key of the file inside it.
    """
    if store is None:
        location = str(uri if uri is not None else DEFAULT_USER_ORIENTED)
        if location.startswith("s3://"):
            parent, _, key = location.rpartition("/")
        else:
            path = Path(location.removeprefix("file://"))
            parent, key = str(path.parent), path.name
        store = _store_for(parent)
    elif uri is None:
        raise ValueError("with a store, uri must name the key of the JSONL file")
    else:
        key = str(uri)
    where = f"{store.uri}/{key}"
    items: list[UserTask] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(_read_text(store, key).splitlines(), 1):
        if not line.strip():
            continue
        if max_items is not None and len(items) >= max_items:
            break
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise RefineError(f"{where} line {lineno}: invalid JSON at column {e.colno}: {e.msg}") from None
        item = parse_user_task(data, f"{where} line {lineno}")
        if item.id in seen:
            raise RefineError(
                f"{where} line {lineno}: field 'id' repeats '{item.id}' from line {seen[item.id]}"
            )
        seen[item.id] = lineno
        items.append(item)
    if not items:
        raise RefineError(f"{where}: no instructions in the file")
    return items


def instruction_prompt(instruction: str, input: str = "") -> str:
    """The plain instruction format shared by fine-tuning (stage sft) and user-oriented evaluation
    (prompts/instruction_prompt.txt, or instruction_prompt_input.txt when there is an input): it ends with "Output:"
    for the model to continue."""
    if input.strip():
        return template("instruction_prompt_input").substitute(instruction=instruction.strip(), input=input.strip())
    return template("instruction_prompt").substitute(instruction=instruction.strip())


def build_user_prompt(task: UserTask, instance: Instance) -> str:
    return instruction_prompt(task.instruction, instance.input)


def score_user_oriented(tasks: Sequence[UserTask], predictions: Mapping[str, str]) -> dict[str, Any]:
    """Score user-oriented predictions (instance id -> text); same shape as `score_tasks`, grouped by app."""
    return _score_groups(((t.id, t.motivation_app or UNCATEGORIZED, t.instances) for t in tasks), predictions)
