"""Grouped-query attention with segment-aware causal masks, sliding windows and a KV cache."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ee_jax.config import ModelConfig
from ee_jax.models.layers import RMSNorm, apply_rope, dtype_of, make_param
from ee_jax.parallel.rules import constrain


def attention_mask(q_pos, q_seg, k_pos, k_seg, window) -> jax.Array:
    """Boolean mask [B, 1, T, S]: same segment, key not after query, and (if window > 0) ``q - k < window``.

    ``window`` may be a traced scalar (scan over layers mixes local and global layers); 0 means global.
    Segment 0 marks padding; pad queries still see themselves, so no row is fully masked.
    """
    qp, kp = q_pos[:, :, None], k_pos[:, None, :]
    mask = (q_seg[:, :, None] == k_seg[:, None, :]) & (kp <= qp)
    mask &= (window <= 0) | (qp - kp < window)
    return mask[:, None, :, :]


def dot_product_attention(q, k, v, mask, scale: float, impl: str) -> jax.Array:
    """q [B,T,N,H], k/v [B,S,K,H] with K | N; returns [B,T,N,H].

    ``xla``: explicit grouped einsums with an fp32 softmax (measured faster on CPU than the generic
    path); ``cudnn``/``auto``: :func:`jax.nn.dot_product_attention` (cuDNN flash on GPU).
    """
    if impl in ("cudnn", "auto"):
        return jax.nn.dot_product_attention(
            q, k, v, mask=mask, scale=scale, implementation=None if impl == "auto" else "cudnn"
        )
    if impl == "splash":
        from ee_jax.models.splash import splash_attention

        return splash_attention(q, k, v, mask, scale)
    b, t, n, h = q.shape
    kh = k.shape[2]
    qg = q.reshape(b, t, kh, n // kh, h)
    logits = jnp.einsum("btkgh,bskh->bkgts", qg, k, preferred_element_type=jnp.float32) * scale
    logits = jnp.where(mask[:, :, None], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskh->btkgh", probs, v)
    return out.reshape(b, t, n, h)


class Attention(nnx.Module):
    """Multi-head attention with GQA, optional q/k/v biases (Qwen2) and q/k RMSNorm (Gemma3)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d, n, kv = cfg.d_model, cfg.num_heads, cfg.num_kv_heads
        hd = self.head_dim = cfg.head_dim or d // n
        init = nnx.initializers.normal(cfg.init_std)
        pd = dtype_of(cfg.param_dtype)
        self.q = make_param(rngs, init, (d, n, hd), ("embed", "heads", "head_dim"), pd)
        self.k = make_param(rngs, init, (d, kv, hd), ("embed", "kv_heads", "head_dim"), pd)
        self.v = make_param(rngs, init, (d, kv, hd), ("embed", "kv_heads", "head_dim"), pd)
        self.o = make_param(rngs, init, (n, hd, d), ("heads", "head_dim", "embed"), pd)
        if cfg.qkv_bias:
            zeros = nnx.initializers.zeros
            self.q_bias = make_param(rngs, zeros, (n, hd), ("heads", "head_dim"), pd)
            self.k_bias = make_param(rngs, zeros, (kv, hd), ("kv_heads", "head_dim"), pd)
            self.v_bias = make_param(rngs, zeros, (kv, hd), ("kv_heads", "head_dim"), pd)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(hd, cfg.norm_eps, cfg.norm_offset, param_dtype=pd, rngs=rngs)
            self.k_norm = RMSNorm(hd, cfg.norm_eps, cfg.norm_offset, param_dtype=pd, rngs=rngs)
        scalar = cfg.query_pre_attn_scalar or hd
        self.scale = float(scalar) ** -0.5
        self.dtype = dtype_of(cfg.dtype)

    def __call__(self, x, rope, positions, segment_ids, window, cache=None):
        """x [B,T,D]. ``cache`` is ``(k_cache, v_cache)`` [B,S,K,H] or None; returns (out, new_cache).

        With a cache, the new keys/values are written at slot = position (per row), and queries attend
        to every slot up to their own position: prefill and decode are the same code.
        """
        dt, cfg = self.dtype, self.cfg
        q = jnp.einsum("btd,dnh->btnh", x, self.q[...].astype(dt))
        k = jnp.einsum("btd,dkh->btkh", x, self.k[...].astype(dt))
        v = jnp.einsum("btd,dkh->btkh", x, self.v[...].astype(dt))
        if cfg.qkv_bias:
            q, k, v = q + self.q_bias[...].astype(dt), k + self.k_bias[...].astype(dt), v + self.v_bias[...].astype(dt)
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = rope
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q = constrain(q, ("batch", "length", "act_heads", None))
        if cache is None:
            mask = attention_mask(positions, segment_ids, positions, segment_ids, window)
            out = dot_product_attention(q, k, v, mask, self.scale, cfg.attention_impl)
            new_cache = None
        else:
            k_cache, v_cache = cache
            start = positions[:, 0]
            write = jax.vmap(lambda c, u, s: jax.lax.dynamic_update_slice_in_dim(c, u, s, axis=0))
            k_cache = write(k_cache, k.astype(k_cache.dtype), start)
            v_cache = write(v_cache, v.astype(v_cache.dtype), start)
            slots = jnp.broadcast_to(jnp.arange(k_cache.shape[1]), (x.shape[0], k_cache.shape[1]))
            ones_q, ones_k = jnp.ones_like(positions), jnp.ones_like(slots)
            mask = attention_mask(positions, ones_q, slots, ones_k, window)
            impl = "xla" if cfg.attention_impl == "splash" else cfg.attention_impl
            out = dot_product_attention(q, k_cache.astype(dt), v_cache.astype(dt), mask, self.scale, impl)
            new_cache = (k_cache, v_cache)
        return jnp.einsum("btnh,nhd->btd", out, self.o[...].astype(dt)), new_cache
