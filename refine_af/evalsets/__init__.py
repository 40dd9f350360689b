"""Evaluation sets for the `evaluate` stage and decontamination; pure functions over rows, no model code.

* `superni`: Super-NaturalInstructions tasks and splits, their zero-shot prompts, cleaning a generation;
* `user_oriented`: Self-Instruct's user-oriented instructions, prompted in the SFT format (`instruction_format`);
* `metrics`: SuperNI's official exact match and ROUGE-L, and the grouped means both sets report.

With no location given, the loaders read the small sets written for this project under `refine_af/data/eval/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refine_af.store import Store, open_store

EVAL_DATA = Path(__file__).parent.parent / "data" / "eval"


def store_for(location: str | Path, s3: Any = None) -> Store:
    return open_store(str(location), s3, check=False)  # read-only use: no write probe, no bucket round trip

