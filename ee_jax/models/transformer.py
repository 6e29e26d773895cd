"""The decoder: one NNX module covering Llama-3, Qwen2 and Gemma3 by configuration.

Layers are stored stacked (leading ``layers`` axis) so the same parameters serve an unrolled loop
(``scan_layers=False``, fastest to run) or ``jax.lax.scan`` (``scan_layers=True``, fastest to
compile for deep models). The forward pass is a pure function of its inputs; the optional KV cache
is passed in and returned, never stored on the module.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from ee_jax.config import ModelConfig
from ee_jax.models.attention import Attention
from ee_jax.models.layers import GatedMLP, RMSNorm, dense, dtype_of, make_param, rope_inv_freq, rope_tables
from ee_jax.parallel.rules import constrain

KVCache = tuple[jax.Array, jax.Array]  # k, v: [layers, batch, length, kv_heads, head_dim]

_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Block(nnx.Module):
    """Pre-norm residual block; ``post_norms`` adds Gemma's norms after attention and MLP."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        pd = dtype_of(cfg.param_dtype)
        norm = lambda: RMSNorm(cfg.d_model, cfg.norm_eps, cfg.norm_offset, param_dtype=pd, rngs=rngs)  # noqa: E731
        self.attn_norm = norm()
        self.attn = Attention(cfg, rngs=rngs)
        self.mlp_norm = norm()
        self.mlp = GatedMLP(cfg, rngs=rngs)
        if cfg.post_norms:
            self.post_attn_norm = norm()
            self.post_mlp_norm = norm()
        self.post_norms = cfg.post_norms

    def __call__(self, x, rope, positions, segment_ids, window, cache=None):
        h, cache = self.attn(self.attn_norm(x), rope, positions, segment_ids, window, cache)
        if self.post_norms:
            h = self.post_attn_norm(h)
        x = x + h
        h = self.mlp(self.mlp_norm(x))
        if self.post_norms:
            h = self.post_mlp_norm(h)
        return constrain(x + h, ("batch", "length", "act_embed")), cache


def layer_windows(cfg: ModelConfig) -> list[int]:
    """Attention window per layer (0 = global). Gemma3: every ``global_every``-th layer is global."""
    if not cfg.sliding_window:
        return [0] * cfg.num_layers
    if not cfg.global_every:
        return [cfg.sliding_window] * cfg.num_layers
    return [0 if (i + 1) % cfg.global_every == 0 else cfg.sliding_window for i in range(cfg.num_layers)]


class Decoder(nnx.Module):
    """Token ids -> fp32 logits. ``__call__(tokens, positions, segment_ids, cache) -> (logits, cache)``."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        pd = dtype_of(cfg.param_dtype)
        init = nnx.initializers.normal(cfg.init_std)
        self.embed = make_param(rngs, init, (cfg.vocab_size, cfg.d_model), ("vocab", "table_embed"), pd)

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_layers(rngs):
            return Block(cfg, rngs=rngs)

        self.layers = make_layers(rngs)
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps, cfg.norm_offset, param_dtype=pd, rngs=rngs)
        if not cfg.tie_embeddings:
            self.lm_head = make_param(rngs, init, (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), pd)

    # The pieces around the layer stack, shared with the sampler's per-layer decode loop.
    def embed_tokens(self, tokens) -> jax.Array:
        """Token ids [B, T] -> hidden states [B, T, D] in the compute dtype (Gemma: times sqrt(d))."""
        cfg, dt = self.cfg, dtype_of(self.cfg.dtype)
        x = jnp.take(self.embed[...], tokens, axis=0).astype(dt)
        if cfg.embed_scale:
            x = x * jnp.asarray(math.sqrt(cfg.d_model), dt)
        return constrain(x, ("batch", "length", "act_embed"))

    def rope(self, positions, local: bool):
        """cos/sin tables for global layers, or for local (sliding-window) layers' RoPE base."""
        cfg = self.cfg
        return rope_tables(rope_inv_freq(cfg, cfg.local_rope_theta if local else cfg.rope_theta), positions)

    def unembed(self, x) -> jax.Array:
        """Final norm and LM head: hidden states [..., D] -> fp32 logits [..., V]."""
        cfg, dt = self.cfg, dtype_of(self.cfg.dtype)
        head = self.embed[...].astype(dt).T if cfg.tie_embeddings else self.lm_head[...].astype(dt)
        return dense(self.final_norm(x), head, preferred_element_type=jnp.float32)

    def __call__(self, tokens, positions=None, segment_ids=None, cache: KVCache | None = None):
        x, new_cache = self.hidden(tokens, positions, segment_ids, cache)
        return constrain(self.unembed(x), ("batch", "length", "act_vocab")), new_cache

    def hidden(self, tokens, positions=None, segment_ids=None, cache: KVCache | None = None):
        """The layer stack: ``(hidden states [B, T, D] before the final norm, cache)`` (a value head reads them)."""
        cfg = self.cfg
        b, t = tokens.shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        if segment_ids is None:
            segment_ids = jnp.ones((b, t), jnp.int32)
        x = self.embed_tokens(tokens)

        windows = layer_windows(cfg)
        rope_global = self.rope(positions, local=False)
        rope_local = self.rope(positions, local=True) if any(windows) else None
        graphdef, stacked = nnx.split(self.layers)

        def layer(x, state, window, is_local, layer_cache):
            rope = rope_global
            if rope_local is not None:
                rope = jax.tree.map(lambda lo, gl: jnp.where(is_local, lo, gl), rope_local, rope_global)
            return nnx.merge(graphdef, state)(x, rope, positions, segment_ids, window, layer_cache)

        if cfg.remat != "none":
            # In the unrolled loop the window is a Python int; keep it static (splash needs it).
            static = () if cfg.scan_layers else (2, 3)
            layer = jax.checkpoint(layer, policy=_REMAT_POLICIES[cfg.remat], static_argnums=static)

        new_cache = None
        if cfg.scan_layers:
            w = jnp.asarray(windows, jnp.int32)
            xs = (stacked, w, w > 0, cache)

            def body(x, xs):
                state, window, is_local, layer_cache = xs
                return layer(x, state, window, is_local, layer_cache)

            x, new_cache = jax.lax.scan(body, x, xs)
        else:
            outs = []
            for i, window in enumerate(windows):
                state = jax.tree.map(lambda a, i=i: a[i], stacked)
                layer_cache = None if cache is None else (cache[0][i], cache[1][i])
                x, c = layer(x, state, window, window > 0, layer_cache)
                outs.append(c)
            if cache is not None:
                new_cache = (jnp.stack([c[0] for c in outs]), jnp.stack([c[1] for c in outs]))
        return x, new_cache


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype=None) -> KVCache:
    """Zeroed KV cache for ``batch`` sequences of up to ``length`` tokens."""
    hd = cfg.head_dim or cfg.d_model // cfg.num_heads
    shape = (cfg.num_layers, batch, length, cfg.num_kv_heads, hd)
    dtype = dtype or dtype_of(cfg.dtype)
    z = jnp.zeros(shape, dtype)
    logical = ("layers", "batch", "cache_length", "kv_heads", "head_dim")
    return constrain(z, logical), constrain(z, logical)
