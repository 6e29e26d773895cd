"""The RL update on packed turn rows: gradient sums per micro-batch, then one optimizer update.

The policy objective of an update is the token-level mean over its minibatch's reply tokens of

    clipped surrogate (ratio to the rollout policy, advantage per token)
    + kl_coef x KL(policy || frozen reference)    (low-variance k3 estimator by default)
    - entropy_coef x entropy,

with logits divided by the rollout temperature, as the sampler divided them. The critic (PPO)
regresses each turn state's value at its one ``value_mask`` position with a clipped loss.

Why gradients are accumulated on the host rather than inside one jitted step: a step's rollouts give
a different number of packed rows every time. Micro-batches have one fixed shape ``[rl.micro_rows,
seq_len]`` (one compilation), any number of them make an update, and the update divides the summed
gradient by the summed token count once: the exact mean however the minibatch was split.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from ee_jax.config import RLConfig
from ee_jax.data.batch import batch_sharding
from ee_jax.models.factory import apply_model
from ee_jax.models.lora import freeze_base
from ee_jax.parallel.rules import use_mesh
from ee_jax.rl import losses
from ee_jax.rl.critic import CRITIC_HEAD, apply_critic
from ee_jax.train.state import TrainState

POLICY_KEYS = ("inputs", "targets", "weights", "positions", "segment_ids", "advantages", "old_logprobs",
               "ref_logprobs")
CRITIC_KEYS = ("inputs", "positions", "segment_ids", "returns", "value_mask", "old_values")
FORWARD_KEYS = ("inputs", "targets", "positions", "segment_ids")


def device_batch(arrays: dict, mesh) -> dict:
    """Host ``[B, T]`` arrays -> global arrays sharded over the batch axes.

    Every host holds all ``B`` rows (each runs the same seeded rollouts), so the global batch is those
    rows, as on one host: ``device_put`` keeps each device's slice.
    """
    sh = batch_sharding(mesh)
    return {k: jax.device_put(np.asarray(v), sh) for k, v in arrays.items()}


def _jit(fn, mesh, in_shardings, out_shardings, donate=()):
    jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings, donate_argnums=donate)

    def run(*args):
        with use_mesh(mesh):
            return jitted(*args)

    run.jitted = jitted
    return run


def make_logprob_fn(graphdef, param_shardings, mesh, temperature: float):
    """Jitted ``(params, batch) -> (logp, entropy)`` of the targets ``[B, T]`` (old / reference log-probs)."""

    def fn(params, batch):
        logits, _ = apply_model(graphdef, params, batch["inputs"], batch["positions"], batch["segment_ids"])
        return losses.token_logprobs(logits / temperature, batch["targets"])

    bsh = {k: batch_sharding(mesh) for k in FORWARD_KEYS}
    return _jit(fn, mesh, (param_shardings, bsh), batch_sharding(mesh))


def make_value_fn(graphdef, param_shardings, mesh):
    """Jitted ``(critic params, batch) -> values [B, T]``."""

    def fn(params, batch):
        return apply_critic(graphdef, params, batch["inputs"], batch["positions"], batch["segment_ids"])

    bsh = {k: batch_sharding(mesh) for k in ("inputs", "positions", "segment_ids")}
    return _jit(fn, mesh, (param_shardings, bsh), batch_sharding(mesh))


def make_policy_grads(graphdef, param_shardings, mesh, rl: RLConfig):
    """Jitted ``(params, micro-batch) -> (gradient sums, metric sums)`` of the policy objective.

    Sums over reply tokens (not means): micro-batches accumulate on the host and
    :func:`make_apply_update` divides by the update's total token count once, so an update is the
    exact token-level mean over its minibatch however it was split.
    """

    def fn(params, batch):
        mask = batch["weights"]

        def loss_fn(p):
            p = freeze_base(p)  # LoRA: only the adapters get gradients
            logits, _ = apply_model(graphdef, p, batch["inputs"], batch["positions"], batch["segment_ids"])
            logp, entropy = losses.token_logprobs(logits / rl.temperature, batch["targets"])
            pg = losses.policy_loss(logp, batch["old_logprobs"], batch["advantages"], mask,
                                    clip_low=rl.clip_low, clip_high=rl.clip_high)
            ent = losses.entropy_sum(entropy, mask)["entropy_sum"]
            total = pg["pg_sum"] - rl.entropy_coef * ent
            kl = jnp.zeros(())
            if rl.kl_coef:
                kl = losses.kl_penalty(logp, batch["ref_logprobs"], mask, kind=rl.kl_kind)["kl_sum"]
                total = total + rl.kl_coef * kl
            # log-prob drift from the rollout policy (k1): how far the updates of this step have moved it
            drift = jnp.sum(jax.lax.stop_gradient(batch["old_logprobs"] - logp) * mask)
            sums = {"pg_loss": pg["pg_sum"], "kl": kl, "entropy": ent, "clip_fraction": pg["clipped_sum"],
                    "ratio": pg["ratio_sum"], "approx_kl_old": drift, "tokens": pg["count"], "loss": total}
            return total, sums

        grads, sums = jax.grad(loss_fn, has_aux=True)(params)
        return grads, sums

    bsh = {k: batch_sharding(mesh) for k in POLICY_KEYS}
    return _jit(fn, mesh, (param_shardings, bsh), (param_shardings, NamedSharding(mesh, PartitionSpec())))


def make_critic_grads(graphdef, param_shardings, mesh, rl: RLConfig):
    """Jitted ``(critic params, micro-batch) -> (gradient sums, metric sums)``: clipped value loss at
    each turn's state position (``value_mask``), times ``value_coef``."""

    def fn(params, batch):
        mask = batch["value_mask"]

        def loss_fn(p):
            p = freeze_base(p, also=CRITIC_HEAD)
            values = apply_critic(graphdef, p, batch["inputs"], batch["positions"], batch["segment_ids"])
            vl = losses.value_loss(values, batch["old_values"], batch["returns"], mask, clip=rl.value_clip)
            return rl.value_coef * vl["vf_sum"], {"value_loss": vl["vf_sum"], "value_clip_fraction": vl["vclipped_sum"],
                                                  "tokens": vl["count"]}

        return jax.grad(loss_fn, has_aux=True)(params)

    bsh = {k: batch_sharding(mesh) for k in CRITIC_KEYS}
    return _jit(fn, mesh, (param_shardings, bsh), (param_shardings, NamedSharding(mesh, PartitionSpec())))


def make_apply_update(tx: optax.GradientTransformation, shardings: TrainState, mesh):
    """Jitted ``(state, gradient sums, token count) -> (state, grad_norm)``: one optimizer update with the
    mean gradient (state buffers donated)."""

    def fn(state: TrainState, grads, count):
        grads = jax.tree.map(lambda g: g / jnp.maximum(count, 1.0), grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=state.rng)
        return new, optax.tree.norm(grads)

    rep = NamedSharding(mesh, PartitionSpec())
    return _jit(fn, mesh, (shardings, shardings.params, rep), (shardings, rep), donate=(0,))


def make_accumulate(param_shardings, mesh):
    """Jitted in-place sum of two gradient trees (the first donated)."""
    return _jit(lambda a, b: jax.tree.map(jnp.add, a, b), mesh, (param_shardings, param_shardings), param_shardings,
                donate=(0,))
