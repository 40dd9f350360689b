"""SuperNI's metrics: exact match and ROUGE-L per instance, and the grouped means SuperNI reports.

They follow SuperNI's `compute_metrics` (allenai/natural-instructions `eval/automatic/evaluation.py`,
yizhongw/Tk-Instruct `src/compute_metrics.py`), English ("default") track:

* exact match compares `normalize_answer` of both sides: lowercase, drop ASCII punctuation, collapse whitespace.
  Articles are *not* removed: SuperNI's copy of the SQuAD normaliser comments that step out, so
  "The cat." matches "the cat" but not "cat".
* ROUGE-L is `rouge_score.RougeScorer(["rougeL"], use_stemmer=True)` F-measure on the *raw* strings (its tokenizer
  lowercases and keeps `[a-z0-9]+` runs, Porter-stemming tokens longer than 3 characters).
* both take the maximum over an instance's reference outputs; a missing prediction counts as "".

Scale: per-instance functions (`exact_match`, `rouge_l`) return 0..1, as the reference's per-instance functions do;
aggregates (`score_task`, `score_groups`) are means over instances times 100, as SuperNI reports them. Category and
overall aggregates pool instances, as SuperNI's `compute_grouped_metrics` does.
The cross-lingual track's GPT-2 tokenizer is not implemented: the default tokenizer drops non-ASCII letters, so
non-English outputs score near 0 here (the 119 English test tasks are unaffected).
"""

from __future__ import annotations

import functools
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["UNCATEGORIZED", "Instance", "exact_match", "normalize_answer", "rouge_l", "score_groups", "score_task"]

UNCATEGORIZED = "Uncategorized"


@dataclass(frozen=True)
class Instance:
    """One evaluation item: the model sees `input`; any of `outputs` is a correct answer."""

    id: str
    input: str
    outputs: tuple[str, ...]


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


def score_groups(
    groups: Iterable[tuple[str, str, Sequence[Instance]]], predictions: Mapping[str, str]
) -> dict[str, Any]:
    """Score (name, category, instances) groups; predictions are keyed by instance id, missing ones count as "".

    Returns {"overall", "per_task": {name: {..., "category"}}, "per_category": {category: {..., "n_tasks"}},
    "missing"}, each score dict holding "exact_match", "rougeL" (0..100) and "n" (instances): `schemas.SetScores`.
    """
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
