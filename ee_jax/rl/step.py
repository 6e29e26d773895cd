"""The RL update on packed turn rows: one jitted step per optimizer update, scanning its micro-batches.

The policy objective of an update is the token-level mean over its minibatch's reply tokens of

    clipped surrogate (ratio to the rollout policy, advantage per token)
    + kl_coef x KL(policy || frozen reference)    (low-variance k3 estimator by default)
    - entropy_coef x entropy,

with logits divided by the rollout temperature, as the sampler divided them. The critic (PPO)
regresses each turn state's value at its one ``value_mask`` position with a clipped loss.

**One jitted update.** A step's rollouts give a different number of packed rows every time, so an
update's minibatch arrives as ``[M, rl.micro_rows, seq_len]`` arrays: ``jax.lax.scan`` sums the
gradients and metric sums of its ``M`` micro-batches on the device (one compilation per distinct
``M``), divides by the summed token count once (the exact token-level mean however the minibatch was
split) and applies the optimizer, all in one call with the state's buffers donated: no host round trip
per micro-batch. Gradients (and the scan's accumulator) exist only for the trainable leaves: the
adapters under LoRA (:func:`~ee_jax.models.lora.trainable_leaves`).

**Logits in chunks.** The loss reads the decoder's hidden states and unembeds ``rl.logit_chunk``
positions at a time under ``jax.checkpoint`` (recomputed in the backward pass), so neither the
``[B, T, V]`` fp32 logits nor their log-softmax copies are ever whole: at most ``[B, logit_chunk, V]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from ee_jax.config import RLConfig
from ee_jax.data.batch import batch_sharding
from ee_jax.models.lora import trainable_leaves
from ee_jax.parallel.rules import logical_to_spec, use_mesh
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


def chunked_logprobs(graphdef, params, batch: dict, temperature: float, chunk: int):
    """``(logp, entropy)`` ``[B, T]`` of ``batch["targets"]`` under the decoder, ``chunk`` positions of
    logits at a time (module docstring; ``chunk`` 0 or >= T: the whole row at once)."""
    model = nnx.merge(graphdef, params)
    h, _ = model.hidden(batch["inputs"], batch["positions"], batch["segment_ids"])
    targets = batch["targets"]
    b, t, d = h.shape

    def part(hc, tc):
        return losses.token_logprobs(model.unembed(hc) / temperature, tc)

    if not chunk or chunk >= t:
        return part(h, targets)
    n = -(-t // chunk)
    pad = n * chunk - t
    hs = jnp.pad(h, ((0, 0), (0, pad), (0, 0))).reshape(b, n, chunk, d).swapaxes(0, 1)
    ts = jnp.pad(targets, ((0, 0), (0, pad))).reshape(b, n, chunk).swapaxes(0, 1)
    logp, ent = jax.lax.map(lambda x: jax.checkpoint(part)(*x), (hs, ts))
    back = lambda a: a.swapaxes(0, 1).reshape(b, n * chunk)[:, :t]  # noqa: E731
    return back(logp), back(ent)


def make_logprob_fn(graphdef, param_shardings, mesh, rl: RLConfig):
    """Jitted ``(params, batch) -> (logp, entropy)`` of the targets ``[B, T]`` (old / reference log-probs)."""

    def fn(params, batch):
        return chunked_logprobs(graphdef, params, batch, rl.temperature, rl.logit_chunk)

    bsh = {k: batch_sharding(mesh) for k in FORWARD_KEYS}
    return _jit(fn, mesh, (param_shardings, bsh), batch_sharding(mesh))


def make_value_fn(graphdef, param_shardings, mesh):
    """Jitted ``(critic params, batch) -> values [B, T]``."""

    def fn(params, batch):
        return apply_critic(graphdef, params, batch["inputs"], batch["positions"], batch["segment_ids"])

    bsh = {k: batch_sharding(mesh) for k in ("inputs", "positions", "segment_ids")}
    return _jit(fn, mesh, (param_shardings, bsh), batch_sharding(mesh))


def micro_batch_sharding(mesh) -> NamedSharding:
    """``[M, rows, T]`` minibatch arrays: micro-batches in order, each one's rows over the batch axes."""
    return NamedSharding(mesh, PartitionSpec(None, *logical_to_spec(("batch", "length"))))


def _scanned_update(tx: optax.GradientTransformation, shardings: TrainState, mesh, micro_loss, keys,
                    also: tuple[str, ...] = ()):
    """Jitted ``(state, minibatch [M, rows, T]) -> (state, metric sums, grad norm)`` (module docstring).

    ``micro_loss(params, micro_batch) -> (summed loss, metric sums with "tokens")`` is differentiated
    with respect to the trainable leaves only; the mean gradient is the summed one over ``tokens``.
    """

    def fn(state: TrainState, minibatch):
        trainable, rebuild = trainable_leaves(state.params, also)

        def grads(tr, mb):
            return jax.grad(lambda t: micro_loss(rebuild(t), mb), has_aux=True)(tr)

        first = jax.tree.map(lambda a: a[0], minibatch)
        zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(grads, trainable, first))

        def body(acc, mb):
            return jax.tree.map(jnp.add, acc, grads(trainable, mb)), None

        (g, sums), _ = jax.lax.scan(body, zeros, minibatch)
        g = jax.tree.map(lambda x: x / jnp.maximum(sums["tokens"], 1.0), g)
        full = rebuild(g, fill=jnp.zeros_like)  # frozen leaves: a zero update, no optimizer state
        updates, opt_state = tx.update(full, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=state.rng)
        return new, sums, optax.tree.norm(g)

    rep = NamedSharding(mesh, PartitionSpec())
    msh = {k: micro_batch_sharding(mesh) for k in keys}
    return _jit(fn, mesh, (shardings, msh), (shardings, rep, rep), donate=(0,))


def make_policy_update(graphdef, tx: optax.GradientTransformation, shardings: TrainState, mesh, rl: RLConfig):
    """Jitted ``(state, minibatch) -> (state, metric sums, grad norm)``: one optimizer update of the policy
    objective over the minibatch's micro-batches (metric sums over reply tokens; divide by ``tokens``)."""

    def micro_loss(p, batch):
        mask = batch["weights"]
        logp, entropy = chunked_logprobs(graphdef, p, batch, rl.temperature, rl.logit_chunk)
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
        return total, {"pg_loss": pg["pg_sum"], "kl": kl, "entropy": ent, "clip_fraction": pg["clipped_sum"],
                       "ratio": pg["ratio_sum"], "approx_kl_old": drift, "tokens": pg["count"], "loss": total}

    return _scanned_update(tx, shardings, mesh, micro_loss, POLICY_KEYS)


def make_critic_update(graphdef, tx: optax.GradientTransformation, shardings: TrainState, mesh, rl: RLConfig):
    """Jitted ``(critic state, minibatch) -> (state, metric sums, grad norm)``: clipped value loss at each
    turn's state position (``value_mask``), times ``value_coef``; under LoRA the critic's adapters and its
    value head train."""

    def micro_loss(p, batch):
        mask = batch["value_mask"]
        values = apply_critic(graphdef, p, batch["inputs"], batch["positions"], batch["segment_ids"])
        vl = losses.value_loss(values, batch["old_values"], batch["returns"], mask, clip=rl.value_clip)
        return rl.value_coef * vl["vf_sum"], {"value_loss": vl["vf_sum"], "value_clip_fraction": vl["vclipped_sum"],
                                              "tokens": vl["count"]}

    return _scanned_update(tx, shardings, mesh, micro_loss, CRITIC_KEYS, also=CRITIC_HEAD)
