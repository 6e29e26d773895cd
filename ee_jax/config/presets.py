"""Named model shapes: a scaling ladder in Llama-3 proportions and the shapes of real models.

A preset is a partial :class:`~ee_jax.config.ModelConfig` (a dict of overrides); ``model.preset=NAME``
in a config expands it. ``model.preset=hf:DIR`` reads the shape of a Hugging Face checkpoint directory
(``config.json``; e.g. one written by ``ee-jax import``), so a config points at imported weights.
Ladder models are for scratch training, so their vocabulary is a default that the tokenizer usually
replaces.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ee_jax.config.hf import model_config_from_hf


def _ladder(d: int, layers: int, heads: int, kv: int, vocab: int, ffn: int | None = None) -> dict[str, Any]:
    # Llama-3 proportions: SwiGLU width ~3.5 d (rounded to 64), GQA, RoPE base 500k, tied embeddings
    # at small sizes (the embedding would otherwise dominate the parameter count).
    ffn = ffn or int(round(3.5 * d / 64) * 64)
    return dict(
        vocab_size=vocab, d_model=d, num_layers=layers, num_heads=heads, num_kv_heads=kv, ffn_dim=ffn,
        rope_theta=500000.0, norm_eps=1e-5, tie_embeddings=d <= 3072, max_seq_len=2048 if d < 1024 else 8192,
    )


LADDER: dict[str, dict[str, Any]] = {
    "ee-1m": _ladder(128, 4, 4, 2, 2048),
    "ee-4m": _ladder(192, 6, 6, 2, 4096),
    "ee-17m": _ladder(384, 6, 6, 6, 8192, ffn=1344),
    "ee-50m": _ladder(512, 12, 8, 4, 16384),
    "ee-120m": _ladder(768, 12, 12, 4, 32768),
    "ee-350m": _ladder(1024, 24, 16, 8, 32768),
    "ee-700m": _ladder(1536, 21, 16, 8, 32768),
    "ee-1.5b": _ladder(2048, 24, 32, 8, 128256),
    "ee-3b": _ladder(3072, 28, 24, 8, 128256, ffn=8192),
    "ee-8b": _ladder(4096, 32, 32, 8, 128256, ffn=14336),
}

_LLAMA3_SCALING = dict(kind="llama3", low_freq_factor=1.0, high_freq_factor=4.0, original_max_position=8192)

REAL: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(
        vocab_size=49152, d_model=576, num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64, ffn_dim=1536,
        rope_theta=100000.0, norm_eps=1e-5, tie_embeddings=True, max_seq_len=8192,
    ),
    "gemma3-270m": dict(
        vocab_size=262144, d_model=640, num_layers=18, num_heads=4, num_kv_heads=1, head_dim=256, ffn_dim=2048,
        activation="gelu_tanh", norm_eps=1e-6, norm_offset=1.0, qk_norm=True, post_norms=True,
        embed_scale=True, tie_embeddings=True, rope_theta=1000000.0, local_rope_theta=10000.0,
        sliding_window=512, global_every=6, query_pre_attn_scalar=256.0, max_seq_len=32768,
    ),
    "qwen2.5-1.5b": dict(
        vocab_size=151936, d_model=1536, num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128,
        ffn_dim=8960, qkv_bias=True, rope_theta=1000000.0, norm_eps=1e-6, tie_embeddings=True,
        max_seq_len=32768,
    ),
    "llama-3.2-3b": dict(
        vocab_size=128256, d_model=3072, num_layers=28, num_heads=24, num_kv_heads=8, head_dim=128,
        ffn_dim=8192, rope_theta=500000.0, rope_scaling=dict(_LLAMA3_SCALING, factor=32.0), norm_eps=1e-5,
        tie_embeddings=True, max_seq_len=131072,
    ),
    "llama-3.1-8b": dict(
        vocab_size=128256, d_model=4096, num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128,
        ffn_dim=14336, rope_theta=500000.0, rope_scaling=dict(_LLAMA3_SCALING, factor=8.0), norm_eps=1e-5,
        tie_embeddings=False, max_seq_len=131072,
    ),
    "qwen2.5-7b": dict(
        vocab_size=152064, d_model=3584, num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128,
        ffn_dim=18944, qkv_bias=True, rope_theta=1000000.0, norm_eps=1e-6, tie_embeddings=False,
        max_seq_len=32768,
    ),
}

PRESETS: dict[str, dict[str, Any]] = {**LADDER, **REAL}


def get_preset(name: str) -> dict[str, Any]:
    """The overrides for preset ``name`` (a fresh copy, with ``name`` set); ``hf:DIR`` reads ``DIR/config.json``."""
    if name.startswith("hf:"):
        return _hf_preset(name[3:])
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; expected one of: {', '.join(PRESETS)}")
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS[name].items()}
    out["name"] = name
    return out


def _hf_preset(hf_dir: str) -> dict[str, Any]:
    if not os.path.isfile(os.path.join(hf_dir, "config.json")):
        raise KeyError(f"hf:{hf_dir}: no config.json there; import the weights first (`ee-jax import NAME|FILE.gguf "
                       f"{hf_dir}`, see docs/models.md)")
    try:
        cfg = model_config_from_hf(hf_dir)
    except ValueError as e:
        raise KeyError(f"hf:{hf_dir}: {e}") from None
    out = dataclasses.asdict(cfg)
    out["name"] = os.path.basename(os.path.normpath(hf_dir))
    return out
