"""Cross-field checks that types alone cannot express. Each error names the key and the expectation."""

from __future__ import annotations

from ee_jax.config.schema import LORA_TARGETS, Config, ConfigError
from ee_jax.envs.base import SPLITS, EnvError
from ee_jax.envs.registry import ADAPTERS, env_class, list_envs

CHOICES = {
    "model.activation": ("silu", "gelu_tanh"),
    "model.dtype": ("float32", "bfloat16"),
    "model.param_dtype": ("float32", "bfloat16"),
    "model.remat": ("none", "full", "dots"),
    "model.attention_impl": ("xla", "cudnn", "splash", "auto"),
    "model.rope_scaling.kind": ("none", "llama3"),
    "optimizer.schedule": ("cosine", "linear", "constant"),
    "tokenizer.kind": ("sentencepiece", "hf"),
    "tokenizer.template": ("plain", "chatml", "llama3", "gemma"),
    "experience.source": ("oracle", "jsonl"),
    "experience.on_bad_line": ("fail", "skip"),
    "experience.explore.strategy": ("uniform", "policy", "mixed"),
    "experience.reflect.generator": ("grounded", "oracle_template", "self", "http"),
    "recipe.select": ("best", "last"),
    "recipe.select_metric": ("success", "loss"),
}
RENAMED = {("experience.reflect.generator", "template"):
           "'template' is now 'oracle_template', a privileged variant; the default is 'grounded'"}
METHODS = ("il", "il_matched", "iwm", "sr", "rl")  # rl: the RL rows, one per rl.starts entry


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _fail(key: str, value, expected: str):
    raise ConfigError(f"{key}={value!r}: expected {expected}")


def validate(cfg: Config, num_devices: int | None = None) -> None:
    """Raise ConfigError on the first inconsistent value. ``num_devices`` enables the mesh check."""
    for key, allowed in CHOICES.items():
        if _get(cfg, key) not in allowed:
            renamed = RENAMED.get((key, _get(cfg, key)))
            _fail(key, _get(cfg, key), "one of " + ", ".join(allowed) + (f" ({renamed})" if renamed else ""))
    if not 0 <= cfg.seed < 2**32:  # numpy's and sentencepiece's seeds are unsigned 32-bit
        _fail("seed", cfg.seed, "an integer in [0, 2**32)")
    m = cfg.model
    for key in ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "ffn_dim", "max_seq_len"):
        if not 0 < getattr(m, key) < 2**31:  # token ids and shapes are int32
            _fail(f"model.{key}", getattr(m, key), "a positive integer below 2**31")
    if not 0 < cfg.tokenizer.vocab_size < 2**31:
        _fail("tokenizer.vocab_size", cfg.tokenizer.vocab_size, "a positive integer below 2**31")
    if not 0 <= cfg.data.valid_fraction < 1:
        _fail("data.valid_fraction", cfg.data.valid_fraction, "in [0, 1): the share of the corpus held out")
    if m.head_dim == 0 and m.d_model % m.num_heads:
        _fail("model.num_heads", m.num_heads, f"a divisor of model.d_model={m.d_model} (or set model.head_dim)")
    if m.num_heads % m.num_kv_heads:
        _fail("model.num_kv_heads", m.num_kv_heads, f"a divisor of model.num_heads={m.num_heads}")
    if m.global_every and not m.sliding_window:
        _fail("model.global_every", m.global_every, "0 unless model.sliding_window > 0")
    if m.lora_rank < 0:
        _fail("model.lora_rank", m.lora_rank, "0 (full fine-tuning) or a positive rank")
    if m.lora_rank:
        targets = [x.strip() for x in m.lora_targets.split(",") if x.strip()]
        if not targets or set(targets) - set(LORA_TARGETS):
            _fail("model.lora_targets", m.lora_targets, "a comma-separated subset of " + ",".join(LORA_TARGETS))
        if m.lora_alpha <= 0:
            _fail("model.lora_alpha", m.lora_alpha, "a positive number")
    t = cfg.train
    for key in ("steps", "batch_size", "seq_len", "grad_accum"):
        if getattr(t, key) <= 0:
            _fail(f"train.{key}", getattr(t, key), "a positive integer")
    if t.batch_size % t.grad_accum:
        _fail("train.grad_accum", t.grad_accum, f"a divisor of train.batch_size={t.batch_size}")
    if t.seq_len > m.max_seq_len:
        _fail("train.seq_len", t.seq_len, f"<= model.max_seq_len={m.max_seq_len}")
    o = cfg.optimizer
    if o.lr <= 0:
        _fail("optimizer.lr", o.lr, "> 0")
    if not 0 <= o.min_lr_ratio <= 1:
        _fail("optimizer.min_lr_ratio", o.min_lr_ratio, "in [0, 1]")
    s = cfg.sampler
    if s.temperature < 0:
        _fail("sampler.temperature", s.temperature, ">= 0 (0 = greedy)")
    if not 0 < s.top_p <= 1:
        _fail("sampler.top_p", s.top_p, "in (0, 1]")
    if s.weights_dtype not in ("auto", "float32", "bfloat16"):
        _fail("sampler.weights_dtype", s.weights_dtype, "auto | float32 | bfloat16")
    validate_env(cfg)
    validate_experience(cfg)
    validate_recipe(cfg)
    validate_rl(cfg)
    if num_devices is not None:
        validate_mesh(cfg, num_devices)


def validate_env(cfg: Config) -> None:
    """The environment exists, and its difficulty and limits are in range (without starting it)."""
    e = cfg.env
    if e.name not in list_envs():
        _fail("env.name", e.name, "one of " + ", ".join(list_envs()))
    if e.max_steps < 0 or e.pool_workers < 0 or e.java_heap_mb <= 0:
        bad = [(k, getattr(e, k)) for k in ("max_steps", "pool_workers") if getattr(e, k) < 0]
        bad = bad or [("java_heap_mb", e.java_heap_mb)]
        _fail(f"env.{bad[0][0]}", bad[0][1], "a non-negative integer (java_heap_mb: positive)")
    if e.name in ADAPTERS:
        return  # its class needs the optional package; checked when the environment starts

    try:
        cls = env_class(e.name)
    except EnvError as err:
        _fail("env.name", e.name, f"an importable environment ({err})")
    if e.difficulty and e.difficulty not in cls.difficulties:
        _fail("env.difficulty", e.difficulty, f"one of {list(cls.difficulties)} for env {e.name!r} (or 0 = default)")


def validate_experience(cfg: Config) -> None:
    """Collection and pipeline settings: counts positive, splits known, fractions in range."""
    x = cfg.experience
    for split, n in x.tasks.items():
        if split not in SPLITS:
            _fail(f"experience.tasks.{split}", n, "a split key among " + ", ".join(SPLITS))
        if not isinstance(n, int) or n < 0:
            _fail(f"experience.tasks.{split}", n, "a non-negative integer")
    if x.source == "jsonl" and not x.trajectories:
        _fail("experience.trajectories", x.trajectories, "a JSONL path when experience.source=jsonl")
    for key, value in (("experience.tasks_per_shard", x.tasks_per_shard), ("experience.explore.k", x.explore.k),
                       ("experience.explore.batch_states", x.explore.batch_states),
                       ("experience.explore.proposals_per_alternative", x.explore.proposals_per_alternative),
                       ("experience.reflect.alternatives", x.reflect.alternatives),
                       ("experience.reflect.batch_size", x.reflect.batch_size),
                       ("experience.reflect.concurrency", x.reflect.concurrency),
                       ("prompt.max_observation_chars", cfg.prompt.max_observation_chars)):
        if value <= 0:
            _fail(key, value, "a positive integer")
    if not 0 <= x.explore.policy_fraction <= 1:
        _fail("experience.explore.policy_fraction", x.explore.policy_fraction, "in [0, 1]")
    if x.reflect.generator == "http" and not (x.reflect.url and x.reflect.model):
        _fail("experience.reflect.url", x.reflect.url,
              "an endpoint URL and experience.reflect.model for generator=http")
    if x.reflect.min_words > x.reflect.max_words:
        _fail("experience.reflect.min_words", x.reflect.min_words,
              f"<= experience.reflect.max_words={x.reflect.max_words}")
    if cfg.prompt.history_window < 0:
        _fail("prompt.history_window", cfg.prompt.history_window, "a non-negative integer")
    if cfg.prompt.history_mode not in ("sliding", "append"):
        _fail("prompt.history_mode", cfg.prompt.history_mode, "'sliding' or 'append'")
    if cfg.data.host_sharding not in ("rows", "records"):
        _fail("data.host_sharding", cfg.data.host_sharding, "'rows' or 'records'")
    for name, w in cfg.data.sr_mix.items():
        if name not in ("reflection", "expert_step"):
            _fail(f"data.sr_mix.{name}", w, "keys 'reflection' and 'expert_step'")
        if w < 0:
            _fail(f"data.sr_mix.{name}", w, ">= 0")


def validate_rl(cfg: Config) -> None:
    """RL settings: algorithm, counts, clip ranges and the KL estimator."""
    r = cfg.rl
    if r.algorithm not in ("grpo", "ppo"):
        _fail("rl.algorithm", r.algorithm, "grpo or ppo")
    if r.kl_kind not in ("low_var", "k1", "mse"):
        _fail("rl.kl_kind", r.kl_kind, "low_var, k1 or mse")
    for key in ("steps", "tasks_per_step", "group_size", "epochs", "minibatches", "micro_rows"):
        if getattr(r, key) < 1:
            _fail(f"rl.{key}", getattr(r, key), "a positive integer")
    for key in ("tasks", "max_new_tokens", "max_turns", "max_invalid", "seq_len", "logit_chunk", "eval_every",
                "warmup_steps"):
        if getattr(r, key) < 0:
            _fail(f"rl.{key}", getattr(r, key), "a non-negative integer (0 = the default)")
    for key in ("clip_low", "clip_high", "kl_coef", "entropy_coef", "value_clip", "value_coef"):
        if getattr(r, key) < 0:
            _fail(f"rl.{key}", getattr(r, key), "a non-negative number")
    if r.temperature <= 0:
        _fail("rl.temperature", r.temperature, "a positive temperature (rollouts sample; the loss divides by it)")
    if not (0 <= r.gamma <= 1 and 0 <= r.lam <= 1):
        _fail("rl.gamma" if not 0 <= r.gamma <= 1 else "rl.lam", r.gamma if not 0 <= r.gamma <= 1 else r.lam,
              "a number in [0, 1]")
    if r.lr <= 0 or r.critic_lr <= 0:
        _fail("rl.lr" if r.lr <= 0 else "rl.critic_lr", min(r.lr, r.critic_lr), "a positive learning rate")
    if r.checkpoint_every < 1:
        _fail("rl.checkpoint_every", r.checkpoint_every, "a positive integer")
    if r.step_groups.states < 1:
        _fail("rl.step_groups.states", r.step_groups.states, "a positive integer")


def validate_recipe(cfg: Config) -> None:
    """Methods known, budgets non-negative, evaluation splits and pass@k consistent."""
    r, e = cfg.recipe, cfg.eval
    for m in r.methods:
        if m not in METHODS:
            _fail("recipe.methods", r.methods, "a list drawn from " + ", ".join(METHODS))
    if "rl" in r.methods:
        for start in cfg.rl.starts:
            if start != "init" and start not in r.methods:
                _fail("rl.starts", cfg.rl.starts, f"starts among init and the trained methods {r.methods} "
                      f"({start!r} is not trained by this run)")
    if not r.seeds or len(set(r.seeds)) != len(r.seeds) or not all(0 <= x < 2**32 for x in r.seeds):
        _fail("recipe.seeds", r.seeds, "a non-empty list of distinct integers in [0, 2**32)")
    if r.epochs < 0 or r.wm_epochs < 0:
        _fail("recipe.epochs" if r.epochs < 0 else "recipe.wm_epochs", min(r.epochs, r.wm_epochs), ">= 0")
    if not 0 <= r.wm_max_fraction < 1:
        _fail("recipe.wm_max_fraction", r.wm_max_fraction, "in [0, 1)")
    if r.valid_tasks < 0:
        _fail("recipe.valid_tasks", r.valid_tasks, "a non-negative integer")
    if r.selection_evals < 0:
        _fail("recipe.selection_evals", r.selection_evals, "a non-negative integer (0: every train.eval_every steps)")
    for split in e.splits:
        if split not in SPLITS or split in ("train", "valid"):
            _fail("eval.splits", e.splits, "held-out splits among test, ood (train/valid are for training "
                  "and checkpoint selection)")
    for key in ("tasks", "samples", "max_new_tokens", "batch_size"):
        if getattr(e, key) <= 0:
            _fail(f"eval.{key}", getattr(e, key), "a positive integer")
    if e.max_invalid < 0 or e.wm_transitions < 0:
        _fail("eval.max_invalid" if e.max_invalid < 0 else "eval.wm_transitions",
              min(e.max_invalid, e.wm_transitions), "a non-negative integer")
    for k in e.pass_k:
        if not 1 <= k <= e.samples:
            _fail("eval.pass_k", e.pass_k, f"values in [1, eval.samples={e.samples}]")
    if e.temperature < 0:
        _fail("eval.temperature", e.temperature, ">= 0 (0 = greedy)")


def resolve_mesh_shape(cfg: Config, num_devices: int) -> tuple[int, int, int]:
    """Mesh (data, fsdp, tensor) with a single -1 filled in; checks the product equals the devices."""
    shape = [cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor]
    names = ("mesh.data", "mesh.fsdp", "mesh.tensor")
    free = [i for i, v in enumerate(shape) if v == -1]
    if len(free) > 1:
        _fail(names[free[1]], -1, "at most one mesh axis set to -1")
    for i, v in enumerate(shape):
        if v == 0 or v < -1:
            _fail(names[i], v, "a positive integer or -1")
    fixed = 1
    for v in shape:
        fixed *= v if v > 0 else 1
    if free:
        if num_devices % fixed:
            _fail(names[free[0]], -1, f"the other axes ({fixed}) to divide the device count {num_devices}")
        shape[free[0]] = num_devices // fixed
    if shape[0] * shape[1] * shape[2] != num_devices:
        raise ConfigError(
            f"mesh.data*mesh.fsdp*mesh.tensor = {shape[0]}*{shape[1]}*{shape[2]} = "
            f"{shape[0] * shape[1] * shape[2]}: expected the device count {num_devices}"
        )
    return tuple(shape)


def validate_mesh(cfg: Config, num_devices: int, steps: tuple[str, ...] = ("train", "rl")) -> None:
    """Check the mesh against the devices and the model/batch shapes it must divide.

    ``steps`` names the programs that will run on the mesh (``train``, ``rl``): only their batch shapes are
    checked, so a training-only job is not refused for ``rl.micro_rows``.
    """
    data, fsdp, tensor = resolve_mesh_shape(cfg, num_devices)
    m = cfg.model
    if m.num_kv_heads % tensor and m.num_heads % tensor:
        _fail("mesh.tensor", tensor, f"a divisor of model.num_heads={m.num_heads}")
    micro = cfg.train.batch_size // cfg.train.grad_accum
    if "train" in steps and micro % (data * fsdp):
        _fail("train.batch_size", cfg.train.batch_size,
              f"micro-batch (batch_size/grad_accum = {micro}) divisible by mesh.data*mesh.fsdp = {data * fsdp}")
    if "rl" in steps and cfg.rl.micro_rows % (data * fsdp):
        _fail("rl.micro_rows", cfg.rl.micro_rows, f"a multiple of mesh.data*mesh.fsdp = {data * fsdp}")
