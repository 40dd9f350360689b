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

from refine_af.config import lookup
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
    when: str | None = None  # dotted boolean RunConfig key: the stage runs only when it is true

    def __hash__(self) -> int:
        return hash(self.name)


ARMS = ("refine-af", "self-instruct")  # the paper's comparison: instances from the RL policy vs the base model
GPU_GENERATE = Resources(role="generate", gpus=1, cpu="4", memory="32Gi")
GPU_TRAIN = Resources(role="train", gpus=1, cpu="8", memory="64Gi")
# Keys inside a stage's config slice that change how it runs, not what it writes: fingerprints leave them out, so
# changing them never reruns a stage (checkpoints resume exactly; the base row is a stage of its own)
OPERATIONAL = ("evaluate.include_base", "rl.checkpoint_every", "sft.checkpoint_every")


def _per_arm() -> tuple[Stage, ...]:
    stages = []
    for arm in ARMS:
        stages += [
            Stage(f"instances-{arm}", "refine_af.stages.instances:run",
                  parents=("instructions", "rl") if arm == "refine-af" else ("instructions",),
                  config=("model", "seed", "instances"), prompts=("instance_input_first", "instance_output_first"),
                  resources=GPU_GENERATE, params={"arm": arm}),
            Stage(f"sft-{arm}", "refine_af.stages.sft:run", parents=(f"instances-{arm}",),
                  config=("model", "seed", "sft"), resources=GPU_TRAIN, params={"arm": arm}),
            Stage(f"evaluate-{arm}", "refine_af.stages.evaluate:run", parents=(f"sft-{arm}",),
                  config=("model", "evaluate"), resources=GPU_GENERATE, params={"arm": arm}),
        ]
    return tuple(stages)


STAGES: tuple[Stage, ...] = (
    Stage(
        "instructions",
        "refine_af.stages.instructions:run",
        config=("model", "seeds", "seed", "instructions"),
        prompts=("instructions", "classify"),
        resources=GPU_GENERATE,
    ),
    Stage("rl", "refine_af.stages.rl:run", parents=("instructions",), config=("model", "seed", "rl"),
          prompts=("instance_input_first", "instance_output_first"), resources=GPU_TRAIN),
    *_per_arm(),
    Stage("evaluate-base", "refine_af.stages.evaluate:run", config=("model", "evaluate"), resources=GPU_GENERATE,
          params={"arm": "base"}, when="evaluate.include_base"),
    Stage("compare", "refine_af.stages.compare:run",
          parents=("evaluate-refine-af", "evaluate-self-instruct", "evaluate-base"), config=("compare",)),
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


def enabled(s: Stage, config: object) -> bool:
    """Whether the config switches the stage on (stages without `when` always are)."""
    return s.when is None or bool(lookup(config, s.when))


def select(names: list[str] | None) -> list[Stage]:
    """The named stages (all when None) in graph order."""
    if not names:
        return list(STAGES)
    wanted = {stage(n).name for n in names}
    return [s for s in STAGES if s.name in wanted]


validate()
