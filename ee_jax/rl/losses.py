"""RL token losses (JAX, jit-able) over ``[B, T]`` token arrays.

``mask`` is 1.0 on generated-reply tokens and 0 elsewhere (prompt, padding). Every function
returns SUMS over the masked tokens plus their ``count``, never a mean: gradient accumulation and
multi-device reduction then give the exact token-level mean once the caller divides by the global
count (as ``ee_jax.train.loss.weighted_token_loss``). Values at masked-out positions (padding,
prompt) are replaced by 0 before any arithmetic, so NaN or inf there reaches neither a sum nor a
gradient.

Metric entries (``clipped_sum``, ``ratio_sum``, ``vclipped_sum``) carry no gradient. Inputs that
are data, not the policy being optimised (``old_logp``, ``ref_logp``, ``advantages``, ``returns``,
``old_values``), are wrapped in ``stop_gradient``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# exp(20) ~ 4.9e8 stays finite in fp32; a log-ratio beyond it is numerical garbage (verl clamps likewise).
_LOG_RATIO_CLAMP = 20.0
# verl's low_var_kl clamps the k3 estimate to this range.
_K3_CLAMP = 10.0
KL_KINDS = ("low_var", "k1", "mse")


def token_logprobs(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Log-probability of each target token and the entropy of the full distribution there, in fp32.

    ``logits[b, t]`` is the distribution that predicts ``targets[b, t]`` (already shifted). Divide
    the logits by the sampling temperature first when it was not 1. ``-inf`` logits (filtered
    vocabulary) are fine: they add 0 to the entropy.

    Args:
        logits: ``[..., V]`` any float dtype.
        targets: ``[...]`` integer token ids.

    Returns:
        ``(logp, entropy)``, both ``[...]`` float32.
    """
    if logits.ndim != targets.ndim + 1 or logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits must be targets' shape plus a vocabulary axis, got logits {logits.shape} "
                         f"and targets {targets.shape}")
    x = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(x, axis=-1)
    logp_all = x - lse[..., None]
    logp = jnp.take_along_axis(logp_all, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    p = jnp.exp(logp_all)
    # p * log p is 0 * -inf = NaN for a -inf logit; its limit is 0 (the where keeps the gradient finite too).
    entropy = -jnp.sum(p * jnp.where(p > 0, logp_all, 0.0), axis=-1)
    return logp, entropy


def policy_loss(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array, mask: jax.Array, *,
                clip_low: float = 0.2, clip_high: float = 0.2) -> dict[str, jax.Array]:
    """Token-level PPO clipped surrogate, summed over masked tokens.

    Per token ``-min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)`` with
    ``ratio = exp(logp - old_logp)`` (log-ratio clamped to +-20). ``clip_high > clip_low`` gives
    DAPO's clip-higher.

    Args:
        logp: ``[B, T]`` current policy log-probs of the taken tokens (differentiated).
        old_logp: ``[B, T]`` log-probs under the policy that sampled the tokens.
        advantages: ``[B, T]`` per token, or ``[B]`` (one per turn, broadcast over T).
        mask: ``[B, T]`` 1.0 on reply tokens.
        clip_low: lower clip range, in ``[0, 1)``.
        clip_high: upper clip range, ``>= 0``.

    Returns:
        ``{"pg_sum", "clipped_sum", "ratio_sum", "count"}``: the loss sum; the number of tokens where
        the clipped branch is the active one (strictly worse than the unclipped, so the gradient is
        zero there); the sum of ratios; the number of masked tokens.
    """
    _check_tokens(logp=logp, old_logp=old_logp, mask=mask)
    adv = _per_token(advantages, logp.shape)
    _check_range(clip_low, "clip_low", 0.0, 1.0, upper_open=True)
    _check_range(clip_high, "clip_high", 0.0, float("inf"))
    m = mask.astype(jnp.float32)
    adv = _clean(adv, m)
    log_ratio = _clean(logp, m) - _clean(jax.lax.stop_gradient(old_logp), m)
    ratio = jnp.exp(jnp.clip(log_ratio, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP))
    unclipped = -adv * ratio
    clipped = -adv * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    return {
        "pg_sum": _masked_sum(jnp.maximum(unclipped, clipped), m),
        "clipped_sum": jax.lax.stop_gradient(_masked_sum((clipped > unclipped).astype(jnp.float32), m)),
        "ratio_sum": jax.lax.stop_gradient(_masked_sum(ratio, m)),
        "count": jnp.sum(m),
    }


def kl_penalty(logp: jax.Array, ref_logp: jax.Array, mask: jax.Array, kind: str = "low_var") -> dict[str, jax.Array]:
    """KL(policy || reference) estimate per token, summed over masked tokens.

    ``kind``: ``"low_var"`` is the k3 estimator ``exp(ref - logp) - (ref - logp) - 1`` (unbiased,
    always >= 0), with ``ref - logp`` clamped to +-20 and the result to [-10, 10] as verl's
    ``low_var_kl``; ``"k1"`` is ``logp - ref``; ``"mse"`` is ``0.5 * (logp - ref)^2``.

    Args:
        logp: ``[B, T]`` current policy log-probs (differentiated).
        ref_logp: ``[B, T]`` reference policy log-probs.
        mask: ``[B, T]`` 1.0 on reply tokens.
        kind: one of ``KL_KINDS``.

    Returns:
        ``{"kl_sum", "count"}``.
    """
    _check_tokens(logp=logp, ref_logp=ref_logp, mask=mask)
    if kind not in KL_KINDS:
        raise ValueError(f"kind must be one of {KL_KINDS}, got {kind!r}")
    m = mask.astype(jnp.float32)
    diff = _clean(logp, m) - _clean(jax.lax.stop_gradient(ref_logp), m)
    if kind == "low_var":
        log_r = jnp.clip(-diff, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
        kl = jnp.clip(jnp.exp(log_r) - log_r - 1.0, -_K3_CLAMP, _K3_CLAMP)
    elif kind == "k1":
        kl = diff
    else:
        kl = 0.5 * diff**2
    return {"kl_sum": _masked_sum(kl, m), "count": jnp.sum(m)}


def value_loss(values: jax.Array, old_values: jax.Array, returns: jax.Array, mask: jax.Array, *,
               clip: float | None = 0.2) -> dict[str, jax.Array]:
    """Clipped value loss ``0.5 * max((v - R)^2, (old + clip(v - old, -clip, clip) - R)^2)``, summed.

    Values are per token: the caller puts each turn's value (and return) on its tokens.

    Args:
        values: ``[B, T]`` current critic values (differentiated).
        old_values: ``[B, T]`` values when the rollout was scored.
        returns: ``[B, T]`` value targets (e.g. GAE returns).
        mask: ``[B, T]`` 1.0 on reply tokens.
        clip: clip range, ``>= 0``; None for the plain ``0.5 * (v - R)^2``.

    Returns:
        ``{"vf_sum", "vclipped_sum", "count"}``; ``vclipped_sum`` counts tokens where the clipped
        branch is strictly larger (the active one, zero gradient).
    """
    _check_tokens(values=values, old_values=old_values, returns=returns, mask=mask)
    m = mask.astype(jnp.float32)
    v = _clean(values, m)
    ret = _clean(jax.lax.stop_gradient(returns), m)
    unclipped = (v - ret) ** 2
    if clip is None:
        loss, active = unclipped, jnp.zeros_like(unclipped)
    else:
        _check_range(clip, "clip", 0.0, float("inf"))
        old = _clean(jax.lax.stop_gradient(old_values), m)
        clipped = (old + jnp.clip(v - old, -clip, clip) - ret) ** 2
        loss, active = jnp.maximum(unclipped, clipped), (clipped > unclipped).astype(jnp.float32)
    return {
        "vf_sum": 0.5 * _masked_sum(loss, m),
        "vclipped_sum": jax.lax.stop_gradient(_masked_sum(active, m)),
        "count": jnp.sum(m),
    }


def entropy_sum(entropy: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """Sum of per-token entropies (from ``token_logprobs``) over masked tokens: ``{"entropy_sum", "count"}``."""
    _check_tokens(entropy=entropy, mask=mask)
    m = mask.astype(jnp.float32)
    return {"entropy_sum": _masked_sum(_clean(entropy, m), m), "count": jnp.sum(m)}


def _clean(x: jax.Array, m: jax.Array) -> jax.Array:
    """``x`` in fp32 with masked-out entries set to 0.

    A product with the mask alone is not enough: 0 * NaN is NaN, and a NaN/inf value at a padding
    position would also poison the gradient (the where's cotangent there is 0 and nothing downstream
    sees the bad value).
    """
    return jnp.where(m != 0, x.astype(jnp.float32), 0.0)


def _masked_sum(x: jax.Array, m: jax.Array) -> jax.Array:
    """``sum(x * m)``; ``x`` is built from ``_clean`` inputs, so it is finite where ``m`` is 0."""
    return jnp.sum(x * m)


def _per_token(advantages: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``[B]`` or ``[B, T]`` advantages as ``[B, T]`` float32 data (no gradient)."""
    a = jax.lax.stop_gradient(jnp.asarray(advantages)).astype(jnp.float32)
    if a.shape == shape:
        return a
    if a.shape == shape[:1]:
        return jnp.broadcast_to(a[:, None], shape)
    raise ValueError(f"advantages must have shape {shape} or {shape[:1]}, got {a.shape}")


def _check_tokens(**arrays: jax.Array) -> None:
    """All arrays are 2-D ``[B, T]`` with one shape (checked at trace time)."""
    shapes = {name: tuple(jnp.shape(a)) for name, a in arrays.items()}
    first_name, first = next(iter(shapes.items()))
    if len(first) != 2:
        raise ValueError(f"{first_name} must be [B, T], got shape {first}")
    for name, shape in shapes.items():
        if shape != first:
            raise ValueError(f"{name} must have the shape of {first_name} {first}, got {shape}")


def _check_range(x, name: str, lo: float, hi: float, *, upper_open: bool = False) -> None:
    """Validate a Python-number hyperparameter (traced values are the caller's responsibility)."""
    if not isinstance(x, int | float):
        return
    ok = lo <= x < hi if upper_open else lo <= x <= hi
    if not ok:
        bracket = ")" if upper_open else "]"
        raise ValueError(f"{name} must be in [{lo}, {hi}{bracket}, got {x!r}")
