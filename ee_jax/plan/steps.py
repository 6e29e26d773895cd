"""Ahead-of-time compiles of every program a run executes, from shapes alone (no weights, no devices needed).

Each ``plan_*`` function builds the config's abstract state (``ShapeDtypeStruct`` leaves carrying their
``NamedSharding`` on the plan's mesh), lowers the *same* jitted function the run calls (``train.step``,
``rl.step``, ``models.sampler``) and compiles it. A :class:`StepPlan` records, per chip: the bytes of the
compiled program (arguments, outputs, temporaries, donated aliases) plus the bytes the run keeps alive
beside it (``resident_bytes``: e.g. the optimizer state and gradient accumulator while an RL micro-batch
runs), the compile seconds, XLA's FLOP and HBM-traffic counts, the closed-form model FLOPs, and the
collectives of the partitioned HLO (:mod:`ee_jax.plan.hlo`).

A program that cannot fit fails to compile on TPU (``RESOURCE_EXHAUSTED``); the plan records that instead
of raising, with the bytes libtpu reported.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from ee_jax.config import Config
from ee_jax.data.batch import BATCH_KEYS, batch_sharding
from ee_jax.models.accounting import forward_flops_per_token, param_count, train_flops_per_token
from ee_jax.models.engine import RolloutEngine
from ee_jax.models.factory import abstract_model
from ee_jax.models.sampler import Sampler
from ee_jax.parallel.rules import logical_to_spec, use_mesh
from ee_jax.plan.hlo import collectives
from ee_jax.rl.critic import CRITIC_HEAD, abstract_critic
from ee_jax.rl.step import CRITIC_KEYS, POLICY_KEYS, make_critic_update, make_policy_update, micro_batch_sharding
from ee_jax.rl.trainer import rl_optimizer, rl_seq_len
from ee_jax.train.optimizer import train_optimizer
from ee_jax.train.state import abstract_state, state_shardings
from ee_jax.train.step import make_train_step

_OOM = re.compile(r"RESOURCE_EXHAUSTED")
_OOM_BYTES = re.compile(r"\(([\d.]+)([KMGT])\)\s*exceeds available HBM\s*\(([\d.]+)([KMGT])\)")
_UNIT = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
FLOAT_KEYS = {"weights", "advantages", "old_logprobs", "ref_logprobs", "returns", "value_mask", "old_values"}


@dataclasses.dataclass
class StepPlan:
    """One compiled program's figures on one chip (bytes and FLOPs per chip, seconds of compile)."""

    name: str
    tokens: int  # tokens the program processes per call (all chips)
    model_flops: float  # closed-form model FLOPs per call (all chips)
    compile_s: float = 0.0  # trace + lower + XLA compile
    lower_s: float = 0.0  # of which tracing the Python function and lowering it to StableHLO
    argument_bytes: int = 0
    output_bytes: int = 0
    temp_bytes: int = 0
    alias_bytes: int = 0
    resident_bytes: int = 0  # kept alive by the run beside this program (not among its arguments)
    resident_note: str = ""
    param_bytes: int = 0
    opt_bytes: int = 0
    xla_flops: float | None = None  # per chip, XLA's count (loop bodies as XLA counts them)
    xla_bytes_accessed: float | None = None  # XLA's count: every op's operands + results, loop bodies once
    hbm_traffic_bytes: float = 0.0  # per chip, the estimate's lower bound: weights streamed + KV cache + updates
    collectives: dict = dataclasses.field(default_factory=dict)
    oom: str = ""  # libtpu's RESOURCE_EXHAUSTED message when it did not compile
    oom_needed_bytes: float | None = None

    @property
    def peak_bytes(self) -> int:
        """Bytes live on one chip while the program runs: its buffers (donated ones once) + the run's residents."""
        if self.oom_needed_bytes is not None:
            return int(self.oom_needed_bytes + self.argument_bytes + self.resident_bytes)
        return self.argument_bytes + self.output_bytes + self.temp_bytes - self.alias_bytes + self.resident_bytes

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "peak_bytes": self.peak_bytes}


def shard_bytes(tree) -> int:
    """Bytes one chip holds of an abstract pytree (each leaf's shard under its sharding)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        if not hasattr(leaf, "shape"):
            continue
        shape = leaf.sharding.shard_shape(leaf.shape) if getattr(leaf, "sharding", None) is not None else leaf.shape
        total += math.prod(shape) * jnp.dtype(leaf.dtype).itemsize
    return int(total)


def weight_stream_bytes(cfg: Config, mesh) -> float:
    """Bytes of weights one chip reads per pass over the model: all of them at the compute dtype once FSDP has
    gathered them (tensor parallelism keeps 1/tensor of each)."""
    return param_count(cfg.model) * jnp.dtype(cfg.model.dtype).itemsize / mesh.shape["tensor"]


def _passes(cfg: Config) -> int:
    return 3 + (cfg.model.remat != "none")  # forward, two backward matmuls per weight (+ the recomputed forward)


def _update_traffic(param_bytes: int, opt_bytes: int) -> float:
    return 2 * (param_bytes + opt_bytes) + param_bytes  # read and write parameters and moments, read gradients


def _cache_bytes(cfg: Config, rows: int, length: int, mesh) -> float:
    """One chip's share of a KV cache of ``rows`` x ``length`` (rows split over the data-parallel axes)."""
    m = cfg.model
    hd = m.head_dim or m.d_model // m.num_heads
    dp = mesh.shape["data"] * mesh.shape["fsdp"]
    return 2 * m.num_layers * rows * length * m.num_kv_heads * hd * jnp.dtype(m.dtype).itemsize / dp


def _sds(shape, dtype, sharding):
    return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)


def _batch(keys, rows: int, length: int, mesh) -> dict:
    bs = batch_sharding(mesh)
    return {k: _sds((rows, length), jnp.float32 if k in FLOAT_KEYS else jnp.int32, bs) for k in keys}


def _compile(step: StepPlan, mesh, jitted, *args, **kwargs):
    """Lower + compile ``jitted`` on ``args``; fill ``step``'s memory, cost and collectives. Returns the
    compiled program, or None when it did not fit (``step.oom`` set)."""
    t0 = time.perf_counter()
    try:
        with use_mesh(mesh):
            lowered = jitted.lower(*args, **kwargs)
            step.lower_s = time.perf_counter() - t0
            compiled = lowered.compile()
    except Exception as e:  # XlaRuntimeError; its type is not public API
        msg = str(e)
        if not _OOM.search(msg):
            raise
        step.compile_s = time.perf_counter() - t0
        step.oom = " ".join(msg.split())[:400]
        m = _OOM_BYTES.search(msg)
        if m:
            step.oom_needed_bytes = float(m.group(1)) * _UNIT[m.group(2)]
        step.argument_bytes = shard_bytes(args)
        return None
    step.compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    if mem is not None:
        step.argument_bytes = int(mem.argument_size_in_bytes)
        step.output_bytes = int(mem.output_size_in_bytes)
        step.temp_bytes = int(mem.temp_size_in_bytes)
        step.alias_bytes = int(mem.alias_size_in_bytes)
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else {}
    if cost:
        step.xla_flops = float(cost.get("flops", 0.0)) or None
        step.xla_bytes_accessed = float(cost.get("bytes accessed", 0.0)) or None
    step.collectives = collectives(compiled.as_text(), mesh.devices.size)
    return compiled


def plan_train(cfg: Config, mesh) -> StepPlan:
    """The training step IL, IWM and SR share, at ``train.batch_size`` x ``train.seq_len``."""
    t = cfg.train
    tx = train_optimizer(cfg, t.steps)
    graphdef, abs_params = abstract_model(cfg.model, mesh)
    shardings = state_shardings(tx, abs_params, mesh)
    state = abstract_state(tx, abs_params, mesh)
    step_fn = make_train_step(graphdef, tx, shardings, mesh, t.grad_accum)
    tokens = t.batch_size * t.seq_len
    plan = StepPlan("train", tokens, train_flops_per_token(cfg.model, t.seq_len) * tokens,
                    param_bytes=shard_bytes(state.params), opt_bytes=shard_bytes(state.opt_state))
    plan.hbm_traffic_bytes = (weight_stream_bytes(cfg, mesh) * _passes(cfg) * t.grad_accum
                              + _update_traffic(plan.param_bytes, plan.opt_bytes))
    _compile(plan, mesh, step_fn.jitted, state, _batch(BATCH_KEYS, t.batch_size, t.seq_len, mesh))
    return plan


PLAN_MICRO_BATCHES = 2  # micro-batches per planned RL update (the scan's length; memory does not grow with it)


def _minibatch(keys, micro: int, rows: int, length: int, mesh) -> dict:
    ms = micro_batch_sharding(mesh)
    return {k: _sds((micro, rows, length), jnp.float32 if k in FLOAT_KEYS else jnp.int32, ms) for k in keys}


def plan_rl(cfg: Config, mesh, algorithms: tuple[str, ...] = ("grpo", "ppo")) -> list[StepPlan]:
    """The RL update: one jitted optimizer update scanning its micro-batches (``rl.micro_rows`` x the
    packed row length each; ``PLAN_MICRO_BATCHES`` of them), which GRPO and PPO share; with PPO the
    critic's update too.

    Residents: the optimizer state and the gradient accumulator (adapter-sized under LoRA); the frozen
    reference policy when ``rl.kl_coef`` > 0; with PPO the critic's state (and the policy's state during the
    critic's update).
    """
    r = cfg.rl
    seq = rl_seq_len(cfg)
    ppo = "ppo" in algorithms
    tx = rl_optimizer(cfg, r.lr)
    graphdef, abs_params = abstract_model(cfg.model, mesh)
    shardings = state_shardings(tx, abs_params, mesh)
    state = abstract_state(tx, abs_params, mesh)
    p_bytes, o_bytes = shard_bytes(state.params), shard_bytes(state.opt_state)
    ref = p_bytes if r.kl_coef else 0
    critic_bytes = 0
    if ppo:
        cgraph, c_params = abstract_critic(cfg.model, mesh)
        ctx = rl_optimizer(cfg, r.critic_lr, also=CRITIC_HEAD)
        cstate = abstract_state(ctx, c_params, mesh)
        cshard = state_shardings(ctx, c_params, mesh)
        critic_bytes = shard_bytes(cstate)
    extra = (" + reference policy" if ref else "") + (" + critic state (PPO)" if critic_bytes else "")
    micro = PLAN_MICRO_BATCHES
    tokens = micro * r.micro_rows * seq
    flops = train_flops_per_token(cfg.model, seq) * tokens
    prefix = "+".join(algorithms)
    update = StepPlan(f"{prefix}:policy_update", tokens, flops, param_bytes=p_bytes, opt_bytes=o_bytes,
                      resident_bytes=ref + critic_bytes, resident_note=extra[3:],
                      hbm_traffic_bytes=weight_stream_bytes(cfg, mesh) * _passes(cfg) * micro
                      + _update_traffic(p_bytes, o_bytes))
    _compile(update, mesh, make_policy_update(graphdef, tx, shardings, mesh, r).jitted, state,
             _minibatch(POLICY_KEYS, micro, r.micro_rows, seq, mesh))
    out = [update]
    if ppo:
        cp, co = shard_bytes(cstate.params), shard_bytes(cstate.opt_state)
        policy = "policy state" + (" + reference policy" if ref else "")
        cu = StepPlan("ppo:critic_update", tokens, flops, param_bytes=cp, opt_bytes=co,
                      resident_bytes=p_bytes + o_bytes + ref, resident_note=policy,
                      hbm_traffic_bytes=weight_stream_bytes(cfg, mesh) * _passes(cfg) * micro
                      + _update_traffic(cp, co))
        _compile(cu, mesh, make_critic_update(cgraph, ctx, cshard, mesh, r).jitted, cstate,
                 _minibatch(CRITIC_KEYS, micro, r.micro_rows, seq, mesh))
        out.append(cu)
    return out


ROLLOUT_CHUNK = 16  # the decode chunk RL rollouts and evaluation use (the Sampler's default)


def rollout_shape(cfg: Config, sampler: Sampler) -> dict[str, int]:
    """The rollout engine's shapes for one RL step: ``rl.tasks_per_step`` x ``rl.group_size`` rows (bucketed),
    the widest prefill (a whole prompt that still leaves room for a reply within ``model.max_seq_len``) and
    the engine's cache of ``model.max_seq_len`` slots, read whole by the last decode chunks."""
    r = cfg.rl
    max_new = r.max_new_tokens or cfg.eval.max_new_tokens
    rows, prompt, _, _ = sampler.shapes(r.tasks_per_step * r.group_size, cfg.model.max_seq_len - max_new, max_new)
    cache = cfg.model.max_seq_len
    return {"rows": rows, "prompt_len": min(prompt, cache), "cache_len": cache, "chunk": sampler.chunk,
            "max_new_tokens": max_new}


def plan_sampler(cfg: Config, mesh, algorithms: tuple[str, ...] = ("grpo", "ppo")) -> tuple[dict, list[StepPlan]]:
    """``(rollout shape, [extend, decode])``: the rollout engine's (:mod:`ee_jax.models.engine`) prefill of a
    whole prompt into every row and one decode chunk over the whole cache, as an RL step runs them.

    Residents: the policy's optimizer state, the reference policy (``rl.kl_coef`` > 0) and, for PPO, the critic
    state, which the RL loop keeps while it samples. The sampler's inference copy (per-layer weights, ``fsdp``
    gathered, matrices in the compute dtype; made once per policy version) is among the programs' arguments.
    """
    tx = rl_optimizer(cfg, cfg.rl.lr)
    graphdef, abs_params = abstract_model(cfg.model, mesh)
    opt_bytes = shard_bytes(abstract_state(tx, abs_params, mesh).opt_state)  # sharded as the RL run holds it
    p_bytes = shard_bytes(abs_params)
    critic = 0
    if "ppo" in algorithms:
        _, c_params = abstract_critic(cfg.model, mesh)
        critic = shard_bytes(abstract_state(rl_optimizer(cfg, cfg.rl.critic_lr, also=CRITIC_HEAD), c_params, mesh))
    resident = opt_bytes + (p_bytes if cfg.rl.kl_coef else 0) + critic
    note = "optimizer state" + (" + reference policy" if cfg.rl.kl_coef else "") + (" + critic" if critic else "")
    sampler = Sampler(graphdef, abs_params, cfg.model, mesh, cfg=cfg.sampler, chunk=ROLLOUT_CHUNK)
    shape = rollout_shape(cfg, sampler)
    engine = RolloutEngine(sampler, shape["rows"], cache_len=shape["cache_len"])
    rep = NamedSharding(mesh, PartitionSpec())
    with use_mesh(mesh):
        top, layers = sampler.abstract_inference_weights(abs_params)
        carry_shape = jax.eval_shape(engine._init_fn)
    b, t, c = shape["rows"], shape["prompt_len"], shape["cache_len"]
    axes = ("batch", "kv_heads", "cache_length", "head_dim")  # per layer; scanned layers add a leading axis
    carry = (jax.tree.map(lambda a: _sds(a.shape, a.dtype, NamedSharding(
        mesh, logical_to_spec(("layers",) * (a.ndim - 4) + axes))), carry_shape[0]),
             *(_sds(a.shape, a.dtype, rep) for a in carry_shape[1:]))
    extend = StepPlan("rollout:extend", b * t, forward_flops_per_token(cfg.model, t // 2) * b * t,
                      param_bytes=p_bytes, resident_bytes=resident, resident_note=note,
                      hbm_traffic_bytes=weight_stream_bytes(cfg, mesh) + 2 * _cache_bytes(cfg, b, c, mesh))
    rows = _sds((b,), jnp.int32, rep)
    compiled = _compile(extend, mesh, engine._extend, top, layers, carry, rows,
                        _sds((b, t), jnp.int32, sampler._row_sharding), rows, rows, view=c)
    chunk = shape["chunk"]
    decode = StepPlan("rollout:decode", b * chunk, forward_flops_per_token(cfg.model, c) * b * chunk,
                      param_bytes=p_bytes, resident_bytes=resident, resident_note=note,
                      hbm_traffic_bytes=chunk * (weight_stream_bytes(cfg, mesh) + _cache_bytes(cfg, b, c, mesh)))
    if compiled is None:
        decode.oom = "not compiled: the prefill does not fit"
        return shape, [extend, decode]
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), b))
    _compile(decode, mesh, engine._decode, top, layers, carry, _sds((b,), jnp.bool_, rep),
             _sds((1,), jnp.int32, rep), _sds(keys.shape, keys.dtype, rep), _sds((), jnp.float32, rep),
             _sds((), jnp.float32, rep), view=c, top_k=int(cfg.sampler.top_k), greedy=cfg.rl.temperature == 0)
    return shape, [extend, decode]


def abstract_inputs_note(cfg: Config) -> dict[str, Any]:
    """The shapes a plan compiled for (echoed in its report)."""
    return {"train_batch": [cfg.train.batch_size, cfg.train.seq_len], "grad_accum": cfg.train.grad_accum,
            "rl_micro_batch": [cfg.rl.micro_rows, rl_seq_len(cfg)], "dtype": cfg.model.dtype,
            "param_dtype": cfg.model.param_dtype, "remat": cfg.model.remat, "scan_layers": cfg.model.scan_layers,
            "attention": cfg.model.attention_impl, "lora_rank": cfg.model.lora_rank}


