"""THE stage graph: every stage's name, inputs, outputs, config, code and cluster needs, declared once.

The local runner (`refine_af.runner`) and the Argo workflow (`refine_af.argo.compile`) are both compiled from
`STAGES`; nothing else restates the DAG. A stage's code is named by import path and imported only when it runs, so
the graph can be built, validated and compiled without torch.

What a stage declares:
- `inputs`: local name -> "<parent>/<output>", an output another stage declares. Parents follow from the inputs.
  Stage code asks its context for an input's location (`ctx.input("adapter")`), never for a stage's path.
- `outputs`: name -> path under the stage's prefix (a trailing "/" is a directory). Every file a stage writes with
  `ctx.write_output` lies under one of them; the runner checks that, and that each required one was written.
- `config`: dotted RunConfig keys that shape its output; they, the parents' fingerprints, the package version, the
  prompt files (`prompts`: every template that shapes its output) and the source of its code make its fingerprint.
  `OPERATIONAL` keys inside those sections are left out, so changing them (checkpoint intervals, shard counts,
  logging thresholds) never reruns a stage.
- `metrics`: the manifest's key figures the Argo UI shows (output parameter name -> dotted manifest path);
  `links`: small outputs the Argo UI links as S3 artifacts (the manifest always).
- `retry`, `deadline`, `resources`: how the cluster runs it. The role picks the image; node pools, tolerations and
  image names come from the `cluster` config keyed by role, never from here.
- `shards`: the config key of the shard count for embarrassingly parallel stages (the work is split into N shards
  and merged; any N gives the same bytes).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from typing import Literal

from refine_af.config import lookup
from refine_af.errors import RefineError

Role = Literal["generate", "train", "cpu"]
# resumable: checkpoints make a retried pod continue, so preemptions retry freely; quick: cheap cpu work
Retry = Literal["resumable", "quick"]


@dataclass(frozen=True)
class Resources:
    """What a stage's pod asks for. `role` picks the image and node pool: generate (vLLM), train, cpu."""

    role: Role = "cpu"
    gpus: int = 0
    cpu: str = "2"
    memory: str = "8Gi"


@dataclass(frozen=True)
class Output:
    path: str  # under the stage's prefix; a trailing "/" is a directory
    optional: bool = False  # written only under some config (merged weights, the RL probe)

    @property
    def is_dir(self) -> bool:
        return self.path.endswith("/")


@dataclass(frozen=True)
class Stage:
    name: str
    fn: str  # "module:function", called with a StageContext
    inputs: dict[str, str] = field(default_factory=dict)  # local name -> "<parent>/<output>"
    outputs: dict[str, Output] = field(default_factory=dict)
    config: tuple[str, ...] = ()  # dotted RunConfig keys in the fingerprint
    prompts: tuple[str, ...] = ()  # prompt templates (refine_af/prompts/<name>.txt) in the fingerprint
    resources: Resources = Resources()
    params: dict[str, str] = field(default_factory=dict)  # fixed arguments, e.g. the arm of a per-arm stage
    when: str | None = None  # dotted boolean RunConfig key: the stage runs only when it is true
    metrics: dict[str, str] = field(default_factory=dict)  # Argo output parameter -> dotted manifest path
    links: tuple[str, ...] = ()  # outputs linked in the Argo UI besides the manifest (small files only)
    retry: Retry = "resumable"
    deadline: int = 24 * 3600  # seconds a pod may run (Argo activeDeadlineSeconds)
    shards: str | None = None  # dotted RunConfig key of the shard count; None: one pod

    @property
    def parents(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(ref.split("/", 1)[0] for ref in self.inputs.values()))


ARMS = ("refine-af", "self-instruct")  # the paper's comparison: instances from the RL policy vs the base model
GPU_GENERATE = Resources(role="generate", gpus=1, cpu="4", memory="32Gi")
GPU_TRAIN = Resources(role="train", gpus=1, cpu="8", memory="64Gi")
MERGE = Resources(role="cpu", cpu="1", memory="4Gi")  # the merge task of a sharded stage
HOUR = 3600
# Keys inside a stage's config slice that change how it runs, not what it writes: fingerprints leave them out, so
# changing them never reruns a stage (checkpoints resume exactly; shards give the same bytes for any count; the base
# row is a stage of its own; the rl drift warnings only log)
OPERATIONAL = ("evaluate.include_base", "evaluate.shards", "instances.shards", "rl.checkpoint_every",
               "sft.checkpoint_every", "rl.warn_kl", "rl.warn_entropy", "rl.warn_length_ratio")

INSTANCE_PROMPTS = ("instance_input_first", "instance_output_first")
SFT_PROMPTS = ("instruction_prompt", "instruction_prompt_input")  # SFT's training format (instruction_format)
# SuperNI's prompt and, for user-oriented instructions, the format SFT trains on
EVALUATE_PROMPTS = ("superni", "superni_example", *SFT_PROMPTS)
# The evaluation sets an instances stage decontaminates its dataset against (instances.decontaminate)
EVAL_SET = ("evaluate.superni", "evaluate.split", "evaluate.max_tasks", "evaluate.max_instances_per_task",
            "evaluate.user_oriented", "evaluate.max_user_oriented")


def _per_arm() -> tuple[Stage, ...]:
    stages = []
    for arm in ARMS:
        policy = {"adapter": "rl/adapter"} if arm == "refine-af" else {}
        stages += [
            Stage(f"instances-{arm}", "refine_af.stages.instances:run",
                  inputs={"instructions": "instructions/instructions", **policy},
                  outputs={"dataset": Output("dataset.jsonl"), "alpaca": Output("alpaca.json"),
                           "parquet": Output("dataset.parquet"), "card": Output("README.md"),
                           "decontamination": Output("decontamination.json")},
                  config=("model", "seed", "instances", *EVAL_SET), prompts=INSTANCE_PROMPTS, resources=GPU_GENERATE,
                  params={"arm": arm}, metrics={"kept": "counts.kept", "dropped": "counts.dropped"},
                  links=("card",), deadline=12 * HOUR, shards="instances.shards"),
            Stage(f"sft-{arm}", "refine_af.stages.sft:run", inputs={"dataset": f"instances-{arm}/dataset"},
                  outputs={"adapter": Output("adapter/"), "metrics": Output("metrics.jsonl"),
                           "merged": Output("merged/", optional=True)},
                  config=("model", "seed", "sft"), prompts=SFT_PROMPTS, resources=GPU_TRAIN, params={"arm": arm},
                  metrics={"first-loss": "metrics.first_loss", "final-loss": "metrics.final_loss"},
                  deadline=24 * HOUR),
            Stage(f"evaluate-{arm}", "refine_af.stages.evaluate:run", inputs={"adapter": f"sft-{arm}/adapter"},
                  outputs=EVALUATE_OUTPUTS, config=("model", "evaluate"), prompts=EVALUATE_PROMPTS,
                  resources=GPU_GENERATE,
                  params={"arm": arm}, metrics=EVALUATE_METRICS, links=("scores",), deadline=12 * HOUR,
                  shards="evaluate.shards"),
        ]
    return tuple(stages)


EVALUATE_OUTPUTS = {"predictions": Output("predictions.jsonl"), "scores": Output("scores.json")}
EVALUATE_METRICS = {"superni-rougeL": "metrics.superni_rougeL", "superni-exact-match": "metrics.superni_exact_match"}

STAGES: tuple[Stage, ...] = (
    Stage("instructions", "refine_af.stages.instructions:run",
          outputs={"instructions": Output("instructions.jsonl"), "rejected": Output("rejected.jsonl")},
          config=("model", "seeds", "seed", "instructions"), prompts=("instructions", "classify"),
          resources=GPU_GENERATE, deadline=24 * HOUR,
          metrics={"accepted": "counts.accepted", "rejected": "counts.rejected",
                   "acceptance-rate": "metrics.acceptance_rate"}),
    Stage("rl", "refine_af.stages.rl:run", inputs={"instructions": "instructions/instructions"},
          outputs={"adapter": Output("adapter/"), "metrics": Output("metrics.jsonl"),
                   "samples": Output("samples.jsonl"), "probe": Output("probe.jsonl", optional=True),
                   "rewards_plot": Output("rewards.png")},
          config=("model", "seed", "rl"), prompts=INSTANCE_PROMPTS, resources=GPU_TRAIN, deadline=48 * HOUR,
          metrics={"reward-first5": "metrics.reward_first5", "reward-last5": "metrics.reward_last5",
                   "kl-final": "metrics.kl_final", "probe-delta": "metrics.probe.delta"},
          links=("rewards_plot",)),
    *_per_arm(),
    Stage("evaluate-base", "refine_af.stages.evaluate:run", outputs=EVALUATE_OUTPUTS, config=("model", "evaluate"),
          prompts=EVALUATE_PROMPTS, resources=GPU_GENERATE, params={"arm": "base"}, when="evaluate.include_base",
          metrics=EVALUATE_METRICS, links=("scores",), deadline=12 * HOUR, shards="evaluate.shards"),
    Stage("compare", "refine_af.stages.compare:run",
          inputs={"refine-af": "evaluate-refine-af/scores", "self-instruct": "evaluate-self-instruct/scores",
                  "base": "evaluate-base/scores",
                  **{f"decontamination-{arm}": f"instances-{arm}/decontamination" for arm in ARMS}},
          outputs={"report": Output("report.json"), "report_md": Output("report.md"), "plot": Output("report.png")},
          config=("compare",), metrics={"share-won": "metrics.share_won", "mean-refine-af": "metrics.mean.refine-af",
                                        "mean-self-instruct": "metrics.mean.self-instruct"},
          links=("report_md", "plot"), retry="quick", deadline=HOUR),
)


def stage(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise RefineError(f"unknown stage '{name}' (stages: {', '.join(s.name for s in STAGES)})")


def input_key(s: Stage, name: str) -> str:
    """The store key (relative to the run) of input `name` of stage `s`: a file, or a directory prefix."""
    parent, _, output = s.inputs[name].partition("/")
    return f"{parent}/{stage(parent).outputs[output].path}".rstrip("/")


def enabled(s: Stage, config: object) -> bool:
    """Whether the config switches the stage on (stages without `when` always are)."""
    return s.when is None or bool(lookup(config, s.when))


def select(names: list[str] | None) -> list[Stage]:
    """The named stages (all when None) in graph order."""
    if not names:
        return list(STAGES)
    wanted = {stage(n).name for n in names}
    return [s for s in STAGES if s.name in wanted]


# -- validation: cheap, no torch --------------------------------------------------------------------------------------

_PARAM = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]*$")  # Argo output parameter names we allow
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")  # Kubernetes DNS label: Argo task and template names


def _field(dotted: str) -> object:
    """The pydantic field at a dotted RunConfig key; RefineError when any part does not exist."""
    from pydantic import BaseModel

    from refine_af.config import RunConfig

    model: type[BaseModel] | None = RunConfig
    info = None
    for part in dotted.split("."):
        if model is None or part not in model.model_fields:
            raise RefineError(f"'{dotted}' is not a RunConfig key")
        info = model.model_fields[part]
        model = info.annotation if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel) \
            else None
    return info


def validate(stages: tuple[Stage, ...] = STAGES) -> None:
    """Everything a compiler relies on, checked without importing torch or any stage module."""
    from refine_af.prompts import exists as prompt_exists

    seen: dict[str, Stage] = {}
    for s in stages:
        where = f"stage '{s.name}'"
        if s.name in seen:
            raise RefineError(f"{where} is declared twice")
        if not _NAME.match(s.name) or len(s.name) > 50:
            raise RefineError(f"{where}: not a valid Kubernetes name")
        for local, ref in s.inputs.items():
            parent, _, output = ref.partition("/")
            if parent not in seen:
                raise RefineError(f"{where}: input '{local}' comes from '{parent}', which is not declared before it")
            if output not in seen[parent].outputs:
                raise RefineError(f"{where}: input '{local}': stage '{parent}' has no output '{output}'")
        for key in s.config:
            _field(key)
        for key, kind in ((s.when, bool), (s.shards, int)):
            if key is not None and _field(key).annotation is not kind:  # type: ignore[attr-defined]
                raise RefineError(f"{where}: '{key}' must be a {kind.__name__} (when: bool, shards: int)")
        if s.shards and s.shards not in OPERATIONAL:
            raise RefineError(f"{where}: shard count '{s.shards}' must be operational (pipeline.OPERATIONAL)")
        for p in s.prompts:
            if not prompt_exists(p):
                raise RefineError(f"{where}: prompt file refine_af/prompts/{p}.txt does not exist")
        for name in s.metrics:
            if not _PARAM.match(name):
                raise RefineError(f"{where}: metric name '{name}' is not a valid Argo parameter name")
        for name in s.links:
            if name not in s.outputs or s.outputs[name].is_dir:
                raise RefineError(f"{where}: link '{name}' must name a file output")
        module, _, func = s.fn.partition(":")
        if not func or importlib.util.find_spec(module) is None:
            raise RefineError(f"{where}: code '{s.fn}' is not an importable module:function")
        if s.resources.role != "cpu" and s.resources.gpus < 1:
            raise RefineError(f"{where}: role '{s.resources.role}' runs on a GPU pool and needs gpus >= 1")
        seen[s.name] = s
    for key in OPERATIONAL:
        _field(key)
