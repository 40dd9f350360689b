"""Benchmark: Self-Instruct's ROUGE-L near-duplicate filter, three ways, same decisions.

    python benchmarks/dedup.py            # full run (~5-10 min on 2 cores)
    python benchmarks/dedup.py --quick    # smoke run (~1 min)

Implementations, all run in this process on the same candidate stream for each pool size:
  (a)  rouge_score as Self-Instruct uses it: one ``scorer.score(pooled, cand)`` per pooled text,
       reject if max fmeasure > threshold (Self-Instruct spreads these calls over a 4-process
       Pool; here it is one process, like the others).
  (b)  rouge-score-rs (Rust) the same way, one ``score`` call per pair.
  (b') rouge-score-rs ``score_multi(pool, cand)``: one native call per candidate (best case for (b)).
  (c)  refine_af.dedup.NearDuplicateFilter.is_duplicate.
Slow baselines are timed on the first candidates of the stream within a time budget, against the
full pool; their seconds for the whole stream are extrapolated from the per-candidate cost (marked *).
Pools are prefixes of one pool grown with the filter itself from the 175 seeds (so pooled texts are
mutually below the threshold, as in Self-Instruct); candidates mix near-duplicates of seeds and of
pooled texts with novel instructions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

from refine_af.dedup import NearDuplicateFilter

THRESHOLD = 0.7
OPENERS = [
    "Write a short story about", "Explain how", "Generate a list of", "Classify the following",
    "Summarize the text about", "Give me tips on", "Suggest a name for", "Create a quiz about",
    "Describe", "Compare", "Find the error in", "Identify the main idea of", "Rewrite the sentence",
    "Translate into French:", "Write a tweet about", "Tell me a joke about", "What is the best way to",
    "How can I", "Make a plan for", "Write an email to", "Design a game where", "Explain to a child",
    "List three facts about", "Convert the following into", "Propose a title for", "Why do people",
    "Is it true that", "Outline the steps to", "Draft a speech about", "Give an example of",
]
TAILS = ["", "", "", ".", "?", " in one sentence.", " for a beginner.", " using bullet points.",
         " in under 50 words.", " and explain why.", " with examples.", " step by step."]
SYNONYMS = {
    "write": "compose", "list": "enumerate", "given": "provided", "generate": "create",
    "short": "brief", "explain": "describe", "find": "identify", "make": "produce", "tell": "inform",
    "good": "great", "best": "ideal", "use": "utilize", "show": "display", "help": "assist",
    "following": "next", "text": "passage", "sentence": "phrase", "answer": "respond to",
    "question": "query", "story": "tale", "people": "persons", "important": "key", "create": "build",
}
TEMPLATES = [
    "Explain how {a} relates to {b}", "Write a short story about {a} and {b}", "Compare {a} with {b}",
    "Give me tips on {a} for {b}", "What is the difference between {a} and {b}?",
    "Generate a list of {a} that {b}", "Describe {a} to someone who {b}", "Why does {a} matter for {b}?",
    "Write a poem about {a}, mentioning {b}", "Classify {a} as either {b} or not",
    "Summarize {a} in the context of {b}", "Suggest ways to combine {a} with {b}",
    "Create a dialogue between {a} and {b}", "Find the connection between {a} and {b}",
    "Rewrite {a} so that it sounds like {b}", "Design a lesson on {a} using {b}",
]
FILLERS = ["please", "briefly", "carefully", "also", "the", "new", "simple", "detailed", "quickly"]


def load_seeds(path: Path) -> tuple[list[str], list[list[str]]]:
    """Seed instructions, and word sequences from seed instances to draw novel phrases from."""
    instructions, phrases = [], []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        instructions.append(rec["instruction"])
        for inst in rec.get("instances", []):
            for field in (inst.get("input", ""), inst.get("output", "")):
                phrases += [w for w in (s.split() for s in re.split(r"[.\n]", field)) if len(w) >= 3]
    return instructions, phrases


class Generator:
    """Deterministic instruction stream: near-duplicates and novel instructions in a mix."""

    def __init__(self, seeds: list[str], phrases: list[list[str]], seed: int, bases: list[str] | None = None):
        self.rng = random.Random(seed)
        self.seeds, self.phrases = seeds, phrases
        self.bases = bases  # texts to near-duplicate besides seeds (default: own recent output)
        self.history: list[str] = []

    def mutate(self, text: str) -> str:
        rng, words = self.rng, text.split()
        for _ in range(rng.randint(1, 3)):
            op, i = rng.random(), rng.randrange(len(words))
            if op < 0.25 and len(words) > 1:
                j = min(i + 1, len(words) - 1)
                words[i], words[j] = words[j], words[i]
            elif op < 0.45 and len(words) > 3:
                del words[i]
            elif op < 0.65:
                words.insert(i, rng.choice(FILLERS))
            elif op < 0.9:
                key = words[i].lower().strip(".,?!")
                words[i] = SYNONYMS.get(key, rng.choice(rng.choice(self.phrases)))
            else:
                words[i] = words[i].upper() + rng.choice(["", ",", "!"])
        return " ".join(words)

    def span(self, lo: int, hi: int) -> str:
        words = self.rng.choice(self.phrases)
        k = self.rng.randint(lo, min(hi, len(words)))
        i = self.rng.randrange(len(words) - k + 1)
        return " ".join(words[i : i + k]).strip(",;:")

    def novel(self) -> str:
        rng, r = self.rng, self.rng.random()
        if r < 0.2:  # recombine two seed instructions
            a, b = rng.choice(self.seeds).split(), rng.choice(self.seeds).split()
            return " ".join(a[: rng.randint(1, max(1, len(a) // 2))] + b[rng.randint(0, len(b) // 2):])
        if r < 0.5:  # an opener and a phrase from the seeds' instances
            return f"{rng.choice(OPENERS)} {self.span(3, 10)}{rng.choice(TAILS)}"
        template = rng.choice(TEMPLATES)  # two phrases in a template
        return template.format(a=self.span(2, 5), b=self.span(2, 5)) + rng.choice(TAILS)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        rng, r = self.rng, self.rng.random()
        if r < 0.6 or (r >= 0.8 and not (self.bases or self.history)):
            text = self.novel()
        elif r < 0.8:
            text = self.mutate(rng.choice(self.seeds))
        else:
            text = self.mutate(rng.choice(self.bases or self.history))
        if self.bases is None:
            self.history.append(text)
            if len(self.history) > 5000:
                del self.history[:1000]
        return text


def footprint_mb(flt: NearDuplicateFilter) -> float:
    """Memory held by the filter's index (inverted index, vocabulary, token arrays), texts excluded."""
    size = sys.getsizeof(flt._post) + sum(sys.getsizeof(k) + sys.getsizeof(a) for k, a in flt._post.items())
    size += sys.getsizeof(flt._vocab) + sum(sys.getsizeof(k) + 28 for k in flt._vocab)
    size += sum(g.a.nbytes for g in (flt._flat, flt._start, flt._len)) + flt._pm.nbytes
    return size / 2**20


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def grow(flt: NearDuplicateFilter, gen: Generator, target: int, accepted: list[str] | None = None,
         with_nearest: bool = False) -> tuple[float, int, int]:
    """Feed ``gen`` into ``flt`` until it holds ``target`` texts: (seconds, candidates, pairs).

    ``with_nearest``: call ``nearest(text)`` before ``add(text)``, as refine_af's instruction stage does.
    """
    fed = pairs = 0
    t0 = time.perf_counter()
    while len(flt) < target:
        text = next(gen)
        pairs += len(flt)  # Self-Instruct scores every candidate against the whole pool
        fed += 1
        if with_nearest:
            flt.nearest(text)
        if flt.add(text) and accepted is not None:
            accepted.append(text)
    return time.perf_counter() - t0, fed, pairs


def timed(score, cands: list[str], budget: float, min_n: int) -> tuple[list, float]:
    """Results for the first candidates that fit the budget, and seconds per candidate."""
    out, t0 = [], time.perf_counter()
    for c in cands:
        out.append(score(c))
        if len(out) >= min_n and time.perf_counter() - t0 > budget:
            break
    return out, (time.perf_counter() - t0) / len(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--seeds", type=Path, default=ROOT.parent / "shared" / "data" / "seed_tasks.jsonl")
    ap.add_argument("--candidates", type=int, help="candidates per pool size (default 2000, quick 200)")
    ap.add_argument("--budget", type=float, help="seconds per slow baseline per pool size (default 20)")
    args = ap.parse_args()
    quick = args.quick
    n_cands = args.candidates or (200 if quick else 2000)
    budget = args.budget or (2.0 if quick else 20.0)
    sizes = [1000, 5000] if quick else [1000, 5000, 20000, 100000]
    grow_to = 1500 if quick else 15000
    slow_max = 20000  # (a) is not run above this pool size

    import rouge_score_rs
    from rouge_score import rouge_scorer

    seeds, phrases = load_seeds(args.seeds)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start; "
          f"Python {platform.python_version()}, numpy {np.__version__}, rouge-score-rs {rouge_score_rs.__version__}")
    print(f"threshold {THRESHOLD}; {len(seeds)} seeds from {args.seeds}; {n_cands} candidates per pool size\n")

    # Real workload: grow the pool from the seeds until `grow_to` instructions are accepted.
    flt = NearDuplicateFilter(THRESHOLD, seeds)
    gen = Generator(seeds, phrases, seed=1)
    pool = list(seeds)
    workload = grow(flt, gen, len(seeds) + grow_to, pool)
    # Keep growing (same stream) to the largest benchmark pool.
    secs2, fed2, _ = grow(flt, gen, max(sizes), pool)
    del flt
    print(f"grew the pool on to {len(pool)} texts for the table: {fed2} more candidates in {secs2:.1f} s (ours)\n")
    # The same workload as refine_af's instruction stage runs it: nearest() for provenance, then add().
    pipeline = grow(NearDuplicateFilter(THRESHOLD, seeds), Generator(seeds, phrases, seed=1),
                    len(seeds) + grow_to, with_nearest=True)

    sr = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rs = rouge_score_rs.RougeScorer(["rougeL"], use_stemmer=False)
    labels = {"a": "(a) rouge_score per pair", "b": "(b) rouge-score-rs per pair",
              "b'": "(b') rouge-score-rs score_multi", "c": "(c) ours is_duplicate/add",
              "n": "(c) ours nearest"}
    rows, per_pair, ours_cost = [], {"a": [], "b": [], "b'": []}, {}
    for size in sizes:
        base = pool[:size]
        stream = Generator(seeds, phrases, seed=size, bases=base)
        cands = [next(stream) for _ in range(n_cands)]
        t0 = time.perf_counter()
        ours = NearDuplicateFilter(THRESHOLD, base)
        build = time.perf_counter() - t0
        mem = footprint_mb(ours)

        # Each returns the max F over the pool (decision: > THRESHOLD), except is_duplicate.
        def sr_pairs(c, base=base):  # Self-Instruct: score every pooled text, then take the max
            return max([sr.score(p, c)["rougeL"].fmeasure for p in base])

        def rs_pairs(c, base=base):
            return max([rs.score(p, c)["rougeL"].fmeasure for p in base])

        def rs_multi(c, base=base):
            return rs.score_multi(base, c)["rougeL"].fmeasure

        results = {"c": timed(ours.is_duplicate, cands, float("inf"), n_cands),
                   "n": timed(lambda c, ours=ours: ours.nearest(c)[1], cands, float("inf"), n_cands),
                   "b": timed(rs_pairs, cands, budget / 2, 3),
                   "b'": timed(rs_multi, cands, budget / 2, 3)}
        if size <= slow_max:
            results["a"] = timed(sr_pairs, cands, budget, 3)
        ours_cost[size] = results["c"][1]
        decisions = {k: [v if k == "c" else v > THRESHOLD for v in res] for k, (res, _) in results.items()}
        for key in ("a", "b", "b'", "c", "n"):
            if key not in results:
                continue
            res, cost = results[key]
            if key in per_pair:
                per_pair[key].append(cost / size)
            diffs = []
            for ref in ("a", "b"):
                if ref not in results:
                    diffs.append(None)
                elif key == "n":  # nearest: its score must equal the reference's max F exactly
                    diffs.append(sum(x != y for x, y in zip(res, results[ref][0])))
                else:
                    diffs.append(sum(x != y for x, y in zip(decisions[key], decisions[ref])))
            rows.append((size, labels[key], len(res), cost, *diffs, sum(decisions[key])))
        rows.append((size, f"   ours: built from {size} texts in {build:.2f} s; index {mem:.0f} MB",
                     None, None, None, None, None))
        del ours

    print(f"{'pool':>7} {'implementation':<32} {'timed':>6} {'s/stream':>9} {'cand/s':>9} "
          f"{'x ours':>8} {'diff(a)':>7} {'diff(b)':>7} {'dups':>5}")
    for size, label, k, cost, diff_a, diff_b, dups in rows:
        if k is None:
            print(f"{size:>7} {label}")
            continue
        star = "*" if k < n_cands else " "
        print(f"{size:>7} {label:<32} {k:>6} {cost * n_cands:>8.2f}{star} {1 / cost:>9.1f} "
              f"{cost / ours_cost[size]:>8.1f} {'-' if diff_a is None else diff_a:>7} "
              f"{'-' if diff_b is None else diff_b:>7} {dups:>5}")
    print("  timed = candidates run (the first of the stream); s/stream = seconds for all candidates"
          " (* extrapolated);\n  x ours = per-candidate cost / ours is_duplicate; diff = decisions differing"
          " from (a) / (b) on the\n  candidates both ran (nearest: scores not exactly equal to their max F);"
          " dups = rejected among those timed.")
    if len(sizes) > 2:
        print(f"  ours per-candidate cost, {sizes[-1] // 1000}K pool / 20K pool: "
              f"{ours_cost[sizes[-1]] / ours_cost[20000]:.2f}x")

    secs, fed, pairs = workload
    print(f"\nreal workload: pool {len(seeds)} seeds -> {len(seeds) + grow_to} ({grow_to} accepted from {fed:,} "
          f"candidates, {pairs:,} candidate-pool pairs)")
    print(f"  (c) ours add(): {secs:.1f} s measured")
    print(f"  (c) ours nearest() + add() per candidate, as refine_af's instruction stage: {pipeline[0]:.1f} s measured")
    for key, label in (("a", "(a) rouge_score"), ("b", "(b) rouge-score-rs per pair"),
                       ("b'", "(b') rouge-score-rs score_multi")):
        cost = float(np.mean(per_pair[key]))
        print(f"  {label}: {pairs * cost:,.0f} s extrapolated ({cost * 1e6:.2f} us/pair, mean over pool sizes)"
              f" = {pairs * cost / secs:,.0f}x ours")
    print(f"\npeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB;"
          f" load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
