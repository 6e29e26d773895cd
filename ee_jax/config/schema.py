"""Typed configuration: one dataclass per concern, composed into :class:`Config`.

Every field has a default, so a resolved config written to disk spells out every value a run used.
Consistency checks that span fields live in :mod:`ee_jax.config.validate`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


# Model configs are stored on NNX modules, so they must hash (a GraphDef is a static jit argument).
class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and what was expected."""


@dataclass(unsafe_hash=True)
class RopeScalingConfig:
    """RoPE frequency scaling. ``kind='llama3'`` is Llama-3.1's piecewise rescaling."""

    kind: str = "none"  # none | llama3
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192


LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")  # the projections LoRA can adapt (model.lora_targets)


@dataclass(unsafe_hash=True)
class ModelConfig:
    """Decoder shape and numerics. Llama-3, Qwen2 and Gemma3 are all points in this space."""

    name: str = "custom"
    vocab_size: int = 8192
    d_model: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    head_dim: int = 0  # 0 -> d_model // num_heads
    ffn_dim: int = 704
    activation: str = "silu"  # silu (SwiGLU) | gelu_tanh (GeGLU, Gemma)
    norm_eps: float = 1e-5
    norm_offset: float = 0.0  # Gemma stores RMSNorm scales as w and multiplies by (1 + w)
    qkv_bias: bool = False  # Qwen2
    qk_norm: bool = False  # Gemma3
    post_norms: bool = False  # Gemma3 "sandwich" norms after attention and MLP
    embed_scale: bool = False  # Gemma multiplies embeddings by sqrt(d_model)
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    rope_scaling: RopeScalingConfig = field(default_factory=RopeScalingConfig)
    sliding_window: int = 0  # 0 -> no local layers
    global_every: int = 0  # layer i is global iff (i + 1) % global_every == 0; 0 -> every layer global
    local_rope_theta: float = 10000.0
    query_pre_attn_scalar: float = 0.0  # 0 -> scale queries by head_dim ** -0.5
    max_seq_len: int = 2048
    init_std: float = 0.02
    dtype: str = "float32"  # compute dtype: float32 | bfloat16
    param_dtype: str = "float32"
    remat: str = "none"  # none | full | dots (save matmul outputs)
    scan_layers: bool = False
    attention_impl: str = "xla"  # xla | cudnn | splash | auto
    # LoRA (ee_jax.models.lora): rank 0 = full fine-tuning. Targets are projection names, comma-separated.
    lora_rank: int = 0
    lora_alpha: float = 16.0  # the update is (alpha / rank) * A @ B
    lora_targets: str = "q,k,v,o,gate,up,down"


@dataclass
class MeshConfig:
    """Device mesh. ``-1`` on one axis means "all devices left over"."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1


@dataclass
class DistributedConfig:
    """Multi-host start-up. ``auto`` lets JAX detect Cloud TPU / SLURM settings."""

    enabled: bool = False
    auto: bool = True
    coordinator_address: str = ""
    num_processes: int = 1
    process_id: int = 0
    initialization_timeout_s: int = 300
    # How long a host waits at ee_jax's own barriers (end of a collection stage, scratch tokenizer)
    # for the others: generous, since hosts finish their collection shards at different times.
    barrier_timeout_s: int = 3600


@dataclass
class OptimizerConfig:
    """AdamW with warmup then decay, and global-norm clipping."""

    lr: float = 3e-4
    schedule: str = "cosine"  # cosine | linear | constant
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    """Loop length, batch geometry and bookkeeping cadence."""

    steps: int = 200
    batch_size: int = 16  # global sequences per optimizer step
    seq_len: int = 128
    grad_accum: int = 1  # micro-batches per optimizer step
    log_every: int = 10
    eval_every: int = 50
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    async_checkpoint: bool = True
    stop_after_steps: int = 0  # end this invocation after N more steps (time-boxed jobs); the schedule spans `steps`


@dataclass
class SamplerConfig:
    """Decoding defaults; the sampler takes per-call overrides too."""

    temperature: float = 0.0  # 0 -> greedy
    top_k: int = 0  # 0 -> off
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop: list[str] = field(default_factory=list)
    prefill_buckets: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512, 1024, 2048])
    batch_buckets: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    # The inference copy's weight dtype: "auto" casts every matrix to model.dtype (each layer casts it so on
    # use anyway, so outputs are bit-identical; bf16 models decode from half the bytes), or float32 | bfloat16.
    weights_dtype: str = "auto"
    # Decode scanning the stacked layers (compile time of one window period whatever the depth) instead of
    # unrolling them. Off by default: the scanned engine prefill keeps more copies of the KV cache
    # (BENCHMARKS.md "Planning": ee-8b, 128 rows x 2048 on an H100: 131 GiB scanned, 45 GiB unrolled).
    scan_layers: bool = False


@dataclass
class TokenizerConfig:
    """Where the tokenizer comes from, and how to train one for scratch models."""

    kind: str = "sentencepiece"  # sentencepiece | hf
    path: str = ""  # .model file (sentencepiece) or tokenizer.json (hf); empty -> train one
    vocab_size: int = 1024
    template: str = "plain"  # plain | chatml | llama3 | gemma


@dataclass
class DataConfig:
    """Training data. ``text_path``/``valid_fraction``: the text corpus of ``ee-jax lm`` (empty path ->
    the corpus shipped with the package). The rest: the experience pipelines (records -> rendered
    tokens + loss mask -> packed batches)."""

    text_path: str = ""
    valid_fraction: float = 0.05
    packing: bool = True  # FirstFit-pack several examples per row (segment ids + positions)
    packing_bins: int = 16  # rows the packer keeps open at once
    sr_mix: dict[str, float] = field(default_factory=lambda: {"reflection": 1.0, "expert_step": 1.0})
    include_dropped_reflections: bool = False  # train on reflections a filter dropped (for ablations)
    shuffle: bool = True
    read_threads: int = 0  # grain ReadOptions.num_threads; 0 = read in the calling thread (best on 2 cores)
    # Multi-host: "rows" = every host runs the whole pipeline and keeps its rows of each global batch
    # (batches, hence training, identical for any host count); "records" = each host renders only its
    # share of the records (pid::nproc; less host work on many hosts, batches depend on the host count).
    host_sharding: str = "rows"


@dataclass
class PromptConfig:
    """The one state renderer: how a state becomes the text every stage trains and acts on."""

    history_window: int = 4  # past (action, observation) steps shown
    # sliding: exactly the last history_window steps (the prompt's start changes every turn once full);
    # append: from history_window to 2*history_window-1 steps, the window restarting every history_window
    # turns, so consecutive prompts share their history and the rollout engine reuses its cache
    history_mode: str = "sliding"
    max_observation_chars: int = 1200  # longer observations keep their head and tail
    show_admissible: bool = True  # list admissible actions (closed action spaces)
    max_admissible: int = 64  # list at most this many (sorted); the rest are summarised as a count


@dataclass
class ExploreConfig:
    """K alternatives per expert state (``ee-jax collect explore``)."""

    k: int = 8
    strategy: str = "uniform"  # uniform | policy | mixed
    policy_fraction: float = 0.5  # mixed: share of the K drawn from the policy, the rest uniform
    temperature: float = 1.0  # policy proposals
    proposals_per_alternative: int = 2  # policy samples drawn per wanted alternative (before dedup)
    max_new_tokens: int = 32
    policy_stage: str = ""  # checkpoint stage of run_dir proposing actions; "" -> the untrained model
    batch_states: int = 64  # expert states whose policy calls are batched together


@dataclass
class ReflectConfig:
    """Self-reflection generation (``ee-jax collect reflect``) and its filters."""

    # grounded (default: goal, observations and actions only, as the paper's prompt) | oracle_template
    # (privileged: the environment's reward + hand-written notes) | self (the policy) | http (an endpoint)
    generator: str = "grounded"
    alternatives: int = 3  # alternatives shown per reflection (the paper: up to 3)
    temperature: float = 0.7
    max_new_tokens: int = 256
    policy_stage: str = ""  # self: checkpoint stage writing reflections; "" -> the untrained model
    batch_size: int = 16  # self: prompts per sampler call
    url: str = ""  # http: OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1
    model: str = ""  # http: model name sent to the endpoint
    api_key_env: str = ""  # http: name of the environment variable holding the API key (never logged)
    timeout_s: float = 120.0
    max_retries: int = 4
    concurrency: int = 4
    min_words: int = 8
    max_words: int = 400
    # Append "So I will take `ACTION`." to a reflection whose last sentence names no action of the case
    # (small models rarely end with the conclusion the prompt asks for); one naming another action is
    # still dropped (contradicts_expert).
    conclude: bool = False
    # self / http: also show the environment's hidden verdict (reward, completed, ended, not accepted) in the
    # prompt. Privileged (the paper's prompt shows observations only); reports label it.
    show_reward: bool = False


@dataclass
class ExperienceConfig:
    """Collection of expert trajectories (oracle or a JSONL file) into the run's data store."""

    tasks: dict[str, int] = field(default_factory=lambda: {"train": 64, "valid": 16})  # expert tasks per split
    source: str = "oracle"  # oracle | jsonl
    trajectories: str = ""  # jsonl: path of the trajectory file (docs/data.md gives the format)
    on_bad_line: str = "fail"  # jsonl: fail | skip (skipped lines are listed in the manifest)
    tasks_per_shard: int = 32  # work unit of resume: one shard per this many tasks/trajectories
    explore: ExploreConfig = field(default_factory=ExploreConfig)
    reflect: ReflectConfig = field(default_factory=ReflectConfig)


@dataclass
class EnvConfig:
    """Which environment to collect experience in and evaluate on (``ee-jax envs list``)."""

    name: str = "household"
    difficulty: int = 0  # 0 -> the environment's default
    max_steps: int = 0  # 0 -> the environment's default step limit
    options: dict[str, Any] = field(default_factory=dict)  # environment-specific, e.g. {games: [coin]}
    pool_workers: int = 0  # >0: run the environment in this many worker processes (Java-backed ones)
    java_heap_mb: int = 768  # -Xmx of each JVM (ScienceWorld, TextWorldExpress)


@dataclass
class RecipeConfig:
    """How the methods are trained and compared (``ee-jax train`` / ``ee-jax run``).

    The paper's protocol: ``il`` trains ``epochs`` epochs on expert steps, and that number of updates
    is the budget; ``iwm`` spends about ``wm_epochs`` of it predicting next states (stage ``iwm_wm``),
    then imitates for the rest (stage ``iwm``); ``sr`` trains the reflection + expert mixture for the
    same ``epochs``. ``il_matched`` is the control for SR's extra updates: imitation trained for exactly
    SR's number of updates.
    """

    methods: list[str] = field(default_factory=lambda: ["il", "iwm", "sr"])
    epochs: float = 0.0  # IL epochs over the expert data; 0 -> train.steps updates per method (sr: the same)
    wm_epochs: float = 1.0  # iwm stage 1: epochs over the transitions
    wm_max_fraction: float = 0.5  # ... but at most this share of the budget, so imitation keeps the rest
    init: str = ""  # "" random init (seed) | STAGE of this run | RUN_DIR:STAGE | hf:DIR (imported weights)
    select: str = "best"  # the reported checkpoint: best (on the valid split, never test) | last
    select_metric: str = "success"  # success (valid-split episodes) | loss (valid loss of the objective)
    valid_tasks: int = 32  # valid-split episodes per evaluation during training (select_metric=success)
    # Checkpoint-selection evaluations per method, evenly spaced over the stage whose checkpoint is reported
    # (at steps ceil(i * steps / N), i = 1..N), so every method gets the same number at the same fractions of
    # its run whatever its update count; 0 -> every train.eval_every steps (unequal between methods).
    selection_evals: int = 8
    seeds: list[int] = field(default_factory=lambda: [0])  # ee-jax run: one training + eval per seed


@dataclass
class EvalConfig:
    """The policy acting in the environment (``ee-jax eval``), and world-model metrics."""

    splits: list[str] = field(default_factory=lambda: ["test", "ood"])
    tasks: int = 100  # the first N tasks of each split: a fixed list, the same for every method
    difficulty: int = 0  # 0 -> env.difficulty
    temperature: float = 0.0  # 0 -> greedy
    samples: int = 1  # episodes per task (pass@k needs samples >= k and temperature > 0)
    pass_k: list[int] = field(default_factory=lambda: [1])
    max_new_tokens: int = 48  # per action (reflection-trained policies think first: raise it for them)
    max_invalid: int = 5  # invalid actions after which an episode is stopped (its retry budget); 0 -> no limit
    batch_size: int = 64  # episodes acting in lockstep: one sampler call per step
    wm_transitions: int = 256  # valid-split transitions for world-model metrics; 0 -> skip them


@dataclass
class StepGroupConfig:
    """Step-level groups from early-experience branches (GiGPO-style credit assignment).

    Each RL step also replays ``states`` expert states of the training tasks and executes the expert
    action and the K alternatives recorded there (``experience.explore``), each continued by the
    policy: the K+1 branches share their first state exactly, so they form a step-level group.
    """

    enabled: bool = False
    states: int = 4  # expert states branched per RL step
    omega: float = 1.0  # A = A_episode + omega * A_step


@dataclass
class RLConfig:
    """RL continuation (``ee-jax rl``): GRPO or PPO on multi-turn episodes, from any checkpoint.

    Defaults follow the agent-GRPO settings of verl-agent that the paper used (group 8, 16 tasks per
    step, clip 0.2, KL 0.01 with the low-variance estimator, reward 10 x success - 0.1 per invalid
    action, train temperature 1.0), except ``lr``: scratch models need far more than 1e-6.
    """

    algorithm: str = "grpo"  # grpo | ppo
    init: str = "il"  # STAGE of this run | RUN_DIR:STAGE | init (untrained) | safetensors:FILE | hf:DIR
    starts: list[str] = field(default_factory=lambda: ["il", "iwm", "sr", "init"])  # ee-jax run: GRPO rows
    steps: int = 20  # RL iterations (rollout + update)
    tasks: int = 0  # the first N training tasks RL acts on; 0 -> experience.tasks.train (those with expert data)
    tasks_per_step: int = 16
    group_size: int = 8  # rollouts per task
    temperature: float = 1.0  # rollouts (the loss divides logits by it, as the sampler did)
    max_new_tokens: int = 0  # per turn; 0 -> eval.max_new_tokens
    max_turns: int = 0  # 0 -> the environment's step limit
    max_invalid: int = 0  # stop an episode after this many invalid actions; 0 -> eval.max_invalid
    success_reward: float = 10.0
    invalid_penalty: float = 0.1
    score_reward: float = 0.0  # + this x the environment's final score (partial credit)
    normalize_std: bool = True  # GRPO: divide by the group's std (False: Dr. GRPO)
    clip_low: float = 0.2
    clip_high: float = 0.2
    kl_coef: float = 0.01  # to the frozen reference (the starting checkpoint); 0 -> no reference pass
    kl_kind: str = "low_var"  # low_var (k3) | k1 | mse
    entropy_coef: float = 0.0
    epochs: int = 1  # passes over each step's samples
    minibatches: int = 2  # optimizer updates per pass (the step's packed rows split evenly between them)
    micro_rows: int = 8  # packed rows per forward/backward (gradients are summed over micro-batches)
    seq_len: int = 0  # packed row length; 0 -> model.max_seq_len
    logit_chunk: int = 256  # positions whose fp32 logits exist at once in the loss (0: a whole row)
    lr: float = 1e-4
    warmup_steps: int = 0
    gamma: float = 1.0  # discount over turns (PPO's GAE, step-group returns)
    lam: float = 1.0  # GAE lambda (PPO)
    value_coef: float = 0.5  # PPO
    value_clip: float = 0.2  # PPO
    critic_lr: float = 1e-4  # PPO
    step_groups: StepGroupConfig = field(default_factory=StepGroupConfig)
    eval_every: int = 10  # valid-split success every N steps (recipe.valid_tasks episodes); 0 -> never
    checkpoint_every: int = 5


@dataclass
class Config:
    """A whole run: everything needed to reproduce it is in here."""

    run_dir: str = "runs/default"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    experience: ExperienceConfig = field(default_factory=ExperienceConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    rl: RLConfig = field(default_factory=RLConfig)


def trained_model(cfg: Config) -> ModelConfig:
    """The model a run actually trains: a scratch tokenizer sets the vocabulary size."""
    if cfg.tokenizer.path:
        return cfg.model
    return dataclasses.replace(cfg.model, vocab_size=cfg.tokenizer.vocab_size)
