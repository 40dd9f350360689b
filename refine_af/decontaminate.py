"""Decontamination: no evaluation item in the training data.

Every training row (instruction, input, output) of an instances stage is checked against the evaluation sets the
evaluate stages score, loaded with the same `evaluate` settings (`load_eval_texts`): SuperNI's task definitions and the
instances evaluated (the first `max_instances_per_task` of the first `max_tasks` tasks of the split), and the
user-oriented instructions with their instances. Two comparisons, each through the exact ROUGE-L filter of
`refine_af.dedup` (rouge_score's F-measure, unstemmed, as the instruction pool's near-duplicate test):

* the row's instruction against the evaluation instructions (SuperNI `Definition`s, user-oriented instructions);
* the row's input and output (joined by a newline) against each evaluation instance's input and reference output.

A row is contaminated when either scores above the threshold (strictly, as the near-duplicate test). Kept apart
because ROUGE-L F-measure is length-normalised: a training instance that copies a test instance would score far below
any threshold against the test task's definition + instance, a text several times longer. The same holds for a short
instruction quoting part of a long definition: it is not caught, as Self-Instruct's overlap analysis would not either.

Very short texts are left as they are: a one-word row can only score above 0.7 against an evaluation text of one or
two words, and such a match is reported with the rest, not hidden by a length cut that would also spare short copies
(a word-analogy instance is four tokens).

The match is named (set, task, instance id, kind, score, the evaluation text) so a dataset card can say what was
dropped and why. `Decontaminator` builds one filter per kind once; a check is a pruned index lookup, not a scan.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from refine_af.dedup import NearDuplicateFilter
from refine_af.evalsets import superni, user_oriented

__all__ = ["Decontaminator", "EvalText", "eval_texts", "load_eval_texts"]

INSTRUCTION, INSTANCE = "instruction", "instance"


@dataclass(frozen=True)
class EvalText:
    """One evaluation text a training row must not reproduce."""

    set: str  # "superni" | "user_oriented"
    task: str  # SuperNI task name or user-oriented id
    kind: str  # INSTRUCTION | INSTANCE
    text: str
    id: str | None = None  # the instance id (instances only)


def instance_text(input: str, output: str) -> str:
    return f"{input}\n{output}"


def eval_texts(tasks: Sequence[superni.SuperNITask], user: Sequence[user_oriented.UserTask]) -> list[EvalText]:
    """The texts of the evaluation sets: each definition / instruction, each instance with each reference output."""
    out = []
    for t in tasks:
        out.append(EvalText("superni", t.name, INSTRUCTION, t.definition))
        out += [EvalText("superni", t.name, INSTANCE, instance_text(i.input, o), i.id) for i in t.instances
                for o in i.outputs]
    for u in user:
        out.append(EvalText("user_oriented", u.id, INSTRUCTION, u.instruction))
        out += [EvalText("user_oriented", u.id, INSTANCE, instance_text(i.input, o), i.id) for i in u.instances
                for o in i.outputs]
    return out


def load_eval_texts(evaluate: Any, s3: Any = None) -> tuple[list[EvalText], dict[str, Any]]:
    """The evaluation texts for the `evaluate` config section, and a summary of what they came from."""
    tasks = superni.load_tasks(split=evaluate.split, max_tasks=evaluate.max_tasks,
                               max_instances=evaluate.max_instances_per_task,
                               store=superni.open_root(evaluate.superni, s3))
    user = user_oriented.load_configured(evaluate.user_oriented, evaluate.max_user_oriented, s3)
    summary = {
        "superni": {"location": evaluate.superni, "split": evaluate.split, "tasks": len(tasks),
                    "instances": sum(len(t.instances) for t in tasks)},
        "user_oriented": None if evaluate.user_oriented is None else {
            "location": evaluate.user_oriented, "instructions": len(user),
            "instances": sum(len(u.instances) for u in user)},
    }
    return eval_texts(tasks, user), summary


class Decontaminator:
    """Finds the evaluation text a training row reproduces (ROUGE-L F above `threshold`), if any."""

    def __init__(self, texts: Iterable[EvalText], threshold: float) -> None:
        self.threshold = threshold
        self._items: dict[str, list[EvalText]] = {INSTRUCTION: [], INSTANCE: []}
        for t in texts:
            self._items[t.kind].append(t)
        self._pools = {kind: NearDuplicateFilter(threshold, [t.text for t in items])
                       for kind, items in self._items.items()}
        # nearest() returns a text; its first holder is the one nearest() means (earliest on ties)
        self._first = {kind: {} for kind in self._items}
        for kind, items in self._items.items():
            for t in items:
                self._first[kind].setdefault(t.text, t)
        self._cache: dict[tuple[str, str], dict | None] = {}  # an instruction is checked once, not per sample

    def __len__(self) -> int:
        return sum(len(items) for items in self._items.values())

    def _check(self, kind: str, text: str) -> dict | None:
        key = (kind, text)
        if key not in self._cache:
            pool, match = self._pools[kind], None
            if pool.is_duplicate(text):  # the pruned test first: most rows match nothing
                nearest, score = pool.nearest(text)
                t = self._first[kind][nearest]
                match = {"kind": kind, "set": t.set, "task": t.task, "id": t.id, "rouge_l": round(score, 4),
                         "text": t.text}
            self._cache[key] = match
        return self._cache[key]

    def match(self, instruction: str, input: str, output: str) -> dict | None:
        """The first evaluation text the row reproduces (its instruction checked first), or None."""
        return self._check(INSTRUCTION, instruction) or self._check(INSTANCE, instance_text(input, output))

    def split(self, rows: Sequence[dict]) -> tuple[list[dict], list[dict]]:
        """(clean rows, dropped rows each with its "match"), order kept."""
        kept, dropped = [], []
        for r in rows:
            m = self.match(r["instruction"], r["input"], r["output"])
            if m is None:
                kept.append(r)
            else:
                dropped.append({**r, "match": m})
        return kept, dropped
