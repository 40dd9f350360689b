"""The project's file formats as pydantic v2 models, and the one way files are checked against them.

Every file a run reads that a person may write, or that one stage hands another, is declared here (the run config
has its own models in `refine_af.config`):

* `SeedTask`: a line of seed tasks, Self-Instruct's JSONL schema;
* `SuperNITaskFile`: a Super-NaturalInstructions `tasks/<name>.json`;
* `UserTaskLine`: a line of Self-Instruct's `user_oriented_instructions.jsonl`;
* `InstructionRow`: a line of the instructions stage's instructions.jsonl;
* `DatasetRow`: a line of an instances stage's dataset.jsonl (what the sft stage trains on);
* `ScoresFile`: the evaluate stage's scores.json (read by compare; `TASK_SCORES` is what `compare.compare_arms` takes);
* `DecontaminationFile`: an instances stage's decontamination.json (read by compare);
* `ReportFile`: the compare stage's report.json, the parts its readers use (the headline, the Argo UI's figures);
* `Manifest`: a stage's manifest.json, written and read by `refine_af.runner`.

Models are strict (a JSON string is not a boolean, a number not a string) and ignore fields they do not name: files
from other tools carry more. A file that does not fit fails with one line naming the file, the line (JSONL), the
field path and what is wrong, e.g. `seed_tasks.jsonl:3:instances.0.output: missing` (`parse_jsonl`, `parse_json`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from refine_af.errors import RefineError

M = TypeVar("M", bound=BaseModel)


# -- reading and error lines ------------------------------------------------------------------------------------------

_EXPECTED = {"string_type": "a string", "bool_type": "a boolean", "int_type": "an integer", "float_type": "a number",
             "finite_number": "a finite number", "list_type": "a list", "dict_type": "an object",
             "model_type": "an object"}


def _json_kind(value: Any) -> str:
    kinds = {bool: "a boolean", str: "a string", int: "a number", float: "a number", list: "a list", dict: "an object",
             type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def describe(err: Any) -> str:
    """What is wrong with one field, in words (one entry of `ValidationError.errors()`)."""
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "missing"
    if kind == "too_short":
        return "empty"
    if kind == "value_error":
        return str(err["ctx"]["error"])
    if kind == "model_type" and not err["loc"]:
        return f"expected a JSON object, got {_json_kind(err['input'])}"
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]}, got {_json_kind(err['input'])}"
    return err["msg"][:1].lower() + err["msg"][1:]


def field_path(err: Any) -> str:
    return ".".join(str(p) for p in err["loc"])


def error_line(where: str, error: ValidationError) -> str:
    """`<where>:<field.path>: <message>` for the first error (where is `<file>` or `<file>:<line>`), and how many
    more there are: one line, never a traceback."""
    errors = error.errors(include_url=False)
    path = field_path(errors[0])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}{':' + path if path else ''}: {describe(errors[0])}{more}"


def iter_jsonl(data: bytes, source: str) -> Iterator[tuple[int, Any]]:
    """(line number, decoded value) for each non-blank line of JSON Lines; bad bytes or JSON are an error naming
    `source` and the line."""
    for number, line in enumerate(_text(data, source).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as e:
            raise RefineError(f"{source}:{number}: not valid JSON ({e.msg} at column {e.colno})") from None


def validate(model: type[M], obj: Any, where: str) -> M:
    """`obj` (decoded JSON) as `model`, or a RefineError naming `where` and the field."""
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        raise RefineError(error_line(where, e)) from None


def _text(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")  # a byte-order mark is not part of the first line
    except UnicodeDecodeError as e:
        raise RefineError(f"{source}: not UTF-8 text (byte {e.start})") from None


def parse_jsonl(data: bytes, source: str, model: type[M]) -> Iterator[tuple[int, M]]:
    """(line number, record) for each non-blank line of JSONL bytes, checked against `model`. Lazy: a reader that
    stops early leaves the rest unchecked. Errors name `source`, the line and the field."""
    for number, obj in iter_jsonl(data, source):
        yield number, validate(model, obj, f"{source}:{number}")


def decode_json(data: bytes, source: str) -> Any:
    """One JSON document's value; bad bytes or JSON are an error naming `source` and the line."""
    try:
        return json.loads(_text(data, source))
    except json.JSONDecodeError as e:
        raise RefineError(f"{source}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None


def parse_json(data: bytes, source: str, model: type[M]) -> M:
    """One JSON document checked against `model`; errors name `source` and the line (bad JSON) or the field."""
    return validate(model, decode_json(data, source), source)


# -- field types ------------------------------------------------------------------------------------------------------


def _nonblank(value: str) -> str:
    if not value.strip():
        raise ValueError("empty")
    return value


NonBlank = Annotated[str, AfterValidator(_nonblank)]  # kept as written
Stripped = Annotated[str, AfterValidator(lambda v: _nonblank(v).strip())]  # instructions, definitions


class _Record(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


# -- seed tasks, instructions, datasets -------------------------------------------------------------------------------


class SeedInstance(_Record):
    input: str
    output: str


class SeedTask(_Record):
    """One seed task: `{"id", "name", "instruction", "instances": [{"input", "output"}], "is_classification"}`."""

    model_config = ConfigDict(frozen=True)

    # Self-Instruct's ids are strings; a number is taken as its text
    id: Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v)]
    name: str
    instruction: Stripped
    instances: list[SeedInstance]
    is_classification: bool


class InstructionRow(_Record):
    """A generated instruction (the instructions stage's instructions.jsonl); the rest of its fields are provenance."""

    id: str | None = None
    instruction: NonBlank
    is_classification: bool = False


class DatasetRow(_Record):
    """A training example (an instances stage's dataset.jsonl); provenance fields are ignored."""

    instruction: NonBlank
    input: str
    output: NonBlank


# -- evaluation sets --------------------------------------------------------------------------------------------------


class SuperNIExample(_Record):
    input: str
    output: str
    explanation: str = ""


class SuperNIInstance(_Record):
    id: NonBlank | None = None  # default: <task>-<index>
    input: str
    # references: a non-empty list of strings; a bare string is a list of one
    output: Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v), Field(min_length=1)]


def _first_entry(value: Any) -> Any:
    return (value[0] if value else "") if isinstance(value, list) else value


class SuperNITaskFile(_Record):
    """`tasks/<name>.json`. `Definition` may be a list (the official files: its first entry counts) or a string."""

    definition: Annotated[Stripped, BeforeValidator(_first_entry), Field(alias="Definition")]
    categories: list[NonBlank] = Field([], alias="Categories")
    positive_examples: list[SuperNIExample] = Field([], alias="Positive Examples")
    instances: list[SuperNIInstance] = Field(alias="Instances", min_length=1)


class UserInstance(_Record):
    input: str = ""
    output: NonBlank


class UserTaskLine(_Record):
    """A line of `user_oriented_instructions.jsonl`: `{"id", "motivation_app", "instruction", "instances"}`."""

    id: NonBlank
    motivation_app: str = ""
    instruction: Stripped
    instances: list[UserInstance] = Field(min_length=1)


# -- what stages hand each other --------------------------------------------------------------------------------------

FiniteScore = Annotated[float, Field(allow_inf_nan=False)]
TASK_SCORES = TypeAdapter(dict[str, FiniteScore], config=ConfigDict(strict=True))  # task -> score, compare's input


class Score(_Record):
    """Means over instances, 0..100 (SuperNI's `compute_metrics`), and the instance count."""

    exact_match: FiniteScore
    rougeL: FiniteScore  # SuperNI's name
    n: int


class TaskScore(Score):
    category: str


class CategoryScore(Score):
    n_tasks: int


class SetScores(_Record):
    overall: Score
    per_task: dict[str, TaskScore]
    per_category: dict[str, CategoryScore]
    missing: int  # instances without a prediction, scored as ""


class ScoresFile(_Record):
    """An evaluate stage's scores.json."""

    arm: str
    model: str
    adapter: str | None
    evaluate: dict[str, Any]  # the evaluate config slice it was scored with
    superni: SetScores
    user_oriented: SetScores | None


class DecontaminationFile(_Record):
    """An instances stage's decontamination.json: what was checked against the evaluation sets and what was dropped
    (`dropped`, `by_task` only when `enabled`); the dropped rows themselves are left to the file."""

    enabled: bool
    threshold: float
    checked: int
    eval_sets: dict[str, Any] | None = None
    dropped: int | None = None
    by_task: dict[str, int] | None = None


class Mean(_Record):
    mean: FiniteScore | None  # None: the base model has no scores on these tasks
    ci: list[FiniteScore] | None
    n: int


class SignTest(_Record):
    decided: int
    wins: int
    losses: int
    p: FiniteScore


class ReportFile(_Record):
    """The compare stage's report.json (`compare.compare_arms` plus user-oriented, decontamination and sources);
    the fields named here are what `refine-af run` prints and the Argo UI shows, the rest is for people."""

    metric: str
    arms: Annotated[list[str], Field(min_length=2, max_length=2)]
    base: str | None
    n_tasks: int
    wins: dict[str, int]
    share: dict[str, FiniteScore]
    sign_test: SignTest
    means: dict[str, Mean]


class FileRecord(_Record):
    sha256: str
    bytes: int


class Manifest(_Record):
    """A finished stage's manifest.json, in the order the runner writes it. Reading needs only the fingerprint (what
    the runner compares); the rest has defaults so that a hand-written parent manifest still names its fingerprint."""

    stage: str = ""
    fingerprint: str
    version: str = ""
    config: dict[str, Any] = {}
    params: dict[str, Any] = {}
    parents: dict[str, str] = {}
    counts: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    provenance: dict[str, Any] = {}
    files: dict[str, FileRecord] = {}
    resumed: bool = False
    seconds: float | None = None
    finished_at: str | None = None
