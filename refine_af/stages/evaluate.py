"""Stage `evaluate-<arm>`: zero-shot Super-NaturalInstructions and user-oriented instructions, greedy decoding.

    refine-af run --stages evaluate-refine-af,evaluate-self-instruct,evaluate-base

Arms `refine-af` and `self-instruct` are the base model + the LoRA adapter their `sft-<arm>` stage trained; arm
`base` (on when `evaluate.include_base`) is the untuned model, a reference row. Every arm gets the same raw-text
prompts: SuperNI's definition + "Input: ... Output:" (`evalsets.superni.task_prompt`) and, for user-oriented
instructions, the "Instruction: ... Output:" format SFT trains on (`instruction_format.instruction_prompt`), sent as a
user turn of the chat template when the model has one, as SFT trains (`generate.as_user_turn`), and as raw text
otherwise.
Decoding is greedy; a generation is cut where the model starts a new block of the prompt pattern
(`superni.clean_prediction`) and scored with SuperNI's ROUGE-L and exact match.

The eval sets, the adapter and the model are loaded before the stage claims its prefix, so a bad task file, a split
naming a missing task or a missing adapter stops the stage with one line and writes nothing.

Answering is sharded (`evaluate.shards`); decoding is greedy, so any shard count gives the same predictions.

Inputs:  `adapter` (sft-<arm>'s LoRA adapter; arms refine-af and self-instruct)
         evaluate.superni, evaluate.user_oriented  (builtin sets, local paths or s3:// URIs)
Outputs: <run>/evaluate-<arm>/predictions.jsonl  one row per instance: set (superni | user_oriented), task,
                                                  category, id, prediction, references, rougeL and exact_match
                                                  (0..1, as `metrics.rouge_l` / `exact_match` return them), and
                                                  the raw generation
         <run>/evaluate-<arm>/scores.json        {"superni": superni.score_tasks(...), "user_oriented":
                                                  user_oriented.score_user_oriented(...) or null, "arm", "model",
                                                  "adapter", "evaluate": the evaluate config} (scores 0..100;
                                                  `schemas.ScoresFile`, checked before it is written)
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from refine_af.errors import RefineError
from refine_af.evalsets import metrics, superni, user_oriented
from refine_af.generate import SamplingParams, as_user_turn
from refine_af.models import describe
from refine_af.runner import StageContext, config_slice
from refine_af.schemas import ScoresFile
from refine_af.store import jsonl_bytes

BASE = "base"


@dataclass(frozen=True)
class Job:
    """One prompt to answer: which set and task it belongs to, and the instance it scores against."""

    set: str  # "superni" | "user_oriented"
    task: str
    category: str
    instance: metrics.Instance
    prompt: str


def run(ctx: StageContext) -> None:
    arm, cfg = ctx.stage.params["arm"], ctx.config.evaluate

    # 1. The eval sets, validated before anything is claimed or loaded.
    root = superni.open_root(cfg.superni, ctx.config.s3)
    tasks = superni.load_tasks(split=cfg.split, max_tasks=cfg.max_tasks,
                               max_instances=cfg.max_instances_per_task, store=root)
    user = user_oriented.load_configured(cfg.user_oriented, cfg.max_user_oriented, ctx.config.s3)
    superni_jobs = [Job("superni", t.name, t.category, inst, superni.task_prompt(t, inst, cfg.num_pos_examples))
                    for t in tasks for inst in t.instances]
    user_jobs = [Job("user_oriented", u.id, u.motivation_app or metrics.UNCATEGORIZED, inst,
                     user_oriented.build_user_prompt(u, inst)) for u in user for inst in u.instances]

    # 2. Greedy answers from the base model + the arm's SFT adapter (none for base), in shards.
    adapter_key = ctx.input("adapter") if "adapter" in ctx.stage.inputs else None
    if adapter_key and not ctx.store.exists(f"{adapter_key}/adapter_config.json"):
        raise RefineError(f"stage {ctx.name} needs the fine-tuned adapter at {ctx.store.uri}/{adapter_key}/: "
                          f"run stage {adapter_key.split('/')[0]} first")
    params = SamplingParams(temperature=0.0, max_new_tokens=cfg.max_new_tokens, stop=superni.GENERATION_STOP)

    def answer(part: list[Job]) -> list[dict]:
        with ctx.backend_with(adapter_key) as backend:
            prompts = [as_user_turn(backend.tokenizer, j.prompt) for j in part]
            outs = backend.generate(prompts, params, desc=f"evaluate {arm}")
        return [{"set": j.set, "id": j.instance.id, "generation": c.text} for j, c in zip(part, outs, strict=True)]

    answers = ctx.shard_map(superni_jobs + user_jobs, answer)
    generations = {(a["set"], a["id"]): a["generation"] for a in answers}
    ctx.begin()

    # 4. Score: per instance for predictions.jsonl, aggregated (0..100) for scores.json.
    rows = []
    for j in superni_jobs + user_jobs:
        raw = generations[(j.set, j.instance.id)]
        pred = superni.clean_prediction(raw)
        rows.append({"set": j.set, "task": j.task, "category": j.category, "id": j.instance.id, "prediction": pred,
                     "references": list(j.instance.outputs), "rougeL": metrics.rouge_l(pred, j.instance.outputs),
                     "exact_match": metrics.exact_match(pred, j.instance.outputs), "generation": raw})
    preds = {s: {r["id"]: r["prediction"] for r in rows if r["set"] == s} for s in ("superni", "user_oriented")}
    scores = {
        "arm": arm,
        "model": describe(ctx.config.model),
        "adapter": None if adapter_key is None else f"{ctx.store.uri}/{adapter_key}",
        "evaluate": config_slice(ctx.config, "evaluate"),  # no operational keys: shards change nothing
        "superni": superni.score_tasks(tasks, preds["superni"]),
        "user_oriented": user_oriented.score_user_oriented(user, preds["user_oriented"]) if user else None,
    }

    ScoresFile.model_validate(scores)  # what compare reads: a mismatch is a bug here, caught before writing

    # 5. Outputs.
    ctx.write_output("predictions.jsonl", jsonl_bytes(rows))
    ctx.write_output("scores.json", (json.dumps(scores, indent=2, ensure_ascii=False) + "\n").encode())
    overall = scores["superni"]["overall"]
    ctx.metrics.update(superni_rougeL=round(overall["rougeL"], 2), superni_exact_match=round(overall["exact_match"], 2))
    if user:
        ctx.metrics["user_oriented_rougeL"] = round(scores["user_oriented"]["overall"]["rougeL"], 2)
    ctx.counts.update(tasks=len(tasks), instances=len(superni_jobs), user_oriented=len(user_jobs))
    ctx.provenance.update(arm=arm, model=scores["model"], adapter=scores["adapter"], superni=root.uri,
                          user_oriented=user_oriented.location(cfg.user_oriented))
