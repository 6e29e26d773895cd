"""Grouped-query attention with segment-aware causal masks, sliding windows and a KV cache."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ee_jax.config import ModelConfig
from ee_jax.models.layers import LoRA, RMSNorm, apply_rope, dense, dtype_of, lora_targets, make_param
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


def dot_product_attention(q, k, v, mask, scale: float, impl: str, segment_ids=None, window=0) -> jax.Array:
    """q [B,T,N,H], k/v [B,S,K,H] with K | N; returns [B,T,N,H].

    ``xla``: batched matmuls in head-major layout, fp32 softmax, a hand-written backward and causal
    block skipping for self-attention (see :func:`_attention`; ~1.7x faster fwd+bwd on CPU than
    autodiff through einsums or :func:`jax.nn.dot_product_attention`); ``cudnn``/``auto``:
    :func:`jax.nn.dot_product_attention` (cuDNN flash on GPU).
    """
    if impl in ("cudnn", "auto"):
        return jax.nn.dot_product_attention(
            q, k, v, mask=mask, scale=scale, implementation=None if impl == "auto" else "cudnn"
        )
    if impl == "splash":
        from ee_jax.models.splash import splash_attention

        # Splash builds its mask from structure (segments, window), not from the dense mask.
        return splash_attention(q, k, v, segment_ids, window, scale)
    b, t, n, h = q.shape
    kh, g = k.shape[2], n // k.shape[2]
    # Head-major layout [B, K, G, T, H] (K kv heads, G query heads per kv head): the score and value
    # products become plain batched matmuls.
    q5 = q.reshape(b, t, kh, g, h).transpose(0, 2, 3, 1, 4)
    kt, vt = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    s = k.shape[1]
    chunks = CAUSAL_CHUNKS if t == s and t % CAUSAL_CHUNKS == 0 and t >= 16 * CAUSAL_CHUNKS else 1
    out = _attention(q5, kt, vt, mask, scale, chunks)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)


def cached_attention(q, k_cache, v_cache, mask, scale: float, impl: str) -> jax.Array:
    """q [B,T,N,H] over a head-major KV cache k/v [B,K,S,H]; returns [B,T,N,H].

    The cache is stored in the layout the score and value products read ([B, K, S, H]), so a decode
    step neither transposes nor copies it; only cuDNN (which wants [B, S, K, H]) gets a transposed view.
    """
    if impl in ("cudnn", "auto"):
        return dot_product_attention(q, k_cache.transpose(0, 2, 1, 3), v_cache.transpose(0, 2, 1, 3), mask,
                                     scale, impl)
    b, t, n, h = q.shape
    kh = k_cache.shape[1]
    q5 = q.reshape(b, t, kh, n // kh, h).transpose(0, 2, 3, 1, 4)
    out = _attention(q5, k_cache, v_cache, mask, scale, 1)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)


# Self-attention splits the queries into this many blocks; block i attends to keys [0, end of block i)
# only, skipping the (causally masked) upper-right key blocks: 37.5% fewer score/value FLOPs at 4
# blocks, ~4% of the ee-17m CPU train step (BENCHMARKS.md). Exact: a runtime check on the mask
# falls back to full attention when a skipped block holds a visible key (e.g. positions that
# decrease along the sequence).
CAUSAL_CHUNKS = 4


def _block_fwd(q5, kt, vt, mask, scale):
    """One query block: q5 [B,K,G,Tq,H], kt/vt [B,K,E,H], mask [B,1,Tq,E] -> (out, fp32 probs).

    The G query heads sharing a kv head are stacked along the query axis ([B, K, G*Tq, H]), so
    both products are 4-D batched matmuls (measured faster on XLA:CPU than 5-D einsums).
    """
    b, kh, g, tq, h = q5.shape
    e = kt.shape[2]
    qm = q5.reshape(b, kh, g * tq, h)
    m = jnp.broadcast_to(mask[:, :, None], (b, 1, g, tq, e)).reshape(b, 1, g * tq, e)
    logits = jnp.einsum("bkth,bksh->bkts", qm, kt, preferred_element_type=jnp.float32) * scale
    logits = jnp.where(m, logits, jnp.finfo(jnp.float32).min)
    probs = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    probs = probs / jnp.sum(probs, axis=-1, keepdims=True)
    # fp32 accumulation: for bf16 inputs also XLA:CPU's fast dot path (see layers.dense).
    out = jnp.einsum("bkts,bksh->bkth", probs.astype(vt.dtype), vt, preferred_element_type=jnp.float32)
    return out.astype(vt.dtype).reshape(b, kh, g, tq, h), probs.reshape(b, kh, g, tq, e)


def _block_bwd(q5, kt, vt, probs, out, d_out, scale):
    """Gradients of one query block (shapes as in :func:`_block_fwd`, probs [B,K,G,Tq,E])."""
    b, kh, g, tq, h = q5.shape
    e = kt.shape[2]
    f32 = jnp.float32
    qm, om, dom = (a.reshape(b, kh, g * tq, h) for a in (q5, out, d_out))
    pm = probs.reshape(b, kh, g * tq, e)
    d_v = jnp.einsum("bkts,bkth->bksh", pm.astype(vt.dtype), dom, preferred_element_type=f32)
    d_probs = jnp.einsum("bkth,bksh->bkts", dom, vt, preferred_element_type=f32)
    delta = jnp.sum(dom.astype(f32) * om.astype(f32), axis=-1, keepdims=True)
    d_logits = (pm * (d_probs - delta) * scale).astype(q5.dtype)
    d_q = jnp.einsum("bkts,bksh->bkth", d_logits, kt, preferred_element_type=f32)
    d_k = jnp.einsum("bkts,bkth->bksh", d_logits, qm, preferred_element_type=f32)
    return d_q.astype(q5.dtype).reshape(q5.shape), d_k.astype(kt.dtype), d_v.astype(vt.dtype)


def _row_blocks(t: int, chunks: int) -> list[tuple[int, int]]:
    c = t // chunks
    return [(i * c, (i + 1) * c) for i in range(chunks)]


def _skippable(mask, chunks: int) -> jax.Array:
    """True when no query sees a key in the key blocks that the chunked path skips."""
    t, s = mask.shape[-2:]
    skipped = np.zeros((t, s), bool)
    for lo, hi in _row_blocks(t, chunks):
        skipped[lo:hi, hi:] = True
    return ~jnp.any(mask & skipped)


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attention(q5, kt, vt, mask, scale, chunks):
    """Softmax attention: q5 [B,K,G,T,H], kt/vt [B,K,S,H], mask [B,1,T,S] -> [B,K,G,T,H] (fp32 softmax).

    A custom VJP with the textbook backward (``dS = P * (dP - rowsum(dO * O))``) instead of autodiff
    through the softmax (faster on XLA:CPU), and causal block skipping when ``chunks > 1``.
    """
    return _attention_fwd(q5, kt, vt, mask, scale, chunks)[0]


def _attention_fwd(q5, kt, vt, mask, scale, chunks):
    def full(q5, kt, vt, mask):
        return _block_fwd(q5, kt, vt, mask, scale)

    if chunks == 1:
        out, probs = full(q5, kt, vt, mask)
        return out, (q5, kt, vt, mask, probs, out, None)

    s = kt.shape[2]

    def chunked(q5, kt, vt, mask):
        outs, probs = [], []
        for lo, hi in _row_blocks(q5.shape[3], chunks):
            o, p = _block_fwd(q5[:, :, :, lo:hi], kt[:, :, :hi], vt[:, :, :hi], mask[:, :, lo:hi, :hi], scale)
            outs.append(o)
            probs.append(jnp.pad(p, ((0, 0),) * 4 + ((0, s - hi),)))  # same residual layout as `full`
        return jnp.concatenate(outs, axis=3), jnp.concatenate(probs, axis=3)

    ok = _skippable(mask, chunks)
    out, probs = jax.lax.cond(ok, chunked, full, q5, kt, vt, mask)
    return out, (q5, kt, vt, mask, probs, out, ok)


def _attention_bwd(scale, chunks, res, d_out):
    q5, kt, vt, mask, probs, out, ok = res

    def full(q5, kt, vt, probs, out, d_out):
        return _block_bwd(q5, kt, vt, probs, out, d_out, scale)

    if chunks == 1:
        grads = full(q5, kt, vt, probs, out, d_out)
    else:
        def chunked(q5, kt, vt, probs, out, d_out):
            s = kt.shape[2]
            d_q, d_k, d_v = [], 0.0, 0.0
            for lo, hi in _row_blocks(q5.shape[3], chunks):
                rows = (slice(None),) * 3 + (slice(lo, hi),)
                dq, dk, dv = _block_bwd(q5[rows], kt[:, :, :hi], vt[:, :, :hi], probs[rows][..., :hi],
                                        out[rows], d_out[rows], scale)
                pad = ((0, 0), (0, 0), (0, s - hi), (0, 0))
                d_q.append(dq)
                d_k, d_v = d_k + jnp.pad(dk, pad), d_v + jnp.pad(dv, pad)
            return jnp.concatenate(d_q, axis=3), d_k, d_v

        grads = jax.lax.cond(ok, chunked, full, q5, kt, vt, probs, out, d_out)
    return (*grads, np.zeros(mask.shape, jax.dtypes.float0))


_attention.defvjp(_attention_fwd, _attention_bwd)


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

        targets = lora_targets(cfg)
        shapes = {"q": ((d,), (n, hd), ("embed",), ("heads", "head_dim")),
                  "k": ((d,), (kv, hd), ("embed",), ("kv_heads", "head_dim")),
                  "v": ((d,), (kv, hd), ("embed",), ("kv_heads", "head_dim")),
                  "o": ((n, hd), (d,), ("heads", "head_dim"), ("embed",))}
        for name in targets & set(shapes):
            setattr(self, f"lora_{name}", LoRA(cfg, *shapes[name], rngs=rngs))
        self.adapted = tuple(sorted(targets & set(shapes)))

    def __call__(self, x, rope, positions, segment_ids, window, cache=None):
        """x [B,T,D]. ``cache`` is ``(k_cache, v_cache)`` [B,K,S,H] (head-major) or None; returns (out, new_cache).

        With a cache, the new keys/values are written at slot = position (per row), and queries attend
        to every slot up to their own position: prefill and decode are the same code.
        """
        dt, cfg = self.dtype, self.cfg
        # Projections as 2-D matmuls on [D, heads*head_dim] views of the kernels (see layers.dense).
        def proj(name):
            w = getattr(self, name)
            y = dense(x, w[...].astype(dt).reshape(w.shape[0], -1))
            if name in self.adapted:
                y = y + getattr(self, f"lora_{name}")(x)
            return y.reshape(*x.shape[:-1], *w.shape[1:])

        q, k, v = proj("q"), proj("k"), proj("v")
        if cfg.qkv_bias:
            q, k, v = q + self.q_bias[...].astype(dt), k + self.k_bias[...].astype(dt), v + self.v_bias[...].astype(dt)
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = rope
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q = constrain(q, ("batch", "length", "act_heads", None))
        if cache is None:
            mask = attention_mask(positions, segment_ids, positions, segment_ids, window)
            out = dot_product_attention(q, k, v, mask, self.scale, cfg.attention_impl, segment_ids, window)
            new_cache = None
        elif cache[0].shape[2] == x.shape[1]:
            # A prefill into a cache of the prompt's own length (the sampler's): the cache becomes exactly these
            # keys/values (a write of T rows into T slots starts at 0), so attention is the prompt's causal
            # self-attention and may use the fused kernel (splash / cuDNN) instead of materialising T x T scores.
            ones = jnp.ones_like(positions)
            mask = attention_mask(positions, ones, positions, ones, window)
            out = dot_product_attention(q, k, v, mask, self.scale, cfg.attention_impl, ones, window)
            new_cache = (k.transpose(0, 2, 1, 3).astype(cache[0].dtype), v.transpose(0, 2, 1, 3).astype(cache[1].dtype))
        else:
            k_cache, v_cache = cache
            start = positions[:, 0]
            # per row: the T new keys/values [K, T, H] go to slots start .. start + T of its [K, S, H] cache
            write = jax.vmap(lambda c, u, s: jax.lax.dynamic_update_slice_in_dim(c, u, s, axis=1))
            k_cache = write(k_cache, k.transpose(0, 2, 1, 3).astype(k_cache.dtype), start)
            v_cache = write(v_cache, v.transpose(0, 2, 1, 3).astype(v_cache.dtype), start)
            slots = jnp.broadcast_to(jnp.arange(k_cache.shape[2]), (x.shape[0], k_cache.shape[2]))
            ones_q, ones_k = jnp.ones_like(positions), jnp.ones_like(slots)
            mask = attention_mask(positions, ones_q, slots, ones_k, window)
            impl = "xla" if cfg.attention_impl == "splash" else cfg.attention_impl
            out = cached_attention(q, k_cache.astype(dt), v_cache.astype(dt), mask, self.scale, impl)
            new_cache = (k_cache, v_cache)
        o = self.o[...].astype(dt)
        flat = out.reshape(*out.shape[:-2], -1)
        y = dense(flat, o.reshape(-1, o.shape[-1]))
        if "o" in self.adapted:
            y = y + self.lora_o(flat)
        return y, new_cache
