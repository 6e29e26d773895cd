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

KVCache = tuple[jax.Array, jax.Array]  # k, v: [layers, batch, kv_heads, length, head_dim] (head-major)

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


def window_period(windows: list[int]) -> int:
    """The shortest period of a per-layer window pattern: 1 when every layer has the same window, 6 for
    Gemma3's five local layers then one global."""
    for p in range(1, len(windows) + 1):
        if all(windows[i] == windows[i - p] for i in range(p, len(windows))):
            return p
    return len(windows)


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
            # Windows are Python ints in both loops (splash compiles one kernel per window size).
            layer = jax.checkpoint(layer, policy=_REMAT_POLICIES[cfg.remat], static_argnums=(2, 3))

        def unrolled(x, first: int, last: int):
            outs = []
            for i in range(first, last):
                state = jax.tree.map(lambda a, i=i: a[i], stacked)
                layer_cache = None if cache is None else (cache[0][i], cache[1][i])
                x, c = layer(x, state, windows[i], windows[i] > 0, layer_cache)
                outs.append(c)
            return x, outs

        new_cache = None
        if cfg.scan_layers:
            # Scan over groups of one window period (1 for Llama-style models, global_every for Gemma3's
            # local/global pattern), unrolled inside the group, so every window stays static and the compiled
            # body holds one period whatever the depth. Layers past the last whole period are unrolled.
            period = window_period(windows)
            groups = len(windows) // period
            split = lambda a: a[: groups * period].reshape(groups, period, *a.shape[1:])  # noqa: E731
            xs = (jax.tree.map(split, stacked), None if cache is None else tuple(split(c) for c in cache))

            def body(x, xs):
                group, group_cache = xs
                outs = []
                for j in range(period):
                    state = jax.tree.map(lambda a, j=j: a[j], group)
                    layer_cache = None if group_cache is None else (group_cache[0][j], group_cache[1][j])
                    x, c = layer(x, state, windows[j], windows[j] > 0, layer_cache)
                    outs.append(c)
                stacked_out = None if cache is None else tuple(jnp.stack([c[k] for c in outs]) for k in (0, 1))
                return x, stacked_out

            x, scanned = jax.lax.scan(body, x, xs)
            x, rest = unrolled(x, groups * period, len(windows))
            if cache is not None:
                new_cache = tuple(
                    jnp.concatenate([scanned[k].reshape(-1, *scanned[k].shape[2:]), *[c[k][None] for c in rest]])
                    for k in (0, 1))
        else:
            x, outs = unrolled(x, 0, len(windows))
            if cache is not None:
                new_cache = (jnp.stack([c[0] for c in outs]), jnp.stack([c[1] for c in outs]))
        return x, new_cache


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype=None) -> KVCache:
    """Zeroed KV cache for ``batch`` sequences of up to ``length`` tokens."""
    hd = cfg.head_dim or cfg.d_model // cfg.num_heads
    shape = (cfg.num_layers, batch, cfg.num_kv_heads, length, hd)
    dtype = dtype or dtype_of(cfg.dtype)
    z = jnp.zeros(shape, dtype)
    logical = ("layers", "batch", "kv_heads", "cache_length", "head_dim")
    return constrain(z, logical), constrain(z, logical)
