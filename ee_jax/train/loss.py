"""The one masked next-token loss: imitation, world modeling and reflection differ only in weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def weighted_token_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array):
    """Sums over weighted tokens: ``(sum_ce, sum_weight, sum_correct)``.

    Returning sums (not a mean) lets gradient accumulation and multi-device reduction produce the
    exact mean over all weighted tokens of the global batch, and a row with no weighted tokens
    simply contributes nothing.
    """
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    w = weights.astype(jnp.float32)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return jnp.sum(ce * w), jnp.sum(w), jnp.sum(correct * w)


def mean_token_loss(logits, targets, weights) -> jax.Array:
    """Mean cross-entropy over weighted tokens; 0 when nothing is weighted (never NaN)."""
    total, count, _ = weighted_token_loss(logits, targets, weights)
    return total / jnp.maximum(count, 1.0)
