"""Stage `instructions`: Self-Instruct bootstrapping of new task instructions from the seed tasks.

    refine-af run --stages instructions --set instructions.target=40

Each round builds `prompts_per_round` prompts of `prompt_instructions` numbered instructions (`seed_in_prompt` from
the seeds, the rest from instructions accepted so far, seeds filling in while there are too few), asks the model to
continue the list, and parses the continuation. A candidate is dropped, with the reason recorded, when it has fewer
than 4 or more than 150 words, uses a blocked keyword (tasks a text model cannot do: images, files, maps...), starts
with "Write a program", or starts with punctuation or a non-ASCII character; otherwise it is dropped when its ROUGE-L
F-measure against any pooled instruction (seeds + accepted) exceeds `rouge_threshold`. Accepted instructions are then
labelled classification or not with a few-shot prompt built from the seed tasks' own labels.

Inputs:  the seed tasks (`seeds`), the model (`model`).
Outputs: <run>/instructions/instructions.jsonl  accepted: instruction, is_classification, provenance
         <run>/instructions/rejected.jsonl      every dropped candidate with its reason and nearest pooled neighbour
         <run>/instructions/rounds/NNNNN.jsonl  per-round checkpoints; a killed run resumes after the last one
Every round draws from its own RNG (seed, round), so a resumed run produces exactly what an uninterrupted one would.
"""

from __future__ import annotations

import random
import re
import string

from tqdm.auto import tqdm

from refine_af.dedup import NearDuplicateFilter
from refine_af.generate import SamplingParams
from refine_af.models import describe
from refine_af.prompts import template
from refine_af.readers import SeedTask, load_seeds
from refine_af.runner import StageContext
from refine_af.seeds import derive
from refine_af.store import jsonl_bytes, read_jsonl

MIN_WORDS, MAX_WORDS = 4, 150
# Self-Instruct's list: tasks a language model cannot carry out in text.
BLOCKED = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw",
           "plot", "go to")
_BLOCKED_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in BLOCKED) + r")\b", re.IGNORECASE)
_ITEM_RE = re.compile(r"\n\s*\d+\s*[.)]\s*")
CLASSIFY_SHOTS = 6  # examples of each label in the classification prompt


# -- pure helpers (unit-tested without a model) -----------------------------------------------------------------------


def self_instruct_prompt(rng: random.Random, seeds: list[str], accepted: list[str], total: int, from_seeds: int) -> str:
    """A numbered list of `total` instructions ending in the next number, for the model to continue."""
    machine = rng.sample(accepted, min(total - from_seeds, len(accepted)))
    shown = machine + rng.sample(seeds, min(len(seeds), total - len(machine)))  # a tiny seed file shows all
    rng.shuffle(shown)
    numbered = "".join(f"{i}. {text}\n" for i, text in enumerate(shown, start=1))
    return template("instructions").substitute(instructions=numbered + f"{len(shown) + 1}.")


def parse_candidates(completion: str, truncated: bool) -> list[str]:
    """Instructions from a numbered continuation; the last item is dropped when generation was cut off."""
    items = _ITEM_RE.split("\n" + completion.lstrip(" "))
    items = [re.sub(r"\s+", " ", item).strip() for item in items]
    if truncated and items:
        items = items[:-1]
    return [item[0].upper() + item[1:] for item in items if item]


def rule_violation(text: str) -> str | None:
    """The name of the first Self-Instruct rule `text` breaks, or None."""
    words = len(text.split())
    if words < MIN_WORDS:
        return "too_short"
    if words > MAX_WORDS:
        return "too_long"
    if _BLOCKED_RE.search(text):
        return "blocked_keyword"
    if text.startswith("Write a program"):
        return "write_a_program"
    if text[0] in string.punctuation:
        return "punctuation_start"
    if not text[0].isascii():
        return "non_ascii_start"
    return None


def classify_prompt(examples: str, instruction: str) -> str:
    return template("classify").substitute(examples=examples, instruction=instruction)


def classify_examples(seeds: list[SeedTask], k: int = CLASSIFY_SHOTS) -> str:
    """Few-shot block from the seeds' own labels, alternating Yes and No so neither dominates the recency."""
    yes = [s for s in seeds if s.is_classification][:k]
    no = [s for s in seeds if not s.is_classification][:k]
    shots = [x for pair in zip(no, yes, strict=False) for x in pair]
    return "".join(f"Task: {s.instruction}\nClassification: {'Yes' if s.is_classification else 'No'}\n\n"
                   for s in shots)


# -- the stage --------------------------------------------------------------------------------------------------------


def run(ctx: StageContext) -> None:
    cfg, seed = ctx.config.instructions, ctx.config.seed
    seeds = load_seeds(ctx.config.seeds, ctx.config.s3)  # validate inputs before touching the store
    backend = ctx.backend()
    resumed = ctx.begin()

    # 1. Pick up the rounds a killed run already finished.
    accepted: list[dict] = []
    rejected: list[dict] = []
    round_keys = ctx.store.list(ctx.key("rounds"))
    for key in round_keys:
        for row in read_jsonl(ctx.store, key):
            (accepted if row["status"] == "accepted" else rejected).append(row)
    seed_texts = [s.instruction for s in seeds]
    pool = NearDuplicateFilter(cfg.rouge_threshold, seed_texts + [r["instruction"] for r in accepted])
    print(f"instructions: {len(seeds)} seed tasks, target {cfg.target}, {cfg.prompts_per_round} prompts a round"
          + (f"; resuming after round {len(round_keys)} with {len(accepted)} accepted" if resumed else ""))

    # 2. Generate, filter and label round by round until the target is met.
    examples = classify_examples(seeds)
    bar = tqdm(total=cfg.target, initial=min(len(accepted), cfg.target), desc="instructions accepted")
    round_no = len(round_keys)
    while len(accepted) < cfg.target and round_no < cfg.max_rounds:
        round_no += 1
        rng = random.Random(f"{seed}-{round_no}")
        texts = [r["instruction"] for r in accepted]
        prompts = [self_instruct_prompt(rng, seed_texts, texts, cfg.prompt_instructions, cfg.seed_in_prompt)
                   for _ in range(cfg.prompts_per_round)]
        params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                                seed=derive(seed, "instructions", round_no))
        completions = backend.generate(prompts, params, desc=f"round {round_no}")
        new, dropped = _filter_round(completions, pool, cfg.target - len(accepted), round_no)
        if cfg.classify and new:
            answers = backend.generate([classify_prompt(examples, r["instruction"]) for r in new],
                                       SamplingParams(temperature=0.0, max_new_tokens=3), desc="classify")
            for row, answer in zip(new, answers, strict=True):
                row["is_classification"] = answer.text.strip().lower().startswith("yes")
        ctx.store.write_bytes(ctx.key(f"rounds/{round_no:05d}.jsonl"), jsonl_bytes(new + dropped))
        accepted += new
        rejected += dropped
        bar.update(len(new))
    bar.close()

    # 3. Outputs, then the counts the manifest shows.
    ctx.write_output("instructions.jsonl", jsonl_bytes(
        {"id": f"instr_{i:05d}", **{k: v for k, v in r.items() if k != "status"}} for i, r in enumerate(accepted)
    ))
    ctx.write_output("rejected.jsonl", jsonl_bytes(rejected))
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    ctx.counts.update(seeds=len(seeds), rounds=round_no, candidates=len(accepted) + len(rejected),
                      accepted=len(accepted), rejected=len(rejected), rejected_by_reason=reasons,
                      classification=sum(bool(r["is_classification"]) for r in accepted))
    ctx.metrics.update(acceptance_rate=round(len(accepted) / max(1, len(accepted) + len(rejected)), 4))
    ctx.provenance.update(model=describe(ctx.config.model), seeds=ctx.config.seeds, seed=seed,
                          prompts=list(ctx.stage.prompts))
    if len(accepted) < cfg.target:
        print(f"instructions: stopped after max_rounds={cfg.max_rounds} with {len(accepted)} of {cfg.target}")


def _filter_round(completions, pool: NearDuplicateFilter, room: int, round_no: int) -> tuple[list[dict], list[dict]]:
    """Apply the rules and the ROUGE-L test in generation order; stop accepting once `room` is filled."""
    new: list[dict] = []
    dropped: list[dict] = []
    for prompt_index, completion in enumerate(completions):
        for text in parse_candidates(completion.text, completion.finish_reason == "length"):
            if len(new) == room:
                return new, dropped
            nearest, score = pool.nearest(text)
            row = {"instruction": text, "round": round_no, "prompt": prompt_index, "nearest": nearest,
                   "nearest_rouge_l": round(score, 4)}
            reason = rule_violation(text)
            if reason is None:
                if pool.add(text):
                    new.append({**row, "status": "accepted", "is_classification": False})
                    continue
                reason = "near_duplicate"
            dropped.append({**row, "status": "rejected", "reason": reason})
    return new, dropped
