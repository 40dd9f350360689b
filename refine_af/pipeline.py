"""THE stage graph: every stage's name, parents, config, code and resources, declared once.

The local runner (`refine_af.runner`) and the Argo workflow (`workflows/`) are both compiled from `STAGES`; nothing
else restates the DAG. A stage's code is named by import path and imported only when it runs, so the graph can be
built, validated and compiled without torch.

Each stage declares the config keys that shape its output (`config`); they, the parents' manifest fingerprints, the
package version and the prompt files make its fingerprint. Operational knobs (generation batch size, device, S3
endpoint, cache) are deliberately left out, so changing them never reruns a stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from refine_af.errors import RefineError

Role = Literal["generate", "train", "cpu"]


@dataclass(frozen=True)
class Resources:
    """What a stage's pod asks for. `role` picks the image: generate -> vllm, train -> trainer, cpu -> cpu."""

    role: Role = "cpu"
    gpus: int = 0
    cpu: str = "2"
    memory: str = "8Gi"


@dataclass(frozen=True)
class Stage:
    name: str
    fn: str  # "module:function", called with a StageContext
    parents: tuple[str, ...] = ()
    config: tuple[str, ...] = ()  # dotted RunConfig keys in the fingerprint
    prompts: tuple[str, ...] = ()  # prompt templates (refine_af/prompts/<name>.txt) in the fingerprint
    resources: Resources = Resources()
    params: dict[str, str] = field(default_factory=dict)  # fixed arguments, e.g. the arm of a per-arm stage

    def __hash__(self) -> int:
        return hash(self.name)


STAGES: tuple[Stage, ...] = (
    Stage(
        "instructions",
        "refine_af.stages.instructions:run",
        config=("model", "seeds", "seed", "instructions"),
        prompts=("instructions", "classify"),
        resources=Resources(role="generate", gpus=1, cpu="4", memory="32Gi"),
    ),
)


def stage(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise RefineError(f"unknown stage '{name}' (stages: {', '.join(s.name for s in STAGES)})")


def validate(stages: tuple[Stage, ...] = STAGES) -> None:
    """Names unique, parents declared earlier: the tuple order is a topological order."""
    seen: set[str] = set()
    for s in stages:
        if s.name in seen:
            raise RefineError(f"stage '{s.name}' is declared twice")
        missing = [p for p in s.parents if p not in seen]
        if missing:
            raise RefineError(f"stage '{s.name}' depends on {missing}, which are not declared before it")
        seen.add(s.name)


def select(names: list[str] | None) -> list[Stage]:
    """The named stages (all when None) in graph order."""
    if not names:
        return list(STAGES)
    wanted = {stage(n).name for n in names}
    return [s for s in STAGES if s.name in wanted]


validate()
