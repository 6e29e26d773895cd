"""Small building blocks: annotated parameters, RMSNorm, gated MLP, rotary embeddings."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from ee_jax.config import ModelConfig


def dtype_of(name: str):
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def make_param(rngs: nnx.Rngs, init, shape: tuple[int, ...], logical: tuple[str, ...], dtype) -> nnx.Param:
    """A parameter annotated with logical axis names (sharded eagerly under an active mesh)."""
    return nnx.Param(nnx.with_partitioning(init, logical)(rngs.params(), shape, dtype))


class RMSNorm(nnx.Module):
    """RMSNorm computed in fp32. ``offset=1`` gives Gemma's ``x * (1 + w)`` with w initialised to 0."""

    def __init__(self, dim: int, eps: float, offset: float, *, param_dtype, rngs: nnx.Rngs):
        init = nnx.initializers.zeros if offset else nnx.initializers.ones
        self.scale = make_param(rngs, init, (dim,), ("norm",), param_dtype)
        self.eps, self.offset = eps, offset

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (normed * (self.offset + self.scale[...].astype(jnp.float32))).astype(x.dtype)


class GatedMLP(nnx.Module):
    """SwiGLU (Llama/Qwen) or tanh-GELU gated MLP (Gemma): ``down(act(gate(x)) * up(x))``."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        init = nnx.initializers.normal(cfg.init_std)
        pd = dtype_of(cfg.param_dtype)
        self.gate = make_param(rngs, init, (cfg.d_model, cfg.ffn_dim), ("embed", "mlp"), pd)
        self.up = make_param(rngs, init, (cfg.d_model, cfg.ffn_dim), ("embed", "mlp"), pd)
        self.down = make_param(rngs, init, (cfg.ffn_dim, cfg.d_model), ("mlp", "embed"), pd)
        self.activation = cfg.activation
        self.dtype = dtype_of(cfg.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = self.dtype
        g = x @ self.gate[...].astype(dt)
        u = x @ self.up[...].astype(dt)
        act = jax.nn.silu(g) if self.activation == "silu" else jax.nn.gelu(g, approximate=True)
        return (act * u) @ self.down[...].astype(dt)


def rope_inv_freq(cfg: ModelConfig, theta: float) -> jnp.ndarray:
    """Inverse frequencies, with Llama-3.1 scaling when configured (as in HF transformers)."""
    hd = cfg.head_dim or cfg.d_model // cfg.num_heads
    inv = 1.0 / (theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
    s = cfg.rope_scaling
    if s.kind == "llama3":
        low_wavelen = s.original_max_position / s.low_freq_factor
        high_wavelen = s.original_max_position / s.high_freq_factor
        wavelen = 2 * math.pi / inv
        scaled = jnp.where(wavelen > low_wavelen, inv / s.factor, inv)
        smooth = (s.original_max_position / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
        smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv = jnp.where(medium, smoothed, scaled)
    return inv


def rope_tables(inv_freq: jnp.ndarray, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos/sin of shape [B, T, head_dim/2] for integer positions [B, T]."""
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate-half RoPE (the HF/NeoX layout) on x [B, T, N, head_dim]."""
    half = x.shape[-1] // 2
    x32 = x.astype(jnp.float32)
    x1, x2 = x32[..., :half], x32[..., half:]
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).astype(x.dtype)
