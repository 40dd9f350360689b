"""Stage `compare`: REFINE-AF vs Self-Instruct per SuperNI task, the paper's headline, with a paired bootstrap.

    refine-af run --stages compare

Each arm's per-task SuperNI score (`compare.metric`, 0..100) from its `evaluate-<arm>` stage goes into
`refine_af.compare.compare_arms`: wins, ties and shares per task, means over tasks with bootstrap intervals (seeded by
the run's `seed`), a per-category table, and the untuned base model as a reference row when `evaluate.include_base`.
The user-oriented scores of each arm are added as a secondary section, and each arm's decontamination (how many
training instances its instances stage dropped for reproducing an evaluation text, by evaluation task) as another.
The arms must have been evaluated with the same `evaluate` settings: numbers from different eval sets are not
comparable.

Inputs:  `refine-af`, `self-instruct`, `base` (each arm's evaluate stage's scores.json; base only when
         evaluate.include_base switches its stage on)
         `decontamination-<arm>` (each training arm's instances stage's decontamination.json)
Outputs: <run>/compare/report.json   `refine_af.compare.compare_arms`'s dict + "user_oriented" {arm: overall or
                                     null}, "decontamination" {arm: enabled, threshold, checked, dropped, by_task,
                                     eval_sets} and "sources" {arm: scores.json URI}
         <run>/compare/report.md     the same as Markdown (`refine_af.compare.render_markdown`)
         <run>/compare/report.png    per-task differences and per-arm means (`refine_af.compare.plot`)
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from refine_af import compare
from refine_af.errors import RefineError
from refine_af.readers import read_input
from refine_af.runner import StageContext
from refine_af.schemas import DecontaminationFile, ReportFile, ScoresFile, parse_json
from refine_af.store import Store

A, B, BASE = "refine-af", "self-instruct", "base"


def run(ctx: StageContext) -> None:
    cfg = ctx.config.compare
    keys = {arm: ctx.input(arm) for arm in (A, B, BASE)}  # the inputs are named by arm; base may be switched off
    arms = [arm for arm, key in keys.items() if key is not None]

    # 1. Every arm's scores, checked before the prefix is claimed.
    scores = {arm: _read(ctx.store, keys[arm], ScoresFile) for arm in arms}
    _check_same_settings(scores)
    decontamination = {arm: _read(ctx.store, ctx.input(f"decontamination-{arm}"), DecontaminationFile)
                       for arm in (A, B)}
    per_task = {arm: {task: s[cfg.metric] for task, s in sc["superni"]["per_task"].items()}
                for arm, sc in scores.items()}
    categories = {task: s["category"]
                  for sc in scores.values() for task, s in sc["superni"]["per_task"].items()}

    # 2. The comparison, plus the secondary user-oriented means.
    try:
        report = compare.compare_arms(per_task, A, B, base=BASE if BASE in scores else None, categories=categories,
                                      tie_tolerance=cfg.tie_tolerance, n_boot=cfg.n_boot, confidence=cfg.confidence,
                                      seed=ctx.config.seed, metric=cfg.metric)
    except ValueError as e:
        raise RefineError(f"stage {ctx.name}: {e}") from None
    report["user_oriented"] = {arm: (sc["user_oriented"] or {}).get("overall") for arm, sc in scores.items()}
    report["decontamination"] = decontamination
    report["sources"] = {arm: f"{ctx.store.uri}/{keys[arm]}" for arm in arms}
    ReportFile.model_validate(report)  # what the CLI's headline reads: a mismatch is a bug here, caught before writing
    ctx.begin()

    # 3. Outputs.
    ctx.write_output("report.json", (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode())
    ctx.write_output("report.md", compare.render_markdown(report).encode())
    ctx.write_output("report.png", compare.plot(report))
    ctx.counts.update(tasks=report["n_tasks"], arms=len(arms),
                      contaminated={arm: d["dropped"] for arm, d in decontamination.items() if d["enabled"]})
    ctx.metrics.update(share_won=round(report["share"][A], 4), wins=report["wins"],
                       sign_test_p=round(report["sign_test"]["p"], 4),
                       mean={arm: None if m["mean"] is None else round(m["mean"], 2)
                             for arm, m in report["means"].items()})
    ctx.provenance.update(sources=report["sources"])


def _read(store: Store, key: str, model: type[BaseModel]) -> dict[str, Any]:
    """An input checked against its schema; a missing file names the stage to run, a bad one the file and field."""
    return parse_json(read_input(store, key), f"{store.uri}/{key}", model).model_dump()


def _check_same_settings(scores: dict[str, dict]) -> None:
    """Refuse arms scored with different `evaluate` settings (a stage rerun alone with --set, say)."""
    recorded = {arm: {k: v for k, v in sc["evaluate"].items() if k != "include_base"}  # no bearing on scores
                for arm, sc in scores.items() if isinstance(sc.get("evaluate"), dict)}
    if len(recorded) < 2:
        return
    first, *others = recorded
    for arm in others:
        keys = sorted(k for k in recorded[first].keys() | recorded[arm].keys()
                      if recorded[first].get(k) != recorded[arm].get(k))
        if keys:
            raise RefineError(f"the {first} and {arm} arms were evaluated with different settings "
                              f"({', '.join(f'evaluate.{k}' for k in keys)}): rerun them with one config")
