"""Stage `instances-<arm>`: every instruction gets input/output instances, and the result is the dataset.

    refine-af run --stages instances-refine-af,instances-self-instruct

Arm `refine-af` generates with the RL-trained policy (the base model + the adapter under <run>/rl/adapter/),
arm `self-instruct` with the untrained base model: the paper's comparison. Classification instructions are written
output-first, others input-first (`refine_af.instance_format`). Dropped, with counts by reason: unparseable
completions, empty outputs, outputs equal to their input, and duplicates of an instance already kept.

Generation is sharded (`instances.shards`): each sample draws from its own seed, derived from the run seed, the
instruction and the sample's index (the same in both arms, so the arms differ by their policy, not by their draws),
so any shard count or batch size gives the same dataset. Filtering happens after the merge, over all completions.

Decontamination (`instances.decontaminate`, on by default): a kept row whose instruction, or input + output, has
ROUGE-L F above `instances.decontaminate_threshold` against a text of the evaluation sets (those the `evaluate`
section names: SuperNI definitions and evaluated instances, user-oriented instructions and instances) is dropped as
"contaminated" and named, with the evaluation task it matched, in decontamination.json and the dataset card
(`refine_af.decontaminate`). The evaluation sets are loaded before generation, so a bad location costs no model time.

Inputs:  `instructions` (the instructions stage's accepted instructions), `adapter` (arm refine-af: the RL policy)
Outputs: <run>/instances-<arm>/dataset.jsonl      instruction, input, output + provenance, one row per instance
         <run>/instances-<arm>/alpaca.json        the same rows as Alpaca-style JSON (instruction, input, output)
         <run>/instances-<arm>/dataset.parquet    the same rows, loadable with `datasets.load_dataset("parquet", ...)`
         <run>/instances-<arm>/README.md          a dataset card: counts, models, config, decontamination
         <run>/instances-<arm>/decontamination.json  the evaluation sets checked, the threshold, drops by task and
                                                  every dropped row with the evaluation text it matched
         <run>/instances-<arm>/shards/            every completion as generated, per shard
"""

from __future__ import annotations

import io
import json
import logging
import time

from refine_af import __version__, decontaminate, instance_format
from refine_af.errors import RefineError
from refine_af.generate import SamplingParams
from refine_af.models import describe
from refine_af.readers import load_instructions
from refine_af.runner import StageContext, config_slice
from refine_af.seeds import derive
from refine_af.store import jsonl_bytes

log = logging.getLogger("refine_af")


def run(ctx: StageContext) -> None:
    arm, cfg = ctx.stage.params["arm"], ctx.config.instances
    instructions = load_instructions(ctx.store, ctx.input("instructions"))
    adapter_key = ctx.input("adapter") if "adapter" in ctx.stage.inputs else None
    if adapter_key and not ctx.store.exists(f"{adapter_key}/adapter_config.json"):
        raise RefineError(f"stage {ctx.name} needs the RL adapter at {ctx.store.uri}/{adapter_key}/: "
                          "run the rl stage first")
    eval_texts, eval_sets = decontaminate.load_eval_texts(ctx.config.evaluate, ctx.config.s3) \
        if cfg.decontaminate else ([], None)

    # 1. per_instruction samples of every instruction, each with a seed of its own.
    jobs = [(row, k) for row in instructions for k in range(cfg.per_instruction)]
    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                            stop=instance_format.STOP)

    def generate(part: list) -> list[dict]:
        # the generator: the trained policy for refine-af, the base model for self-instruct
        with ctx.backend_with(adapter_key) as backend:
            prompts = [instance_format.build(r["instruction"], r["is_classification"]) for r, _ in part]
            seeds = [derive(ctx.config.seed, "instances", r["instruction"], k) for r, k in part]
            outs = backend.generate(prompts, params, desc=f"instances ({arm})", seeds=seeds)
        return [{"instruction_id": r["id"], "sample": k, "text": c.text, "finish_reason": c.finish_reason}
                for (r, k), c in zip(part, outs, strict=True)]

    completions = ctx.shard_map(jobs, generate)
    ctx.begin()

    # 2. Parse and filter; then drop what reproduces an evaluation text.
    rows, dropped = select([r for r, _ in jobs], [c["text"] for c in completions], arm)
    report = {"enabled": cfg.decontaminate, "threshold": cfg.decontaminate_threshold, "eval_sets": eval_sets,
              "checked": len(rows) if cfg.decontaminate else 0}
    if cfg.decontaminate:
        started = time.perf_counter()
        rows, contaminated = decontaminate.Decontaminator(eval_texts, cfg.decontaminate_threshold).split(rows)
        log.info("%s: decontamination checked %d rows against %d evaluation texts in %.2f s, dropped %d", ctx.name,
                 report["checked"], len(eval_texts), time.perf_counter() - started, len(contaminated))
        dropped["contaminated"] = len(contaminated)
        report.update(dropped=len(contaminated), by_task=_by_task(contaminated), rows=contaminated)
    if not rows:
        ctx.store.delete(ctx.name)  # nothing half-written: the stage did not happen
        raise RefineError(f"{ctx.name}: every instance was dropped ({_reasons(dropped)}) out of {len(jobs)}: "
                          "raise instances.max_new_tokens or check the model")

    # 4. Outputs: JSONL, Alpaca JSON, Parquet and a dataset card.
    ctx.write_output("dataset.jsonl", jsonl_bytes(rows))
    alpaca = [{"instruction": r["instruction"], "input": r["input"], "output": r["output"]} for r in rows]
    ctx.write_output("alpaca.json", json.dumps(alpaca, indent=1, ensure_ascii=False).encode())
    ctx.write_output("dataset.parquet", _parquet(rows))
    ctx.write_output("decontamination.json", (json.dumps(report, indent=1, ensure_ascii=False) + "\n").encode())
    ctx.counts.update(instructions=len(instructions), generated=len(jobs), kept=len(rows),
                      dropped=sum(dropped.values()), dropped_by_reason=dropped,
                      instructions_covered=len({r["instruction_id"] for r in rows}),
                      contaminated_by_task=report.get("by_task", {}))
    ctx.provenance.update(arm=arm, model=describe(ctx.config.model),
                          adapter=f"{ctx.store.uri}/{adapter_key}" if adapter_key else None,
                          prompts=list(ctx.stage.prompts))
    ctx.write_output("README.md", _card(ctx, arm, rows, report).encode())


def select(jobs: list[dict], texts: list[str], arm: str) -> tuple[list[dict], dict[str, int]]:
    """Parse each completion of `jobs` (instruction rows) and keep the good instances; drop counts by reason."""
    rows, seen = [], set()
    dropped = {"unparseable": 0, "empty_output": 0, "output_equals_input": 0, "duplicate": 0}
    for job, text in zip(jobs, texts, strict=True):
        parsed = instance_format.parse(text, job["is_classification"])
        reason = None
        if parsed is None:
            reason = "unparseable"
        elif not parsed[1].strip():
            reason = "empty_output"
        elif parsed[0].strip().lower() == parsed[1].strip().lower():
            reason = "output_equals_input"
        elif (job["instruction"], parsed[0].lower(), parsed[1].lower()) in seen:
            reason = "duplicate"
        if reason:
            dropped[reason] += 1
            continue
        seen.add((job["instruction"], parsed[0].lower(), parsed[1].lower()))
        rows.append({"instruction": job["instruction"], "input": parsed[0], "output": parsed[1],
                     "is_classification": job["is_classification"], "instruction_id": job.get("id"), "arm": arm})
    return rows, dropped


def _by_task(contaminated: list[dict]) -> dict[str, int]:
    """Dropped rows per evaluation task ("<set>/<task>"), most first."""
    counts: dict[str, int] = {}
    for r in contaminated:
        name = f"{r['match']['set']}/{r['match']['task']}"
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _decontamination_line(report: dict) -> str:
    if not report["enabled"]:
        return "off (instances.decontaminate: false): the rows were not checked against the evaluation sets"
    sets = report["eval_sets"]
    against = f"{sets['superni']['tasks']} SuperNI tasks ({sets['superni']['instances']} instances)"
    if sets["user_oriented"]:
        against += f" and {sets['user_oriented']['instructions']} user-oriented instructions"
    tasks = ", ".join(f"{k}: {v}" for k, v in report["by_task"].items())
    return (f"{report['dropped']} of {report['checked']} instances dropped for ROUGE-L F > {report['threshold']:g} "
            f"against {against}" + (f" (by evaluation task: {tasks}; rows in decontamination.json)" if tasks else ""))


def _reasons(dropped: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in dropped.items() if v) or "none"


def _parquet(rows: list[dict]) -> bytes:
    from datasets import Dataset

    buffer = io.BytesIO()
    Dataset.from_list(rows).to_parquet(buffer)
    return buffer.getvalue()


def _card(ctx: StageContext, arm: str, rows: list[dict], decontamination: dict) -> str:
    c = ctx.counts
    return f"""---
license: apache-2.0
task_categories: [text-generation]
configs:
- config_name: default
  data_files: dataset.parquet
---
# refine-af instruction dataset ({arm} arm)

Generated by refine-af {__version__} (REFINE-AF, arXiv 2505.06548).

- Instances: {len(rows)} from {c['instructions_covered']} of {c['instructions']} instructions
  ({c['generated']} generated, {c['dropped']} dropped: {_reasons(c['dropped_by_reason'])})
- Decontamination: {_decontamination_line(decontamination)}
- Generator: {describe(ctx.config.model)}{' + the RL-trained LoRA adapter' if arm == 'refine-af' else ''}
- Config: `{json.dumps(config_slice(ctx.config, 'instances'))}`, seed {ctx.config.seed}
- Files: dataset.jsonl, alpaca.json (instruction/input/output), dataset.parquet, decontamination.json

Load it with `datasets.load_dataset("parquet", data_files="dataset.parquet")`.
"""
