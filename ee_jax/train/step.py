"""The train step: one pure ``(state, batch) -> (state, metrics)`` under ``jax.jit``.

A batch is a dict of ``[B, T]`` arrays: ``inputs``, ``targets``, ``weights`` (per-token loss weight),
``positions`` and ``segment_ids`` (packed sequences). Gradient accumulation splits ``B`` into
``grad_accum`` micro-batches inside the same jitted function and divides by the total weight once,
so the update equals the full-batch update exactly.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from ee_jax.data.batch import BATCH_KEYS, batch_sharding
from ee_jax.models.factory import apply_model
from ee_jax.models.lora import freeze_base
from ee_jax.parallel.rules import use_mesh
from ee_jax.train.loss import weighted_token_loss
from ee_jax.train.state import TrainState


def _micro_grads(graphdef, params, batch):
    def loss_fn(p):
        p = freeze_base(p)  # LoRA: no weight gradients for the base (identity without adapters)
        logits, _ = apply_model(graphdef, p, batch["inputs"], batch["positions"], batch["segment_ids"])
        total, count, correct = weighted_token_loss(logits, batch["targets"], batch["weights"])
        return total, (count, correct)

    (total, (count, correct)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, total, count, correct


def make_train_step(graphdef, tx: optax.GradientTransformation, shardings: TrainState, mesh,
                    grad_accum: int = 1, schedule: optax.Schedule | None = None):
    """Jitted step with explicit in/out shardings and the state buffers donated."""

    def step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, Any]]:
        if grad_accum == 1:
            grads, total, count, correct = _micro_grads(graphdef, state.params, batch)
        else:
            micro = jax.tree.map(lambda x: x.reshape(grad_accum, -1, *x.shape[1:]), batch)
            zeros = jax.tree.map(jnp.zeros_like, state.params)

            def body(acc, mb):
                g, t, c, k = _micro_grads(graphdef, state.params, mb)
                return jax.tree.map(jnp.add, acc, (g, t, c, k)), None

            init = (zeros, jnp.zeros(()), jnp.zeros(()), jnp.zeros(()))
            (grads, total, count, correct), _ = jax.lax.scan(body, init, micro)
        denom = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": total / denom,
            "accuracy": correct / denom,
            "weighted_tokens": count,
            "grad_norm": grad_norm,
        }
        if schedule is not None:
            metrics["lr"] = schedule(state.step)
        new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=state.rng)
        return new_state, metrics

    bsh = {k: batch_sharding(mesh) for k in BATCH_KEYS}
    replicated = NamedSharding(mesh, PartitionSpec())
    jitted = jax.jit(step, in_shardings=(shardings, bsh), out_shardings=(shardings, replicated),
                     donate_argnums=(0,))

    def run(state, batch):
        with use_mesh(mesh):
            return jitted(state, batch)

    run.jitted = jitted
    return run


def make_eval_step(graphdef, shardings: TrainState, mesh):
    """Jitted loss/accuracy sums over a batch (no update), for validation."""

    def evaluate(params, batch):
        logits, _ = apply_model(graphdef, params, batch["inputs"], batch["positions"], batch["segment_ids"])
        total, count, correct = weighted_token_loss(logits, batch["targets"], batch["weights"])
        return {"loss_sum": total, "weighted_tokens": count, "correct": correct}

    bsh = {k: batch_sharding(mesh) for k in BATCH_KEYS}
    jitted = jax.jit(evaluate, in_shardings=(shardings.params, bsh))

    def run(params, batch):
        with use_mesh(mesh):
            return jitted(params, batch)

    return run
