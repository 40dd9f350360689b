"""Benchmark: load and per-instance scoring time of the cpu-independent reward's scorers.

    python benchmarks/independent_scorers.py            # ~1 min on 2 cores
    python benchmarks/independent_scorers.py --repeat 1

Each scorer of `refine_af/presets/cpu-independent.yaml` is loaded into a fresh model cache (so MiniLM's one-time
extraction from its wheel is counted as "first load") and again from the warm cache in the same process (the
package imports are then already paid, so the warm figure is the model load alone); calibration on the 48
calibration instances is timed apart. Scoring: the 48 calibration instances as one batch (the rl stage scores a
step's rollouts as one batch), ms per instance, best of --repeat. The load average is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from refine_af.config import load_config
from refine_af.rewards import CompositeReward, Squashed, calibration_set


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    reward = load_config(ROOT / "refine_af" / "presets" / "cpu-independent.yaml").rl.reward
    batch = calibration_set()
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for attempt in ("first", "warm"):
            composite = CompositeReward.from_config(reward, cache_dir=cache, device="cpu")
            for term, scorer in composite.scorers.items():
                target = getattr(scorer, "lm", scorer)
                started = time.perf_counter()
                if hasattr(target, "load"):
                    target.load()
                loaded = time.perf_counter()
                if isinstance(scorer, Squashed):
                    scorer.calibrate()
                calibrated = time.perf_counter()
                if attempt == "first":
                    rows.append({"term": term, "scorer": composite.info[term]["scorer"],
                                 "first": loaded - started, "calibrate": calibrated - loaded})
                    continue
                best = float("inf")
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    scorer(*batch)
                    best = min(best, time.perf_counter() - t)
                row = next(r for r in rows if r["term"] == term)
                row.update(warm=loaded - started, ms=1000 * best / len(batch[0]))
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs, batch of {len(batch[0])} instances")
    print(f"{'term':<18} {'scorer':<15} {'first load s':>12} {'warm load s':>11} {'calibrate s':>11} "
          f"{'ms/instance':>11}")
    for r in rows:
        print(f"{r['term']:<18} {r['scorer']:<15} {r['first']:>12.2f} {r['warm']:>11.2f} {r['calibrate']:>11.2f} "
              f"{r['ms']:>11.2f}")
    print(f"{'total':<34} {sum(r['first'] for r in rows):>12.2f} {sum(r['warm'] for r in rows):>11.2f} "
          f"{sum(r['calibrate'] for r in rows):>11.2f} {sum(r['ms'] for r in rows):>11.2f}")


if __name__ == "__main__":
    main()
