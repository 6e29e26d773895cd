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


def dense(x: jax.Array, w: jax.Array, preferred_element_type=None) -> jax.Array:
    """``x [..., K] @ w [K, N] -> [..., N]`` as one 2-D matmul over the flattened leading axes.

    Same result as ``jnp.einsum("...k,kn->...n")``, but XLA:CPU compiles the backward of a 2-D dot
    far better: the weight gradient of a ``[B, T, K]`` einsum contracts two axes (B and T), which
    XLA lowers with a transposed copy of the cotangent into which it fuses the elementwise backward
    (e.g. SwiGLU's), and that strided, unvectorised loop cost ~2x the whole MLP backward
    (BENCHMARKS.md, "Train step (CPU)"). Reshapes of the leading axes are free (bitcasts).

    Low-precision inputs are multiplied with fp32 accumulation and the product rounded to
    ``x.dtype`` (unless ``preferred_element_type`` says otherwise): on XLA:CPU a bf16 x bf16 -> fp32
    dot takes the fast AVX512-BF16/AMX path, while a bf16-output dot runs ~5x slower.
    """
    lead = x.shape[:-1]
    out_dtype = preferred_element_type or x.dtype
    acc = jnp.float32 if preferred_element_type is None and x.dtype != jnp.float32 else preferred_element_type
    y = jnp.dot(x.reshape(-1, x.shape[-1]), w, preferred_element_type=acc).astype(out_dtype)
    return y.reshape(*lead, w.shape[-1])


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


def lora_targets(cfg: ModelConfig) -> frozenset[str]:
    """The projections that get adapters (empty when ``lora_rank`` is 0)."""
    if not cfg.lora_rank:
        return frozenset()
    return frozenset(x.strip() for x in cfg.lora_targets.split(",") if x.strip())


class LoRA(nnx.Module):
    """The adapter of one kernel viewed as ``[prod(in), prod(out)]``: ``x -> (alpha / R) (x A) B``."""

    def __init__(self, cfg: ModelConfig, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 in_logical: tuple[str, ...], out_logical: tuple[str, ...], *, rngs: nnx.Rngs):
        r, pd = cfg.lora_rank, dtype_of(cfg.param_dtype)
        bound = 1.0 / math.sqrt(math.prod(in_shape))  # PEFT's kaiming-uniform(a=sqrt(5)) bound

        def uniform(key, shape, dtype):
            return jax.random.uniform(key, shape, dtype, -bound, bound)

        self.a = make_param(rngs, uniform, (*in_shape, r), (*in_logical, "lora_rank"), pd)
        self.b = make_param(rngs, nnx.initializers.zeros, (r, *out_shape), ("lora_rank", *out_logical), pd)
        self.scale = cfg.lora_alpha / r
        self.dtype = dtype_of(cfg.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x [..., prod(in)]`` -> the update ``[..., prod(out)]`` in the compute dtype."""
        r, dt = self.a.shape[-1], self.dtype
        h = dense(x, self.a[...].astype(dt).reshape(-1, r))
        return dense(h, self.b[...].astype(dt).reshape(r, -1)) * jnp.asarray(self.scale, dt)


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
        shapes = {"gate": ((cfg.d_model,), (cfg.ffn_dim,), ("embed",), ("mlp",)),
                  "up": ((cfg.d_model,), (cfg.ffn_dim,), ("embed",), ("mlp",)),
                  "down": ((cfg.ffn_dim,), (cfg.d_model,), ("mlp",), ("embed",))}
        self.adapted = tuple(sorted(lora_targets(cfg) & set(shapes)))
        for name in self.adapted:
            setattr(self, f"lora_{name}", LoRA(cfg, *shapes[name], rngs=rngs))

    def _proj(self, name: str, x: jax.Array) -> jax.Array:
        y = dense(x, getattr(self, name)[...].astype(self.dtype))
        return y + getattr(self, f"lora_{name}")(x) if name in self.adapted else y

    def __call__(self, x: jax.Array) -> jax.Array:
        g, u = self._proj("gate", x), self._proj("up", x)
        act = jax.nn.silu(g) if self.activation == "silu" else jax.nn.gelu(g, approximate=True)
        return self._proj("down", act * u)


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
