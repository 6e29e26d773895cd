"""The RL loop (``ee-jax rl``): rollouts with the current policy, advantages, clipped updates, repeat.

One RL step: the step's tasks (and branch starts) are rolled out ``rl.group_size`` times at
``rl.temperature``; the turns are packed into fixed-shape rows; old log-probs (the rollout policy) and
reference log-probs (the frozen start) are computed with the training forward; then ``rl.epochs``
passes of minibatch updates. Every input of a step is a function of ``(seed, step)``, so a resumed run
is the run that was not interrupted.

The stage ``ckpt/STAGE`` holds the policy's train state plus ``ref_params`` (KL reference) and the
critic's train state (PPO); :func:`ee_jax.agent.policy.load_policy` reads only the policy's parameters.
The reported checkpoint follows ``recipe.select`` like every method: the best valid-split success
(evaluated every ``rl.eval_every`` steps with ``recipe.valid_tasks`` greedy episodes), or the last.
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from ee_jax.agent.policy import Policy
from ee_jax.agent.weights import initial_params, pretrained_spec
from ee_jax.config import Config, config_to_dict
from ee_jax.data.tokenizer_corpus import ensure_tokenizer
from ee_jax.envs.registry import make_env_from_config
from ee_jax.models.lora import only_adapters
from ee_jax.parallel import make_mesh
from ee_jax.parallel.distributed import to_host
from ee_jax.parallel.rules import use_mesh
from ee_jax.rl import samples as rl_samples
from ee_jax.rl.batching import pack_turns, update_groups
from ee_jax.rl.critic import CRITIC_HEAD, critic_from_policy
from ee_jax.rl.rollout import collect_rollouts, with_turn_limit
from ee_jax.rl.starts import branch_anchors, step_branches, step_tasks, train_tasks
from ee_jax.rl.step import (
    CRITIC_KEYS,
    POLICY_KEYS,
    device_batch,
    make_critic_update,
    make_logprob_fn,
    make_policy_update,
    make_value_fn,
    micro_batch_sharding,
)
from ee_jax.rundir import RunDir
from ee_jax.seeds import unit_seed
from ee_jax.train import make_optimizer
from ee_jax.train.guard import NonFiniteLossError
from ee_jax.train.recipes import check_settings, episode_evaluator
from ee_jax.train.runner import Deferred, Periodic, Schedule, StageRunner
from ee_jax.train.state import TrainState, create_train_state, state_shardings


def stage_name(algorithm: str, init: str) -> str:
    """``grpo_from_il``, ``ppo_from_sr``, ``grpo_from_init``; ``RUN:STAGE`` by its stage, imported weights
    by their file or directory name."""
    label = init or "init"
    for prefix in ("hf:", "safetensors:"):
        if label.startswith(prefix):
            label = os.path.basename(label[len(prefix):].rstrip("/")).split(".")[0]
            break
    else:
        label = label.rpartition(":")[2]
    return f"{algorithm}_from_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


def rl_settings(cfg: Config, init: str) -> dict:
    """What decides an RL stage's result (compared before skipping or resuming)."""
    d = config_to_dict(cfg)
    ignored = ("starts", "init", "logit_chunk")  # logit_chunk changes memory, not results
    return {"init": init, "seed": cfg.seed, "rl": {k: v for k, v in d["rl"].items() if k not in ignored},
            **{k: d[k] for k in ("model", "prompt", "env", "optimizer")}, "template": cfg.tokenizer.template,
            "valid_tasks": cfg.recipe.valid_tasks, "select": cfg.recipe.select,
            "eval_for_selection": {k: d["eval"][k] for k in ("max_new_tokens", "max_invalid", "temperature")}}


def rl_seq_len(cfg: Config) -> int:
    """The packed RL row length: ``rl.seq_len``, or the model's context when 0."""
    return cfg.rl.seq_len or cfg.model.max_seq_len


def rl_optimizer(cfg: Config, lr: float, also: tuple[str, ...] = ()):
    """RL's AdamW: constant ``lr`` after ``rl.warmup_steps``; under LoRA only the adapters (and ``also``) train."""
    ocfg = dataclasses.replace(cfg.optimizer, lr=lr, schedule="constant", warmup_steps=cfg.rl.warmup_steps)
    tx = make_optimizer(ocfg, max(cfg.rl.steps, 1))
    return only_adapters(tx, also) if cfg.model.lora_rank else tx


class _Models:
    """Policy (+ reference, + critic) states, their jitted functions, and their checkpointable dict."""

    def __init__(self, cfg: Config, mesh, init_params):
        r = cfg.rl
        self.cfg, self.mesh = cfg, mesh
        self.tx = rl_optimizer(cfg, r.lr)
        self.graphdef, self.state, self.shardings = create_train_state(cfg, self.tx, mesh, init_params)
        self.param_shardings = self.shardings.params
        self.ref = None
        if r.kl_coef:  # a copy: the policy's buffers are donated to the step
            self.ref = jax.tree.map(lambda a: a.copy(), self.state.params)
        self.logprob_fn = make_logprob_fn(self.graphdef, self.param_shardings, mesh, r)
        self.policy_update = make_policy_update(self.graphdef, self.tx, self.shardings, mesh, r)
        # an update's micro-batches gathered from the step's rows on the device (one program per shape)
        self.take = jax.jit(lambda data, idx: jax.tree.map(lambda a: a[idx], data),
                            out_shardings=micro_batch_sharding(mesh))
        self.critic = None
        if r.algorithm == "ppo":
            self.critic_graphdef, cparams = critic_from_policy(cfg.model, mesh, self.state.params)
            self.critic_tx = rl_optimizer(cfg, r.critic_lr, also=CRITIC_HEAD)
            self.critic = _train_state(self.critic_tx, cparams, mesh)
            self.critic_shardings = jax.tree.map(lambda a: a.sharding, self.critic)
            self.value_fn = make_value_fn(self.critic_graphdef, self.critic_shardings.params, mesh)
            self.critic_update = make_critic_update(self.critic_graphdef, self.critic_tx, self.critic_shardings,
                                                    mesh, r)

    def update(self, data: dict, micro_batches: list) -> dict:
        """One optimizer update (policy, and critic for PPO) over ``micro_batches`` (row indices of the
        step's device arrays ``data``): one jitted call each, nothing waited for. Returns device metric
        sums (token sums; divide by ``tokens`` / ``value_tokens``) and grad norms."""
        idx = np.stack(micro_batches)
        with use_mesh(self.mesh):
            self.state, out, norm = self.policy_update(self.state, self.take({k: data[k] for k in POLICY_KEYS}, idx))
            out = {**out, "grad_norm": norm}
            if self.critic is not None:
                self.critic, sums, norm = self.critic_update(self.critic,
                                                             self.take({k: data[k] for k in CRITIC_KEYS}, idx))
                out.update({("value_tokens" if k == "tokens" else k): v for k, v in sums.items()},
                           critic_grad_norm=norm)
        # One wait per optimizer update (none per micro-batch): XLA:CPU deadlocks when two programs with
        # collectives over the same devices are in flight at once (seen with 8 simulated devices).
        return jax.block_until_ready(out)

    def as_dict(self) -> dict:
        d = self.state.as_dict()
        if self.ref is not None:
            d["ref_params"] = self.ref
        if self.critic is not None:
            d["critic"] = self.critic.as_dict()
        return d

    def abstract(self) -> dict:
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), self.as_dict())

    def load(self, d: dict) -> None:
        self.state = TrainState.from_dict(d)
        if self.ref is not None:
            self.ref = d["ref_params"]
        if self.critic is not None:
            self.critic = TrainState.from_dict(d["critic"])


def _train_state(tx, params, mesh) -> TrainState:
    """A fresh train state around already-sharded ``params`` (optimizer moments follow them)."""
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), params)
    shard = state_shardings(tx, abstract, mesh)

    def build(p):
        return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p),
                          rng=jnp.zeros((2,), jnp.uint32))

    with use_mesh(mesh):
        return jax.jit(build, out_shardings=shard)(params)


def _forward_rows(fn, params, arrays: dict, rows: int, mesh, keys=("inputs", "targets", "positions", "segment_ids")):
    """Apply a jitted row function ``rows`` packed rows at a time; the outputs are concatenated on the
    device (old / reference log-probs never visit the host)."""
    n = arrays["inputs"].shape[0]
    # each block finished before the next is dispatched: no two collective programs in flight (see update)
    outs = [jax.block_until_ready(fn(params, device_batch({k: arrays[k][s:s + rows] for k in keys}, mesh)))
            for s in range(0, n, rows)]
    with use_mesh(mesh):
        if isinstance(outs[0], tuple):
            return tuple(jnp.concatenate([o[i] for o in outs]) for i in range(len(outs[0])))
        return jnp.concatenate(outs)


def train_rl(cfg: Config, *, init: str | None = None, stage: str | None = None, overwrite: bool = False,
             progress: bool = True) -> dict:
    """Run (or resume, or skip when finished) one RL stage of ``cfg.run_dir``; returns ``train/STAGE.json``.

    Args:
        init: where the policy starts (default ``rl.init``): a stage of this run (``il``, ``iwm``, ``sr``),
            ``RUN_DIR:STAGE``, ``init`` (the untrained model), ``safetensors:FILE`` or ``hf:DIR``.
        stage: the checkpoint stage written (default ``ALGORITHM_from_START``).
    """
    r = cfg.rl
    init = r.init if init is None else init
    stage = stage or stage_name(r.algorithm, init)
    settings = rl_settings(cfg, init)
    done = check_settings(cfg, stage, settings, overwrite, stages=(stage,))
    if done is not None:
        return {**done, "skipped": True}
    run = RunDir(cfg.run_dir)
    data_dir = run.data
    tok = ensure_tokenizer(cfg, data_dir)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=tok.vocab_size))
    mesh = make_mesh(cfg, steps=("rl",))
    runner = StageRunner(run_dir=cfg.run_dir, ckpt_dir=run.ckpt(stage), stage=stage,
                         total=r.steps, stop_after=cfg.train.stop_after_steps, select=cfg.recipe.select,
                         select_metric="success", checkpoint_every=r.checkpoint_every, save_scored=True,
                         keep=cfg.train.keep_checkpoints, save_history=True, progress=progress, desc=f"rl {stage}")
    with runner:
        reached, models, source = _run_rl(cfg, runner, mesh, tok, init, data_dir)
        chosen = runner.finish(reached)
    if chosen is None:  # a time-boxed invocation (train.stop_after_steps): resume later
        return {"method": stage, "policy_stage": stage, "stopped_at": reached, "steps": r.steps,
                "history": runner.history}
    record = {"method": stage, "policy_stage": stage, "algorithm": r.algorithm, "init": init,
              "init_source": source, "stages": [{"stage": stage, "objective": r.algorithm, "steps": r.steps,
                                                 "init": init, "resumed_from": runner.resumed_from,
                                                 "selected_step": chosen["step"], "selection": chosen}],
              "updates": r.steps, "seed": cfg.seed, "history": runner.history}
    run.write_json(run.train_record(stage), record)
    return record


def _run_rl(cfg: Config, runner: StageRunner, mesh, tok, init: str, data_dir: str):
    """Build (or restore) the models, then run the stage's steps: ``(step reached, models, init source)``."""
    r, stage = cfg.rl, runner.stage
    resumed_from = runner.resumed_from
    params, source = (None, "resume") if resumed_from is not None else initial_params(
        cfg, mesh, pretrained_spec(cfg) if init == "init" else init)
    models = _Models(cfg, mesh, params)
    if resumed_from is not None:
        restored, meta = runner.restore(models.abstract())
        resumed_from = runner.resumed_from  # an older step when the newest checkpoint was damaged
        models.load(restored)
        source = meta.get("init_source", source)
        runner.history[:] = [h for h in meta.get("history", []) if h["step"] <= resumed_from]
    runner.meta = {"stage": stage, "algorithm": r.algorithm, "init": init, "init_source": source, "seed": cfg.seed}
    policy = Policy(cfg, models.graphdef, models.state.params, tok, mesh, source=f"rl:{stage}")
    sampler = policy.sampler()
    env = make_env_from_config(with_turn_limit(cfg))
    try:
        tasks, turn_limit = train_tasks(cfg, env), env.max_steps
    finally:
        env.close()
    # a branch needs the forced action plus at least one policy turn within the episode's step limit
    anchors = branch_anchors(data_dir, max_prefix=turn_limit - 2) if r.step_groups.enabled else []
    seq_len = rl_seq_len(cfg)

    def step(i: int) -> Deferred:
        return Deferred(_rl_step(cfg, models, policy, sampler, tasks, anchors, i, seq_len))

    def log(done: int) -> None:
        m = runner.metrics()
        runner.writer.write(done, m, prefix=f"{stage}/rl/")
        runner.history.append({"step": done, **m})
        runner.bar.set_postfix(success=f"{m['success']:.2f}", reward=f"{m['reward']:.2f}", kl=f"{m['kl']:.3f}")

    actions = []
    if r.eval_every and cfg.recipe.valid_tasks:
        evaluate_fn = episode_evaluator(cfg, models.graphdef, tok, mesh)
        actions.append(Periodic(Schedule(every=r.eval_every, at_last=True),
                                lambda done: runner.evaluated(done, evaluate_fn(models.state.params, done))))
    actions.append(Periodic(Schedule(every=1), log))
    reached = runner.run(resumed_from or 0, step, models.as_dict, actions)
    return reached, models, source


def _rl_step(cfg: Config, models: _Models, policy, sampler, tasks, anchors, step: int,
             seq_len: int) -> dict[str, float]:
    """One RL iteration: rollouts, advantages, packing, old/reference log-probs, minibatch updates."""
    r = cfg.rl
    seed = unit_seed(cfg.seed, "rl-step", step)
    t0 = time.perf_counter()
    sampler.params = models.state.params
    branches = step_branches(anchors, r.step_groups.states, step, cfg.seed) if anchors else []
    stats: dict = {}
    rollouts = collect_rollouts(policy, sampler, cfg, tasks=step_tasks(tasks, r.tasks_per_step, step, cfg.seed),
                                group_size=r.group_size, branches=branches, seed=seed, stats=stats)
    rollout_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    rows = r.micro_rows
    mesh = models.mesh
    values = None
    if r.algorithm == "ppo":
        # values of every turn's state first (one packing), then GAE, then the final packing
        samples = rl_samples.turn_samples(rollouts, [np.zeros(len(x.turns)) for x in rollouts])
        arrays, placement = pack_turns(samples, seq_len, rows)
        values = _forward_rows(models.value_fn, models.critic.params, arrays, rows, mesh,
                               keys=("inputs", "positions", "segment_ids"))
        host_values = to_host(values)  # GAE runs on the host, over turns
        per_turn = np.asarray([host_values[row, off + len(s.prompt) - 1]
                               for s, (row, off) in zip(samples, placement)], np.float32)
        split = np.split(per_turn, np.cumsum([len(x.turns) for x in rollouts])[:-1])
        turn_adv, turn_ret = rl_samples.ppo_turn_advantages(rollouts, split, r)
        samples = rl_samples.turn_samples(rollouts, turn_adv, turn_ret)
        arrays, _ = pack_turns(samples, seq_len, rows)  # same samples, same order: the same placement
    else:
        samples = rl_samples.turn_samples(rollouts, rl_samples.grpo_turn_advantages(rollouts, r))
        arrays, _ = pack_turns(samples, seq_len, rows)
    # the step's rows on the device once; log-probs computed there stay there
    data = device_batch({k: v for k, v in arrays.items() if k in POLICY_KEYS + CRITIC_KEYS
                         or k in ("sampler_logprobs", "sampler_mask")}, mesh)
    old_lp, entropy = _forward_rows(models.logprob_fn, models.state.params, arrays, rows, mesh)
    data["old_logprobs"] = old_lp
    data["ref_logprobs"] = (_forward_rows(models.logprob_fn, models.ref, arrays, rows, mesh)[0]
                            if models.ref is not None else old_lp)
    if values is not None:
        data["old_values"] = values
    with use_mesh(mesh):
        smask, weights = data["sampler_mask"], data["weights"]
        on_device = jax.block_until_ready({
            "logprob_mismatch": jnp.sum(jnp.abs(old_lp - data["sampler_logprobs"]) * smask)
            / jnp.maximum(smask.sum(), 1.0),
            "rollout_entropy": jnp.sum(entropy * weights) / jnp.maximum(weights.sum(), 1.0)})
    sums: dict = {}
    rng = np.random.default_rng(unit_seed(cfg.seed, "rl-minibatches", step))
    n_updates = 0
    for _ in range(r.epochs):
        for group in update_groups(arrays["inputs"].shape[0], rows, r.minibatches, rng):
            for k, v in models.update(data, group).items():
                sums[k] = v if k not in sums else sums[k] + v
            n_updates += 1
    acc = {k: float(v) for k, v in jax.device_get(sums).items()}  # the one wait for the step's updates
    update_s = time.perf_counter() - t1
    out = rl_samples.rollout_metrics(rollouts)
    tokens, vtokens = max(acc.pop("tokens", 0.0), 1.0), max(acc.pop("value_tokens", 0.0), 1.0)
    for k in ("grad_norm", "critic_grad_norm"):
        if k in acc:
            out[k] = acc.pop(k) / max(n_updates, 1)
    out.update({k: v / (vtokens if k.startswith("value_") else tokens) for k, v in acc.items()})
    out.update({k: float(v) for k, v in jax.device_get(on_device).items()})
    out.update({"rows": float(arrays["inputs"].shape[0]), "updates": float(n_updates),
                "rollout_s": rollout_s, "update_s": update_s,
                "env_s": stats["env_s"], "sample_s": stats["sample_s"], "env_steps": float(stats["env_steps"]),
                "generated_tokens": float(stats["generated_tokens"]),
                "reply_tokens": float(arrays["weights"].sum())})
    if not np.isfinite(out.get("loss", 0.0)):
        raise NonFiniteLossError(f"RL step {step + 1}: the loss is {out['loss']}; the last checkpoint is the last "
                                 "good state")
    return out
